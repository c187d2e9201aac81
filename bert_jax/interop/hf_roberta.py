"""RoBERTa's Hugging Face layout (``transformers.Roberta*``): its conversion table and ``config.json`` mapping.

The encoder keys are BERT's under the prefix ``roberta`` (``roberta.embeddings...``,
``roberta.encoder.layer.<i>...``); the LM head is ``lm_head.{dense, layer_norm, bias}`` with
``lm_head.decoder`` tied to the word embeddings; there is no NSP head. Our ``bert/pooler`` is
``roberta.pooler.dense`` in ``RobertaModel`` / ``RobertaForMultipleChoice`` and ``classifier.dense`` in
``RobertaForSequenceClassification``, whose ``classifier.out_proj`` is our ``classifier``
(``CLASS_KEYS``): that head computes ``out_proj(tanh(dense(h[<s>])))``, which is our
``classifier(pooled)``, so an exported fine-tuned classifier predicts as it did here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bert_jax.config import ModelConfig
from bert_jax.interop.hf_convert import (Conversion, Entry, bert_layout_config, bert_layout_fields,
                                         layer_norm, linear, vocab_rows)

PREFIX = "roberta"
IGNORED_BUFFERS = ("roberta.embeddings.position_ids", "roberta.embeddings.token_type_ids")
TIED_KEYS = {
    "lm_head.decoder.weight": "roberta.embeddings.word_embeddings.weight",
    "lm_head.decoder.bias": "lm_head.bias",
}
ARCHITECTURE_PARTS = {
    "RobertaModel": ("pooler",),
    "RobertaForMaskedLM": ("mlm_head",),
    "RobertaForSequenceClassification": ("pooler", "classifier"),
    "RobertaForMultipleChoice": ("pooler", "classifier"),
    "RobertaForTokenClassification": ("classifier",),
    "RobertaForQuestionAnswering": ("qa_outputs",),
}
TASK_ARCHITECTURES = {
    "classification": "RobertaForSequenceClassification",
    "regression": "RobertaForSequenceClassification",
    "multiple_choice": "RobertaForMultipleChoice",
    "tagging": "RobertaForTokenClassification",
    "span": "RobertaForQuestionAnswering",
}
# The classification head (``RobertaClassificationHead``) holds the pooler and the classifier itself.
CLASS_KEYS = {
    "RobertaForSequenceClassification": {
        "roberta.pooler.dense.weight": "classifier.dense.weight",
        "roberta.pooler.dense.bias": "classifier.dense.bias",
        "classifier.weight": "classifier.out_proj.weight",
        "classifier.bias": "classifier.out_proj.bias",
    },
}
HF_DEFAULTS = {"pad_token_id": 1, "type_vocab_size": 1, "max_position_embeddings": 514, "layer_norm_eps": 1e-5}


def _conversion_table(cfg: ModelConfig, classifier_outputs: int | None = None) -> list[Entry]:
    """Every parameter (looped layout) with its Hugging Face key (``roberta.`` prefixed, task-model style).

    Args:
      cfg: the model configuration.
      classifier_outputs: outputs of the ``classifier`` head; None leaves it out.
    """
    h, n, d, v = cfg.hidden_size, cfg.num_heads, cfg.head_dim, cfg.vocab_size
    emb, p = ("bert", "embeddings"), cfg.max_position_embeddings
    table = [
        vocab_rows(f"{PREFIX}.embeddings.word_embeddings.weight", emb + ("word_embeddings",), cfg, h),
        Entry(f"{PREFIX}.embeddings.position_embeddings.weight", emb + ("position_embeddings",), (p, h), (p, h),
              False),
        Entry(f"{PREFIX}.embeddings.token_type_embeddings.weight", emb + ("token_type_embeddings",),
              (cfg.type_vocab_size, h), (cfg.type_vocab_size, h), False),
        *layer_norm(f"{PREFIX}.embeddings.LayerNorm", emb + ("layer_norm",), h),
    ]
    for i in range(cfg.num_layers):
        hf, ours = f"{PREFIX}.encoder.layer.{i}", ("bert", "encoder", f"layer_{i}")
        for name in ("query", "key", "value"):
            table += linear(f"{hf}.attention.self.{name}", ours + ("attention", name), (h,), (n, d))
        table += linear(f"{hf}.attention.output.dense", ours + ("attention", "output"), (n, d), (h,))
        table += layer_norm(f"{hf}.attention.output.LayerNorm", ours + ("attention", "layer_norm"), h)
        table += linear(f"{hf}.intermediate.dense", ours + ("intermediate",), (h,), (cfg.intermediate_size,))
        table += linear(f"{hf}.output.dense", ours + ("output",), (cfg.intermediate_size,), (h,))
        table += layer_norm(f"{hf}.output.LayerNorm", ours + ("layer_norm",), h)
    table += linear(f"{PREFIX}.pooler.dense", ("bert", "pooler"), (h,), (h,))
    table += linear("lm_head.dense", ("mlm_head", "transform"), (h,), (h,))
    table += layer_norm("lm_head.layer_norm", ("mlm_head", "layer_norm"), h)
    table.append(vocab_rows("lm_head.bias", ("mlm_head", "output_bias"), cfg))
    if classifier_outputs is not None:
        table += linear("classifier", ("classifier",), (h,), (classifier_outputs,))
    table += linear("qa_outputs", ("qa_outputs",), (h,), (2,))
    return table


def hf_config_to_model_config(hf_config: Mapping[str, Any], **overrides: Any) -> ModelConfig:
    """Builds our ``ModelConfig`` (``architecture="roberta"``) from a Hugging Face RoBERTa ``config.json``.

    Raises:
      ValueError: naming the field, for another ``model_type``, a relative position embedding, an
        unsupported ``hidden_act`` or a missing size field.
    """
    model_type = hf_config.get("model_type")
    if model_type != "roberta":
        raise ValueError(f"config.json model_type={model_type!r}; this is the 'roberta' conversion")
    position_type = hf_config.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise ValueError(f"config.json position_embedding_type={position_type!r}; only 'absolute' is supported")
    fields = dict(bert_layout_fields(hf_config, HF_DEFAULTS), architecture="roberta")
    fields.update(overrides)
    return ModelConfig(**fields)


def model_config_to_hf_config(cfg: ModelConfig, *, pad_token_id: int | None = None,
                              architecture: str = "RobertaForMaskedLM",
                              extras: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The Hugging Face ``config.json`` fields of ``cfg`` (a ``transformers.RobertaConfig`` dict).

    Args:
      cfg: the model configuration; its ``pad_token_id`` is the ``padding_idx`` the positions count from.
      pad_token_id: the tokenizer's padding id, which must be ``cfg.pad_token_id`` (None or 0, what an
        export without a tokenizer passes: not checked).
      architecture: the ``transformers`` class (a key of ``ARCHITECTURE_PARTS``).
      extras: task fields laid over the result (``id2label``, ``label2id``, ``problem_type``).

    Raises:
      ValueError: when the tokenizer pads with another id than the model's positions assume.
    """
    if pad_token_id not in (None, 0, cfg.pad_token_id):
        raise ValueError(f"the tokenizer pads with id {pad_token_id}, the model's positions count from "
                         f"model.pad_token_id={cfg.pad_token_id}; they must be equal for transformers' RoBERTa")
    return {
        **bert_layout_config(cfg, "roberta", architecture),
        "pad_token_id": cfg.pad_token_id,
        "position_embedding_type": "absolute",
        "classifier_dropout": None,
        "is_decoder": False,
        "add_cross_attention": False,
        "use_cache": True,
        **dict(extras or {}),
    }


CONVERSION = Conversion(
    model_type="roberta",
    prefix=PREFIX,
    table=_conversion_table,
    architecture_parts=ARCHITECTURE_PARTS,
    base_architecture="RobertaModel",
    task_architectures=TASK_ARCHITECTURES,
    mlm_architecture="RobertaForMaskedLM",
    pretraining_architecture="RobertaForMaskedLM",
    config_from_hf=hf_config_to_model_config,
    config_to_hf=model_config_to_hf_config,
    ignored_buffers=IGNORED_BUFFERS,
    tied_keys=TIED_KEYS,
    optional_parts=(("bert", "pooler"), ("mlm_head",)),
    head_prefixes=("lm_head.", "classifier.", "qa_outputs."),
    class_keys=CLASS_KEYS,
)
