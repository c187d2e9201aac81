"""Short-context BERT / RoBERTa checkpoint -> Longformer, as Beltagy et al. (2020, section 5) do.

* Position embeddings are copied repeatedly out to ``max_positions`` (4,096): target position ``p`` takes
  source position ``p mod L`` (``L`` the source's usable positions, 512 for BERT, 514 - 2 for RoBERTa).
  Longformer's positions start at ``pad_token_id + 1`` (RoBERTa's offset): a BERT source's row ``p``
  becomes row ``pad_token_id + 1 + p``; the rows below the offset take the source's own (RoBERTa) or its
  first position's (BERT).
* Every layer's ``query_global``/``key_global``/``value_global`` start as copies of its local
  ``query``/``key``/``value``.
* Everything else (embeddings, layers, pooler, the MLM head) is copied; BERT's NSP head is dropped.

With a window at least as long as the input, the converted model computes what the source does on the
real tokens of a short input (``tests/test_to_longformer.py``). The result is written as a Hugging Face
``LongformerForMaskedLM`` directory, which ``transformers`` loads and which ``--init_from`` /
``train.init_from`` accept (the importer dispatches on ``model_type``).

Sources: a Hugging Face BERT or RoBERTa directory, or a workdir of ours (``bert``, or an architecture with
BERT's parameter layout and RoBERTa's positions: ``roberta``).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from absl import logging

from bert_jax import models
from bert_jax.config import ModelConfig
from bert_jax.interop import export, hf_convert, hf_files, hf_longformer

LONGFORMER_POSITIONS = 4096  # the paper's length
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                    "merges.txt", "sentencepiece.bpe.model", "spiece.model")


def position_offset(cfg: ModelConfig) -> int:
    """The embedding row of position 0 in ``cfg``'s architecture (RoBERTa-style: ``pad_token_id + 1``)."""
    return models.get(cfg.architecture).position_offset(cfg)


def lengthen(cfg: ModelConfig, params: Mapping[str, Any], *, max_positions: int = LONGFORMER_POSITIONS,
             attention_window: int | tuple[int, ...] = 512, pad_token_id: int | None = None,
             ) -> tuple[ModelConfig, dict[str, Any]]:
    """The Longformer config and params made from a short-context model's (module docstring).

    Args:
      cfg: the source configuration (``bert`` or a RoBERTa-style architecture).
      params: the source's inner params (either layout), ``bert`` plus any heads.
      max_positions: the tokens the Longformer takes (4,096).
      attention_window: the local window (one for all layers, or one per layer).
      pad_token_id: the padding id (default: the source's ``cfg.pad_token_id``).

    Returns:
      ``(longformer_cfg, params)``: looped layout, numpy arrays; ``bert`` plus ``mlm_head`` (if the source
      has one); global projections copied from the local ones.

    Raises:
      ValueError: when the source has fewer than one usable position or no encoder.
    """
    params = hf_convert.inner_params(params)
    if "bert" not in params:
        raise ValueError(f"the source params hold no encoder ('bert'); they have {sorted(params)}")
    pad = cfg.pad_token_id if pad_token_id is None else int(pad_token_id)
    windows = (attention_window,) if isinstance(attention_window, int) else tuple(attention_window)
    target = cfg.replace(architecture="longformer", max_position_embeddings=pad + 1 + max_positions,
                         attention_window=windows, pad_token_id=pad, scan_layers=False)
    if cfg.hidden_act != "gelu" and "mlm_head" in params:
        logging.warning("the source's hidden_act=%r; Longformer's MLM head uses exact GELU, so its MLM logits "
                        "differ from the source's", cfg.hidden_act)
    old = np.asarray(params["bert"]["embeddings"]["position_embeddings"])
    source_offset = position_offset(cfg)
    usable = old.shape[0] - source_offset
    if usable < 1:
        raise ValueError(f"the source has {old.shape[0]} position rows and offset {source_offset}: nothing to copy")
    new = np.empty((target.max_position_embeddings, old.shape[1]), old.dtype)
    new[pad + 1:] = old[source_offset + np.arange(max_positions) % usable]
    new[:pad + 1] = old[:pad + 1] if source_offset == pad + 1 else old[source_offset]
    bert = {**params["bert"], "embeddings": {**params["bert"]["embeddings"], "position_embeddings": new}}
    layers = {}
    for name, layer in params["bert"]["encoder"].items():
        attention = dict(layer["attention"])
        for local in ("query", "key", "value"):
            attention[f"{local}_global"] = {k: np.array(v) for k, v in attention[local].items()}
        layers[name] = {**layer, "attention": attention}
    bert["encoder"] = layers
    out = {"bert": bert}
    if "mlm_head" in params:
        out["mlm_head"] = params["mlm_head"]
    return target, out


