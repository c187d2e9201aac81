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
from collections.abc import Mapping
from typing import Any

ENCODER = "bert"  # the parameter collection of the encoder in every model (BERT's name for the family)
# Optional collection of additive deltas to ``ENCODER`` leaves (same paths): the encoder's effective
# parameters are ``bert + bert_delta`` (DeBERTa-v3's gradient-disentangled embedding sharing keeps the
# discriminator's E_delta here; ``fold_encoder_delta`` merges it for fine-tuning and export).
ENCODER_DELTA = "bert_delta"
# Architecture name -> the module of this package that declares it (``ARCHITECTURE``).
_MODULES = {
    "bert": "bert_jax.models.bert",
    "deberta_v2": "bert_jax.models.deberta",
    "longformer": "bert_jax.models.longformer",
    "roberta": "bert_jax.models.roberta",
    "modernbert": "bert_jax.models.modernbert",
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
      masked_states: None, or the name of an encoder method that pretraining calls instead of the encoder
        plus a gather, as ``method(input_ids, segment_ids, sequence_ids, position_ids, masked_positions [B, P],
        deterministic=) -> (masked [B, P, H], sequence [B, S, H], pooled [B, H])`` (DeBERTa's EMD).
      global_attention: whether the encoder takes ``global_attention_mask=`` (``[B, S]``, nonzero: global
        tokens; Longformer): ``heads.encode_batch`` passes the batch's field, else the task's choice.
      position_offset: ``fn(config) -> int``, position rows before the first token's (RoBERTa and
        Longformer: ``pad_token_id + 1``); a row holds at most ``max_position_embeddings - offset`` tokens.
      word_embeddings: the path of the token-embedding table ``[V, H]`` inside the encoder's parameters
        (what replaced-token detection shares between its generator and discriminator).
      layer_flops: None (BERT's layer), or ``fn(config, seq_len) -> float``: the forward matmul FLOPs per
        token of the whole layer stack (projections, feed-forward, attention over the keys a query
        really sees); training counts 3x (``ModelConfig.train_flops_per_token``).
      token_head: None, or the name of an encoder method that the token-level task heads (tagging, span)
        apply to the sequence output before their projection, as ``method(sequence [B, S, H]) -> [B, S, H]``
        (ModernBERT: its prediction head ``bert/pooler`` on every token, transformers' ``head``).
      span_head: the parameter name of the span model's start/end projection ``H -> 2``: the name the
        architecture's transformers question-answering class gives it (``qa_outputs``; ModernBERT:
        ``classifier``), so the Hugging Face tables map it one to one.
    """

    name: str
    encoder: Any
    mlm_head: Any
    nsp: bool
    hf_conversion: str
    summary: str
    masked_states: str | None = None
    global_attention: bool = False
    position_offset: Any = lambda config: 0
    word_embeddings: tuple[str, ...] = ("embeddings", "word_embeddings")
    layer_flops: Any = None
    token_head: str | None = None
    span_head: str = "qa_outputs"


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


def max_length(config) -> int:
    """The most tokens a row of ``config`` (a ``ModelConfig``) can hold: its positions past the offset."""
    return config.max_position_embeddings - get(config.architecture).position_offset(config)


def bert_stack_flops(config, seq_len: int) -> float:
    """Forward matmul FLOPs per token of a stack of BERT layers: 2 x the layer weights + ``4 x seq_len x hidden``
    per layer (attention scores and values over every key)."""
    return 2 * config.non_embedding_params() + 4 * config.num_layers * seq_len * config.hidden_size


def layer_stack_flops(config, seq_len: int) -> float:
    """Forward matmul FLOPs per token of ``config``'s layer stack: its architecture's ``layer_flops``, else
    :func:`bert_stack_flops`."""
    spec = get(config.architecture)
    return (spec.layer_flops or bert_stack_flops)(config, seq_len)


def conversion(config_or_name) -> Any:
    """The Hugging Face conversion module of an architecture (a name or a ``ModelConfig``)."""
    name = config_or_name if isinstance(config_or_name, str) else config_or_name.architecture
    return importlib.import_module(get(name).hf_conversion)


def fold_encoder_delta(params: dict) -> dict:
    """``params`` with ``ENCODER_DELTA`` (if any) added into ``ENCODER`` at the same paths and removed.

    Args:
      params: a top-level parameter dict (``{"bert": ..., "bert_delta": ..., heads}``), unboxed arrays.

    Returns:
      A new dict without ``bert_delta`` whose ``bert`` leaves are ``bert + bert_delta`` where the delta
      has a leaf (every other leaf unchanged).
    """
    if ENCODER_DELTA not in params:
        return dict(params)

    def add(tree, delta):
        return {name: add(value, delta[name]) if isinstance(value, Mapping) and name in delta
                else value + delta[name] if name in delta else value for name, value in tree.items()}

    folded = {name: value for name, value in params.items() if name != ENCODER_DELTA}
    folded[ENCODER] = add(dict(params[ENCODER]), params[ENCODER_DELTA])
    return folded
