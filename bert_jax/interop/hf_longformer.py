"""Longformer's Hugging Face layout (``transformers.Longformer*``): its conversion table and ``config.json`` mapping.

Keys are RoBERTa's under the prefix ``longformer`` plus ``attention.self.{query,key,value}_global`` in
every layer; the masked-LM head is ``lm_head`` (decoder tied to the word embeddings and to ``lm_head.bias``).

The sequence-classification head of ``LongformerForSequenceClassification`` is RoBERTa's
``classifier.dense`` (+ tanh) and ``classifier.out_proj`` on ``<s>``. Our ``PooledClassifier`` computes
``classifier(tanh(pooler(x[:, 0])))``, the same function, so the export writes our ``bert/pooler`` as
``classifier.dense`` and our ``classifier`` as ``classifier.out_proj`` (and no ``longformer.pooler``, which
that class lacks). Token classification and multiple choice keep a plain ``classifier`` (multiple choice
on ``longformer.pooler``). The table tells the two apart by part name: ``seq_classifier`` /
``token_classifier`` entries, both listed under the class's ``classifier`` part.

Importing a ``LongformerForSequenceClassification`` reads its encoder; its head (``classifier.dense``/
``out_proj``) is reported unused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from absl import logging

from bert_jax.config import ModelConfig
from bert_jax.models import longformer
from bert_jax.interop.hf_convert import (Conversion, Entry, bert_layout_config, bert_layout_fields,
                                         layer_norm, linear, vocab_rows)

PREFIX = "longformer"
IGNORED_BUFFERS = (f"{PREFIX}.embeddings.position_ids", f"{PREFIX}.embeddings.token_type_ids")
TIED_KEYS = {
    "lm_head.decoder.weight": f"{PREFIX}.embeddings.word_embeddings.weight",
    "lm_head.decoder.bias": "lm_head.bias",
}
SEQ_CLASSIFIER, TOKEN_CLASSIFIER = "seq_classifier", "token_classifier"
ARCHITECTURE_PARTS = {
    "LongformerModel": ("pooler",),
    "LongformerForMaskedLM": ("mlm_head",),
    "LongformerForSequenceClassification": ("classifier", SEQ_CLASSIFIER),
    "LongformerForMultipleChoice": ("pooler", "classifier", TOKEN_CLASSIFIER),
    "LongformerForTokenClassification": ("classifier", TOKEN_CLASSIFIER),
    "LongformerForQuestionAnswering": ("qa_outputs",),
}
TASK_ARCHITECTURES = {
    "classification": "LongformerForSequenceClassification",
    "regression": "LongformerForSequenceClassification",
    "multiple_choice": "LongformerForMultipleChoice",
    "tagging": "LongformerForTokenClassification",
    "span": "LongformerForQuestionAnswering",
}


@dataclasses.dataclass(frozen=True)
class _PartEntry(Entry):
    """An :class:`Entry` whose part is named explicitly (the classification-head variants)."""

    owner: str = ""

    @property
    def part(self) -> str | None:
        return self.owner


def _owned(entries, owner: str):
    return [_PartEntry(e.hf_key, e.path, e.hf_shape, e.shape, e.transpose, owner) for e in entries]


def _conversion_table(cfg: ModelConfig, classifier_outputs: int | None = None) -> list[Entry]:
    """Every parameter (looped layout) with its Hugging Face key (``longformer.`` prefixed)."""
    h, n, d, v = cfg.hidden_size, cfg.num_heads, cfg.head_dim, cfg.vocab_size
    p, emb = PREFIX, ("bert", "embeddings")
    table = [
        vocab_rows(f"{p}.embeddings.word_embeddings.weight", emb + ("word_embeddings",), cfg, h),
        Entry(f"{p}.embeddings.position_embeddings.weight", emb + ("position_embeddings",),
              (cfg.max_position_embeddings, h), (cfg.max_position_embeddings, h), False),
        Entry(f"{p}.embeddings.token_type_embeddings.weight", emb + ("token_type_embeddings",),
              (cfg.type_vocab_size, h), (cfg.type_vocab_size, h), False),
        *layer_norm(f"{p}.embeddings.LayerNorm", emb + ("layer_norm",), h),
    ]
    for i in range(cfg.num_layers):
        hf, ours = f"{p}.encoder.layer.{i}", ("bert", "encoder", f"layer_{i}")
        for name in ("query", "key", "value", "query_global", "key_global", "value_global"):
            table += linear(f"{hf}.attention.self.{name}", ours + ("attention", name), (h,), (n, d))
        table += linear(f"{hf}.attention.output.dense", ours + ("attention", "output"), (n, d), (h,))
        table += layer_norm(f"{hf}.attention.output.LayerNorm", ours + ("attention", "layer_norm"), h)
        table += linear(f"{hf}.intermediate.dense", ours + ("intermediate",), (h,), (cfg.intermediate_size,))
        table += linear(f"{hf}.output.dense", ours + ("output",), (cfg.intermediate_size,), (h,))
        table += layer_norm(f"{hf}.output.LayerNorm", ours + ("layer_norm",), h)
    table += linear(f"{p}.pooler.dense", ("bert", "pooler"), (h,), (h,))
    table += linear("lm_head.dense", ("mlm_head", "transform"), (h,), (h,))
    table += layer_norm("lm_head.layer_norm", ("mlm_head", "layer_norm"), h)
    table.append(vocab_rows("lm_head.bias", ("mlm_head", "output_bias"), cfg))
    if classifier_outputs is not None:
        table += _owned(linear("classifier", ("classifier",), (h,), (classifier_outputs,)), TOKEN_CLASSIFIER)
        table += _owned(linear("classifier.dense", ("bert", "pooler"), (h,), (h,)), SEQ_CLASSIFIER)
        table += _owned(linear("classifier.out_proj", ("classifier",), (h,), (classifier_outputs,)), SEQ_CLASSIFIER)
    table += linear("qa_outputs", ("qa_outputs",), (h,), (2,))
    return table


def hf_config_to_model_config(hf_config: Mapping[str, Any], **overrides: Any) -> ModelConfig:
    """Builds our ``ModelConfig`` from a Hugging Face Longformer ``config.json``.

    Raises:
      ValueError: naming the field, for another ``model_type``, an unsupported ``hidden_act`` or a
        missing size field.
    """
    model_type = hf_config.get("model_type")
    if model_type != "longformer":
        raise ValueError(f"config.json model_type={model_type!r}; this is the 'longformer' conversion")
    window = hf_config.get("attention_window", 512)
    fields = dict(
        bert_layout_fields(hf_config, {"pad_token_id": 1}),  # LongformerConfig's default padding id
        architecture="longformer",
        attention_window=tuple(window) if isinstance(window, (list, tuple)) else (int(window),),
    )
    fields.update(overrides)
    return ModelConfig(**fields)


def model_config_to_hf_config(cfg: ModelConfig, *, pad_token_id: int = 0,
                              architecture: str = "LongformerForMaskedLM",
                              extras: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The Hugging Face ``config.json`` fields of ``cfg`` (a ``transformers.LongformerConfig`` dict).

    ``pad_token_id`` written is the model's own (``cfg.pad_token_id``: the position offset depends on it);
    the tokenizer's (the argument) is only compared with it (a warning when they differ).
    """
    if pad_token_id != cfg.pad_token_id:
        logging.warning("the tokenizer's pad id %d differs from model.pad_token_id=%d, which config.json records: "
                        "transformers will count positions from pad id %d", pad_token_id, cfg.pad_token_id,
                        cfg.pad_token_id)
    windows = longformer.layer_windows(cfg)
    return {
        **bert_layout_config(cfg, "longformer", architecture),
        "attention_window": windows,
        "pad_token_id": cfg.pad_token_id,
        **dict(extras or {}),
    }


CONVERSION = Conversion(
    model_type="longformer",
    prefix=PREFIX,
    table=_conversion_table,
    architecture_parts=ARCHITECTURE_PARTS,
    base_architecture="LongformerModel",
    task_architectures=TASK_ARCHITECTURES,
    mlm_architecture="LongformerForMaskedLM",
    pretraining_architecture="LongformerForMaskedLM",
    config_from_hf=hf_config_to_model_config,
    config_to_hf=model_config_to_hf_config,
    ignored_buffers=IGNORED_BUFFERS,
    tied_keys=TIED_KEYS,
    optional_parts=(("bert", "pooler"), ("mlm_head",)),
    head_prefixes=("lm_head.", "classifier.", "qa_outputs."),
    task_heads=("classifier", "qa_outputs", SEQ_CLASSIFIER, TOKEN_CLASSIFIER),
)