def _read_roberta_directory(directory: Path, hf_config: Mapping[str, Any]) -> tuple[ModelConfig, dict[str, Any]]:
    """A Hugging Face RoBERTa directory as a (short) Longformer: its keys are Longformer's minus the global
    projections, which are added as copies of the local ones."""
    state, files = hf_files.read_hf_weights(directory)
    renamed = {}
    for key, value in state.items():
        key = key.removeprefix("roberta.")
        renamed[key if key.startswith(("lm_head.", "classifier.")) else f"longformer.{key}"] = value
    for key in list(renamed):
        for local in ("query", "key", "value"):
            if f".attention.self.{local}." in key:
                renamed[key.replace(f".self.{local}.", f".self.{local}_global.")] = renamed[key]
    cfg = hf_longformer.hf_config_to_model_config({**hf_config, "model_type": "longformer"})
    params, report = hf_convert.state_dict_to_params(hf_longformer.CONVERSION, renamed, cfg,
                                                     source=tuple(map(str, files)))
    logging.info("%s", report.summary())
    params = {name: value for name, value in params.items() if name not in report.missing_heads}
    return cfg, params  # architecture "longformer": RoBERTa's positions (offset pad_token_id + 1)


def read_source(source: str | Path) -> tuple[ModelConfig, dict[str, Any], dict[str, Any] | None]:
    """``(cfg, params, tokenizer spec or None)`` of a Hugging Face BERT/RoBERTa directory or a workdir of ours.

    A RoBERTa directory comes back as a short Longformer (``cfg.architecture == "longformer"``, RoBERTa's
    positions, global projections copied from the local ones).
    """
    path = Path(source)
    if hf_files.is_hf_directory(path):
        hf_config = hf_files.read_hf_config(path)
        if hf_config.get("model_type") == "roberta":
            cfg, params = _read_roberta_directory(path, hf_config)
        else:
            cfg, params, report = hf_files.load_hf_checkpoint(path)
            params = {name: value for name, value in params.items() if name not in report.missing_heads}
        return cfg, params, None
    run = export.load_run(str(source))
    return run.model_config, run.params, run.tokenizer_spec


def convert(source: str | Path, out_dir: str | Path, *, max_positions: int = LONGFORMER_POSITIONS,
            attention_window: int | tuple[int, ...] = 512, pad_token_id: int | None = None) -> Path:
    """Converts ``source`` (module docstring) and writes a Hugging Face ``LongformerForMaskedLM`` to ``out_dir``.

    The tokenizer is the source's (its files copied from a Hugging Face directory, or written from a run's
    tokenizer spec). Returns ``out_dir`` as a ``Path``.
    """
    cfg, params, tokenizer_spec = read_source(source)
    target, params = lengthen(cfg, params, max_positions=max_positions, attention_window=attention_window,
                              pad_token_id=pad_token_id)
    architecture = "LongformerForMaskedLM" if "mlm_head" in params else "LongformerModel"
    out = export.export_hf(params, target, out_dir, tokenizer_spec=tokenizer_spec, architecture=architecture)
    if tokenizer_spec is None and hf_files.is_hf_directory(source):
        for name in _TOKENIZER_FILES:
            if (Path(source) / name).is_file():
                shutil.copy(Path(source) / name, out / name)
    logging.info("converted %s (%s, %d positions) to a Longformer of %d positions in %s", source, cfg.architecture,
                 cfg.max_position_embeddings, max_positions, out)
    return out
