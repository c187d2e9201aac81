"""The models room: encoder architectures over shared layers, chosen by ``ModelConfig.architecture``.

Each architecture is one module of this package (``bert.py``, ...) that composes
``bert_jax/models/layers.py`` and declares an :class:`Architecture`; its Hugging Face conversion table
lives in ``bert_jax/interop/hf_<name>.py``. The registry below is the only place that maps a name to a
module: shared layers never ask which architecture they are in, and ``bert_jax/heads.py`` builds every
pretraining and fine-tuning model from ``get(config.architecture)``.

An encoder module is built as ``encoder(config)`` and called as
``encoder(input_ids, segment_ids, sequence_ids, position_ids, deterministic) -> (sequence [B, S, H],
pooled [B, H])`` (``data_pipelines.batch``'s encoder fields; ``pooled`` is the architecture's sentence
vector), with ``encoder.attend(x [..., H]) -> [..., V]`` the tied vocabulary projection. Every model keeps
its encoder under the parameter collection :data:`ENCODER` whatever the architecture.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

ENCODER = "bert"  # the parameter collection of the encoder in every model (BERT's name for the family)
# Architecture name -> the module of this package that declares it (``ARCHITECTURE``).
_MODULES = {
    "bert": "bert_jax.models.bert",
}


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What the rest of the code needs to know about one encoder architecture.

    Attributes:
      name: the ``ModelConfig.architecture`` value.
      encoder: the encoder ``nn.Module`` class (see the module docstring for its call).
      mlm_head: the masked-LM head class, built as ``mlm_head(config)`` and called as
        ``head(hidden [B, P, H], attend) -> float32 [B, P, V]``.
      nsp: whether pretraining carries a next-sentence-prediction head (``nsp_head``) on ``pooled``.
      hf_conversion: the module with the Hugging Face conversion (``bert_jax.interop.hf_<name>``).
      summary: one line for ``docs/models.md`` and ``bert-jax config``: what the architecture changes.
    """

    name: str
    encoder: Any
    mlm_head: Any
    nsp: bool
    hf_conversion: str
    summary: str


def names() -> tuple[str, ...]:
    """The registered architecture names."""
    return tuple(_MODULES)


def get(name: str) -> Architecture:
    """The architecture registered as ``name``.

    Raises:
      ValueError: naming ``model.architecture`` and the registered names.
    """
    if name not in _MODULES:
        raise ValueError(f"model.architecture={name!r}; expected one of {list(_MODULES)}")
    return importlib.import_module(_MODULES[name]).ARCHITECTURE


def encoder(config) -> Any:
    """A fresh encoder module for ``config`` (a ``ModelConfig``)."""
    return get(config.architecture).encoder(config)


def conversion(config_or_name) -> Any:
    """The Hugging Face conversion module of an architecture (a name or a ``ModelConfig``)."""
    name = config_or_name if isinstance(config_or_name, str) else config_or_name.architecture
    return importlib.import_module(get(name).hf_conversion)
