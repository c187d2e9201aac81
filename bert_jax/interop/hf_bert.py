"""BERT's Hugging Face layout (``transformers.Bert*``): its conversion table and ``config.json`` mapping.

``CONVERSION`` is what ``bert_jax/interop/hf_convert.py`` reads and writes BERT checkpoints with. The
table names, for every parameter of our looped layout (``bert/encoder/layer_i``), the Hugging Face key,
both shapes and whether the tensor is a ``torch.nn.Linear`` weight (stored ``[out, in]``, transposed to
our ``[in, ..., out]`` kernels). ``ARCHITECTURE_PARTS`` says which parts of our tree each
``transformers`` class holds, which is all an export needs to choose its keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bert_jax.config import ModelConfig
from bert_jax.interop.hf_convert import (Conversion, Entry, bert_layout_config,
                                         bert_layout_fields, layer_norm, linear, vocab_rows)

# Hugging Face ``hidden_act`` -> ``ModelConfig.hidden_act``, and back.

# Buffers that Hugging Face stores beside the weights; they hold no learned values.
IGNORED_BUFFERS = ("bert.embeddings.position_ids", "bert.embeddings.token_type_ids")
# Decoder keys tied to another tensor: alias -> the key that carries the value.
TIED_KEYS = {
    "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}
# transformers class -> the parts of our tree it holds ("pooler" is bert/pooler).
ARCHITECTURE_PARTS = {
    "BertModel": ("pooler",),
    "BertForPreTraining": ("pooler", "mlm_head", "nsp_head"),
    "BertForMaskedLM": ("mlm_head",),
    "BertForSequenceClassification": ("pooler", "classifier"),
    "BertForMultipleChoice": ("pooler", "classifier"),
    "BertForTokenClassification": ("classifier",),
    "BertForQuestionAnswering": ("qa_outputs",),
}
# Fine-tuning task kind (``FinetuneReader.kind`` / task name) -> the transformers class of its head.
TASK_ARCHITECTURES = {
    "classification": "BertForSequenceClassification",
    "regression": "BertForSequenceClassification",
    "multiple_choice": "BertForMultipleChoice",
    "tagging": "BertForTokenClassification",
    "span": "BertForQuestionAnswering",
}


def _conversion_table(cfg: ModelConfig, classifier_outputs: int | None = None) -> list[Entry]:
    """Every parameter (looped layout) with its Hugging Face key (``bert.`` prefixed, task-model style).

    Args:
      cfg: the model configuration.
      classifier_outputs: outputs of the ``classifier`` head (classes, tags, or 1 for regression and
        multiple choice); None leaves it out. ``qa_outputs`` (2 outputs) is always listed.
    """
    h, n, d = cfg.hidden_size, cfg.num_heads, cfg.head_dim
    emb = ("bert", "embeddings")
    table = [
        vocab_rows("bert.embeddings.word_embeddings.weight", emb + ("word_embeddings",), cfg, h),
        Entry("bert.embeddings.position_embeddings.weight", emb + ("position_embeddings",),
               (cfg.max_position_embeddings, h), (cfg.max_position_embeddings, h), False),
        Entry("bert.embeddings.token_type_embeddings.weight", emb + ("token_type_embeddings",),
               (cfg.type_vocab_size, h), (cfg.type_vocab_size, h), False),
        *layer_norm("bert.embeddings.LayerNorm", emb + ("layer_norm",), h),
    ]
    for i in range(cfg.num_layers):
        hf, ours = f"bert.encoder.layer.{i}", ("bert", "encoder", f"layer_{i}")
        for name in ("query", "key", "value"):
            table += linear(f"{hf}.attention.self.{name}", ours + ("attention", name), (h,), (n, d))
        table += linear(f"{hf}.attention.output.dense", ours + ("attention", "output"), (n, d), (h,))
        table += layer_norm(f"{hf}.attention.output.LayerNorm", ours + ("attention", "layer_norm"), h)
        table += linear(f"{hf}.intermediate.dense", ours + ("intermediate",), (h,), (cfg.intermediate_size,))
        table += linear(f"{hf}.output.dense", ours + ("output",), (cfg.intermediate_size,), (h,))
        table += layer_norm(f"{hf}.output.LayerNorm", ours + ("layer_norm",), h)
    table += linear("bert.pooler.dense", ("bert", "pooler"), (h,), (h,))
    table += linear("cls.predictions.transform.dense", ("mlm_head", "transform"), (h,), (h,))
    table += layer_norm("cls.predictions.transform.LayerNorm", ("mlm_head", "layer_norm"), h)
    table.append(vocab_rows("cls.predictions.bias", ("mlm_head", "output_bias"), cfg))
    table += linear("cls.seq_relationship", ("nsp_head",), (h,), (2,))
    if classifier_outputs is not None:
        table += linear("classifier", ("classifier",), (h,), (classifier_outputs,))
    table += linear("qa_outputs", ("qa_outputs",), (h,), (2,))
    return table


# ----------------------------------------------------------------------------------------------------
# Configuration


def hf_config_to_model_config(hf_config: Mapping[str, Any], **overrides: Any) -> ModelConfig:
    """Builds our ``ModelConfig`` from the fields of a Hugging Face BERT ``config.json``.

    Args:
      hf_config: the parsed ``config.json``.
      **overrides: ``ModelConfig`` fields to set afterwards (``dtype``, ``scan_layers``, dropout, ...).

    Returns:
      The model configuration.

    Raises:
      ValueError: naming the field, for a non-BERT ``model_type``, a relative position embedding, an
        unsupported ``hidden_act`` or a missing size field.
    """
    model_type = hf_config.get("model_type", "bert")
    if model_type != "bert":
        raise ValueError(f"config.json model_type={model_type!r}; this is the 'bert' conversion")
    position_type = hf_config.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise ValueError(f"config.json position_embedding_type={position_type!r}; only 'absolute' is supported")
    fields = bert_layout_fields(hf_config)
    fields.update(overrides)
    return ModelConfig(**fields)


def model_config_to_hf_config(cfg: ModelConfig, *, pad_token_id: int = 0, architecture: str = "BertForPreTraining",
                              extras: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The Hugging Face ``config.json`` fields of ``cfg`` (a ``transformers.BertConfig`` dict).

    Args:
      cfg: the model configuration.
      pad_token_id: the tokenizer's ``[PAD]`` id.
      architecture: the ``transformers`` class (a key of ``ARCHITECTURE_PARTS``).
      extras: task fields laid over the result (``id2label``, ``label2id``, ``problem_type``).
    """
    return {
        **bert_layout_config(cfg, "bert", architecture),
        "pad_token_id": pad_token_id,
        "position_embedding_type": "absolute",
        "classifier_dropout": None,
        "is_decoder": False,
        "add_cross_attention": False,
        "use_cache": True,
        **dict(extras or {}),
    }


CONVERSION = Conversion(
    model_type="bert",
    prefix="bert",
    table=_conversion_table,
    architecture_parts=ARCHITECTURE_PARTS,
    base_architecture="BertModel",
    task_architectures=TASK_ARCHITECTURES,
    mlm_architecture="BertForMaskedLM",
    pretraining_architecture="BertForPreTraining",
    config_from_hf=hf_config_to_model_config,
    config_to_hf=model_config_to_hf_config,
    ignored_buffers=IGNORED_BUFFERS,
    tied_keys=TIED_KEYS,
    head_prefixes=("cls.", "classifier.", "qa_outputs."),
)
