"""DeBERTa-v2/v3's Hugging Face layout (``transformers.DebertaV2*``, ``model_type="deberta-v2"``).

``CONVERSION`` maps ``bert_jax/models/deberta.py``'s tree onto transformers 5's keys:

* the encoder under ``deberta.`` (``embeddings``, ``encoder.layer.<i>.attention.self.{query,key,value}_proj``,
  ``pos_key_proj``/``pos_query_proj`` without ``share_att_key``, ``encoder.rel_embeddings``,
  ``encoder.LayerNorm`` on them);
* the MLM head as ``DebertaV2ForMaskedLM`` builds it by default (``legacy=True``:
  ``LegacyDebertaV2OnlyMLMHead``, keys ``cls.predictions.{transform.dense, transform.LayerNorm, bias}``,
  decoder tied to the word embeddings). Imports also read the ``legacy=False`` spelling
  (``lm_predictions.lm_head.{dense, LayerNorm, bias}``, same function), which is what Microsoft's
  DeBERTa-v3 checkpoints carry; exports write ``legacy=True``;
* the ``ContextPooler`` of the sequence-classification / multiple-choice classes (``pooler.dense``, a
  top-level key there) as our ``bert/pooler``;
* ``deberta.embeddings.position_embeddings`` only when ``position_biased_input`` or the Enhanced
  Mask Decoder needs it (transformers ignores the key on load when it has no such table, as for
  Microsoft's checkpoints).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from bert_jax.config import ModelConfig
from bert_jax.interop.hf_convert import (Conversion, Entry, bert_layout_config, bert_layout_fields,
                                         layer_norm, linear, vocab_rows)
from bert_jax.models import ENCODER
from bert_jax.models.deberta import attention_span, attention_types

MODEL_TYPE = "deberta-v2"
PREFIX = "deberta"
IGNORED_BUFFERS = ("deberta.embeddings.position_ids",)
TIED_KEYS = {
    "cls.predictions.decoder.weight": "deberta.embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}
# ``legacy=False`` MLM-head spelling -> the ``legacy=True`` one our table names (same tensors).
_NON_LEGACY_HEAD = {
    "lm_predictions.lm_head.dense.": "cls.predictions.transform.dense.",
    "lm_predictions.lm_head.LayerNorm.": "cls.predictions.transform.LayerNorm.",
    "lm_predictions.lm_head.bias": "cls.predictions.bias",
}
ARCHITECTURE_PARTS = {
    "DebertaV2Model": (),
    "DebertaV2ForMaskedLM": ("mlm_head",),
    "DebertaV2ForSequenceClassification": ("pooler", "classifier"),
    "DebertaV2ForMultipleChoice": ("pooler", "classifier"),
    "DebertaV2ForTokenClassification": ("classifier",),
    "DebertaV2ForQuestionAnswering": ("qa_outputs",),
}
TASK_ARCHITECTURES = {
    "classification": "DebertaV2ForSequenceClassification",
    "regression": "DebertaV2ForSequenceClassification",
    "multiple_choice": "DebertaV2ForMultipleChoice",
    "tagging": "DebertaV2ForTokenClassification",
    "span": "DebertaV2ForQuestionAnswering",
}


@dataclasses.dataclass(frozen=True)
class DebertaConversion(Conversion):
    """``Conversion`` that also reads the ``legacy=False`` MLM-head keys."""

    def canonical_key(self, key: str) -> str:
        for old, new in _NON_LEGACY_HEAD.items():
            if key.startswith(old):
                return new + key[len(old):]
        return super().canonical_key(key)


#: ``DebertaV2Config``'s values of absent ``config.json`` fields that differ from ``ModelConfig``'s.
HF_DEFAULTS = {"type_vocab_size": 0, "layer_norm_eps": 1e-7, "max_position_embeddings": 512}


def _conversion_table(cfg: ModelConfig, classifier_outputs: int | None = None) -> list[Entry]:
    """Every parameter (looped layout) with its Hugging Face key (``deberta.`` prefixed, task-model style)."""
    h, n, d, v = cfg.hidden_size, cfg.num_heads, cfg.head_dim, cfg.vocab_size
    emb = (ENCODER, "embeddings")
    table = [vocab_rows("deberta.embeddings.word_embeddings.weight", emb + ("word_embeddings",), cfg, h)]
    if cfg.position_biased_input or cfg.enhanced_mask_decoder:
        shape = (cfg.max_position_embeddings, h)
        table.append(Entry("deberta.embeddings.position_embeddings.weight", emb + ("position_embeddings",), shape,
                           shape, False))
    if cfg.type_vocab_size > 0:
        shape = (cfg.type_vocab_size, h)
        table.append(Entry("deberta.embeddings.token_type_embeddings.weight", emb + ("token_type_embeddings",),
                           shape, shape, False))
    table += layer_norm("deberta.embeddings.LayerNorm", emb + ("layer_norm",), h)
    rows = 2 * attention_span(cfg)
    table.append(Entry("deberta.encoder.rel_embeddings.weight", (ENCODER, "rel_embeddings"), (rows, h), (rows, h),
                       False))
    if cfg.norm_rel_ebd == "layer_norm":
        table += layer_norm("deberta.encoder.LayerNorm", (ENCODER, "rel_layer_norm"), h)
    projections = ["query", "key", "value"]
    if not cfg.share_att_key:
        projections += [name for term, name in (("c2p", "pos_key"), ("p2c", "pos_query"))
                        if term in attention_types(cfg)]
    for i in range(cfg.num_layers):
        hf, ours = f"deberta.encoder.layer.{i}", (ENCODER, "encoder", f"layer_{i}")
        for name in projections:
            table += linear(f"{hf}.attention.self.{name}_proj", ours + ("attention", name), (h,), (n, d))
        table += linear(f"{hf}.attention.output.dense", ours + ("attention", "output"), (n, d), (h,))
        table += layer_norm(f"{hf}.attention.output.LayerNorm", ours + ("attention", "layer_norm"), h)
        table += linear(f"{hf}.intermediate.dense", ours + ("intermediate",), (h,), (cfg.intermediate_size,))
        table += linear(f"{hf}.output.dense", ours + ("output",), (cfg.intermediate_size,), (h,))
        table += layer_norm(f"{hf}.output.LayerNorm", ours + ("layer_norm",), h)
    table += linear("pooler.dense", (ENCODER, "pooler"), (h,), (h,))
    table += linear("cls.predictions.transform.dense", ("mlm_head", "transform"), (h,), (h,))
    table += layer_norm("cls.predictions.transform.LayerNorm", ("mlm_head", "layer_norm"), h)
    table.append(vocab_rows("cls.predictions.bias", ("mlm_head", "output_bias"), cfg))
    if classifier_outputs is not None:
        table += linear("classifier", ("classifier",), (h,), (classifier_outputs,))
    table += linear("qa_outputs", ("qa_outputs",), (h,), (2,))
    return table


def hf_config_to_model_config(hf_config: Mapping[str, Any], **overrides: Any) -> ModelConfig:
    """Our ``ModelConfig`` (``architecture="deberta_v2"``) from a Hugging Face DeBERTa-v2/v3 ``config.json``.

    Hugging Face's defaults apply to absent fields (``share_att_key`` False, ``position_buckets`` -1,
    ``norm_rel_ebd`` "none", ``position_biased_input`` True, no position terms, ``type_vocab_size`` 0).

    Raises:
      ValueError: naming the field, for another ``model_type``, ``relative_attention`` off, a
        convolution layer (DeBERTa-v2 xlarge's ``conv_kernel_size``), ``embedding_size`` or
        ``attention_head_size`` that differ from the hidden/head sizes, an unsupported activation, or a
        missing size field.
    """
    model_type = hf_config.get("model_type", MODEL_TYPE)
    if model_type != MODEL_TYPE:
        raise ValueError(f"config.json model_type={model_type!r}; this is the {MODEL_TYPE!r} conversion")
    fields = bert_layout_fields(hf_config, HF_DEFAULTS)
    h, n = hf_config["hidden_size"], hf_config["num_attention_heads"]
    checks = [
        (not hf_config.get("relative_attention", False), "relative_attention=False (only relative attention is "
                                                         "supported)"),
        (hf_config.get("conv_kernel_size", 0) > 0, f"conv_kernel_size={hf_config.get('conv_kernel_size')} "
                                                    "(the DeBERTa-v2 convolution layer is not supported)"),
        (hf_config.get("embedding_size", h) != h, f"embedding_size={hf_config.get('embedding_size')} != "
                                                  f"hidden_size={h}"),
        (hf_config.get("attention_head_size", h // n) != h // n,
         f"attention_head_size={hf_config.get('attention_head_size')} != hidden_size / heads = {h // n}"),
        (hf_config.get("pooler_hidden_act", "gelu") != "gelu", f"pooler_hidden_act="
                                                               f"{hf_config.get('pooler_hidden_act')!r} (only 'gelu')"),
        (hf_config.get("pooler_hidden_size", h) != h, f"pooler_hidden_size={hf_config.get('pooler_hidden_size')} != "
                                                      f"hidden_size={h}"),
    ]
    for failed, what in checks:
        if failed:
            raise ValueError(f"config.json {what}")
    pos_att_type = hf_config.get("pos_att_type") or []
    if isinstance(pos_att_type, str):
        pos_att_type = pos_att_type.split("|")
    norm = [x.strip() for x in str(hf_config.get("norm_rel_ebd", "none")).lower().split("|")]
    fields.update(
        architecture="deberta_v2",
        position_buckets=hf_config.get("position_buckets", -1),
        max_relative_positions=hf_config.get("max_relative_positions", -1),
        pos_att_type="|".join(t for t in ("c2p", "p2c") if t in {p.strip().lower() for p in pos_att_type}),
        share_att_key=bool(hf_config.get("share_att_key", False)),
        norm_rel_ebd="layer_norm" if "layer_norm" in norm else "none",
        position_biased_input=bool(hf_config.get("position_biased_input", True)),
    )
    fields.update(overrides)
    return ModelConfig(**fields)


def model_config_to_hf_config(cfg: ModelConfig, *, pad_token_id: int = 0,
                              architecture: str = "DebertaV2ForMaskedLM",
                              extras: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The Hugging Face ``config.json`` of ``cfg`` (a ``transformers.DebertaV2Config`` dict, ``legacy=True``)."""
    return {
        **bert_layout_config(cfg, MODEL_TYPE, architecture),
        "relative_attention": True,
        "max_relative_positions": cfg.max_relative_positions,
        "position_buckets": cfg.position_buckets,
        "pos_att_type": "|".join(attention_types(cfg)),
        "share_att_key": cfg.share_att_key,
        "norm_rel_ebd": cfg.norm_rel_ebd,
        "position_biased_input": cfg.position_biased_input,
        "pooler_hidden_act": "gelu",
        "pooler_hidden_size": cfg.hidden_size,
        "pooler_dropout": 0.0,
        "legacy": True,
        "pad_token_id": pad_token_id,
        **dict(extras or {}),
    }


CONVERSION = DebertaConversion(
    model_type=MODEL_TYPE,
    prefix=PREFIX,
    table=_conversion_table,
    architecture_parts=ARCHITECTURE_PARTS,
    base_architecture="DebertaV2Model",
    task_architectures=TASK_ARCHITECTURES,
    mlm_architecture="DebertaV2ForMaskedLM",
    pretraining_architecture="DebertaV2ForMaskedLM",
    config_from_hf=hf_config_to_model_config,
    config_to_hf=model_config_to_hf_config,
    ignored_buffers=IGNORED_BUFFERS,
    tied_keys=TIED_KEYS,
    optional_parts=((ENCODER, "pooler"), ("mlm_head",), (ENCODER, "embeddings", "position_embeddings")),
    head_prefixes=("cls.", "lm_predictions.", "pooler.", "classifier.", "qa_outputs."),
)
