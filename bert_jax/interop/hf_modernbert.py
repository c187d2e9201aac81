"""ModernBERT's Hugging Face layout (``transformers.ModernBert*``): its conversion table and ``config.json``.

``CONVERSION`` is what ``bert_jax/interop/hf_convert.py`` reads and writes ModernBERT checkpoints with
(``bert_jax/models/modernbert.py`` is the model). Fused tensors keep their fusion: ``Wqkv`` ``[3NH, H]``
is our ``qkv`` kernel ``[H, 3, N, D]`` and ``Wi`` ``[2I, H]`` our ``wi`` ``[H, 2, I]`` (input half first,
gate half second, as ``ModernBertMLP`` chunks it). Biases and norm biases appear only where the config
has them (``attention_bias``, ``mlp_bias``, ``norm_bias``, ``classifier_bias``, ``decoder_bias``).

transformers names two different modules ``head``: the MLM transform of ``ModernBertForMaskedLM`` and
the classification head of ``ModernBertForSequenceClassification`` (our ``mlm_head/transform`` and
``bert/pooler``). The table lists ``head.*`` for both parts; an export writes the one its class holds,
and an import fills both from the source's ``head`` (what transformers does when it loads a masked-LM
checkpoint into a sequence classifier: the classification head starts from the MLM head).

The token-classification and question-answering classes hold that same ``head`` on every token, then
``classifier`` (tags, or ``[start, end]``): our ``TokenClassifier`` / ``SpanModel`` read ``bert/pooler`` on
every token (``Architecture.token_head``) and the span projection is ``classifier`` too
(``Architecture.span_head``), so all four task classes are ``bert/pooler`` + ``classifier``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bert_jax.config import ModelConfig
from bert_jax.interop.hf_convert import EXPORT_ACTIVATIONS, HF_ACTIVATIONS
from bert_jax.interop.hf_convert import Conversion, Entry, layer_norm, linear, vocab_rows
from bert_jax.models import modernbert

# Decoder keys tied to another tensor: alias -> the key that carries the value.
TIED_KEYS = {"decoder.weight": "model.embeddings.tok_embeddings.weight"}
# transformers class -> the parts of our tree it holds ("pooler" is bert/pooler, the classification head).
ARCHITECTURE_PARTS = {
    "ModernBertModel": (),
    "ModernBertForMaskedLM": ("mlm_head",),
    "ModernBertForSequenceClassification": ("pooler", "classifier"),
    "ModernBertForMultipleChoice": ("pooler", "classifier"),
    # ``head`` on every token (our ``bert/pooler`` through ``Architecture.token_head``), then ``classifier``:
    # the tags, or the start/end pair (our span projection is named ``classifier`` too: ``span_head``).
    "ModernBertForTokenClassification": ("pooler", "classifier"),
    "ModernBertForQuestionAnswering": ("pooler", "classifier"),
}
# Fine-tuning task kind -> the transformers class of its head.
TASK_ARCHITECTURES = {
    "classification": "ModernBertForSequenceClassification",
    "regression": "ModernBertForSequenceClassification",
    "multiple_choice": "ModernBertForMultipleChoice",
    "tagging": "ModernBertForTokenClassification",
    "span": "ModernBertForQuestionAnswering",
}
_LAYER_TYPES = {True: "full_attention", False: "sliding_attention"}


def _linear(hf_prefix, path, in_shape, out_shape, bias: bool) -> list[Entry]:
    entries = linear(hf_prefix, path, in_shape, out_shape)
    return entries if bias else entries[:1]


def _norm(hf_prefix, path, hidden, bias: bool) -> list[Entry]:
    entries = layer_norm(hf_prefix, path, hidden)
    return entries if bias else entries[:1]


def _conversion_table(cfg: ModelConfig, classifier_outputs: int | None = None) -> list[Entry]:
    """Every parameter (looped layout) with its Hugging Face key (``model.`` prefixed, task-model style).

    Args:
      cfg: the model configuration.
      classifier_outputs: outputs of the ``classifier`` head; None leaves it out.
    """
    h, n, d, v, i_size = cfg.hidden_size, cfg.num_heads, cfg.head_dim, cfg.vocab_size, cfg.intermediate_size
    emb = ("bert", "embeddings")
    table = [vocab_rows("model.embeddings.tok_embeddings.weight", emb + ("word_embeddings",), cfg, h),
             *_norm("model.embeddings.norm", emb + ("norm",), h, cfg.norm_bias)]
    for i in range(cfg.num_layers):
        hf, ours = f"model.layers.{i}", ("bert", "encoder", f"layer_{i}")
        if i > 0:
            table += _norm(f"{hf}.attn_norm", ours + ("attn_norm",), h, cfg.norm_bias)
        table += _linear(f"{hf}.attn.Wqkv", ours + ("attention", "qkv"), (h,), (3, n, d), cfg.attention_bias)
        table += _linear(f"{hf}.attn.Wo", ours + ("attention", "output"), (n, d), (h,), cfg.attention_bias)
        table += _norm(f"{hf}.mlp_norm", ours + ("mlp_norm",), h, cfg.norm_bias)
        table += _linear(f"{hf}.mlp.Wi", ours + ("wi",), (h,), (2, i_size), cfg.mlp_bias)
        table += _linear(f"{hf}.mlp.Wo", ours + ("wo",), (i_size,), (h,), cfg.mlp_bias)
    table += _norm("model.final_norm", ("bert", "final_norm"), h, cfg.norm_bias)
    for path in (("bert", "pooler"), ("mlm_head",)):  # both are transformers' "head" (module docstring)
        dense = "dense" if path[0] == "bert" else "transform"
        table += _linear("head.dense", path + (dense,), (h,), (h,), cfg.classifier_bias)
        table += _norm("head.norm", path + ("layer_norm",), h, cfg.norm_bias)
    if cfg.decoder_bias:
        table.append(vocab_rows("decoder.bias", ("mlm_head", "output_bias"), cfg))
    if classifier_outputs is not None:
        table += linear("classifier", ("classifier",), (h,), (classifier_outputs,))
    return table


# ----------------------------------------------------------------------------------------------------
# Configuration


def _every_n(layer_types: list[str], field: str = "config.json layer_types") -> int:
    """The ``global_attn_every_n_layers`` that gives ``layer_types``.

    Raises:
      ValueError: when no period fits (e.g. layer 0 local, or uneven spacing).
    """
    num_layers = len(layer_types)
    for n in range(1, num_layers + 1):
        if all(_LAYER_TYPES[i % n == 0] == kind for i, kind in enumerate(layer_types)):
            return n
    if num_layers == 0:
        return 3
    raise ValueError(f"{field}={layer_types}: expected 'full_attention' at every n-th layer from 0 and "
                     "'sliding_attention' elsewhere")


def _rope_theta(hf_config: Mapping[str, Any], layer_type: str, legacy: str, default: float) -> float:
    params = (hf_config.get("rope_parameters") or {}).get(layer_type) or {}
    rope_type = params.get("rope_type", "default")
    if rope_type != "default":
        raise ValueError(f"config.json rope_parameters.{layer_type}.rope_type={rope_type!r}; only 'default' "
                         "is supported")
    return float(params.get("rope_theta", hf_config.get(legacy, default)))


def hf_config_to_model_config(hf_config: Mapping[str, Any], **overrides: Any) -> ModelConfig:
    """Builds our ``ModelConfig`` from the fields of a Hugging Face ModernBERT ``config.json``.

    Args:
      hf_config: the parsed ``config.json`` (``layer_types`` + ``rope_parameters`` as transformers 5
        writes it, or the older ``global_attn_every_n_layers`` + ``global_rope_theta`` / ``local_rope_theta``).
      **overrides: ``ModelConfig`` fields to set afterwards (``dtype``, dropout, ...).

    Raises:
      ValueError: naming the field, for another ``model_type``, an unsupported activation or rope type,
        an irregular ``layer_types`` or a missing size field.
    """
    model_type = hf_config.get("model_type")
    if model_type != "modernbert":
        raise ValueError(f"config.json model_type={model_type!r}; this is the 'modernbert' conversion")
    for field in ("hidden_activation", "classifier_activation"):
        act = hf_config.get(field, "gelu")
        if act not in HF_ACTIVATIONS:
            raise ValueError(f"config.json {field}={act!r}; expected one of {sorted(HF_ACTIVATIONS)}")
    required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    absent = [key for key in required if key not in hf_config]
    if absent:
        raise ValueError(f"config.json lacks the field(s) {absent}")
    if hf_config.get("layer_types"):
        if len(hf_config["layer_types"]) != hf_config["num_hidden_layers"]:
            raise ValueError(f"config.json layer_types has {len(hf_config['layer_types'])} entries for "
                             f"num_hidden_layers={hf_config['num_hidden_layers']}")
        every_n = _every_n(list(hf_config["layer_types"]))
    else:
        every_n = int(hf_config.get("global_attn_every_n_layers", 3))
    defaults = ModelConfig()
    fields = dict(
        architecture="modernbert",
        vocab_size=hf_config["vocab_size"],
        hidden_size=hf_config["hidden_size"],
        num_layers=hf_config["num_hidden_layers"],
        num_heads=hf_config["num_attention_heads"],
        intermediate_size=hf_config["intermediate_size"],
        hidden_act=HF_ACTIVATIONS[hf_config.get("hidden_activation", "gelu")],
        hidden_dropout=float(hf_config.get("mlp_dropout", 0.0)),
        attention_dropout=float(hf_config.get("attention_dropout", 0.0)),
        max_position_embeddings=hf_config.get("max_position_embeddings", 8192),
        layer_norm_eps=hf_config.get("norm_eps", 1e-5),
        initializer_range=hf_config.get("initializer_range", defaults.initializer_range),
        rope_theta=_rope_theta(hf_config, "full_attention", "global_rope_theta", 160_000.0),
        local_rope_theta=_rope_theta(hf_config, "sliding_attention", "local_rope_theta", 10_000.0),
        local_attention=int(hf_config.get("local_attention", 128)),
        global_attn_every_n_layers=every_n,
        norm_bias=bool(hf_config.get("norm_bias", False)),
        attention_bias=bool(hf_config.get("attention_bias", False)),
        mlp_bias=bool(hf_config.get("mlp_bias", False)),
        decoder_bias=bool(hf_config.get("decoder_bias", True)),
        classifier_bias=bool(hf_config.get("classifier_bias", False)),
        classifier_act=HF_ACTIVATIONS[hf_config.get("classifier_activation", "gelu")],
        classifier_pooling=hf_config.get("classifier_pooling", "cls"),
        pad_token_id=int(hf_config.get("pad_token_id") or 0),
    )
    fields.update(overrides)
    return ModelConfig(**fields)


def model_config_to_hf_config(cfg: ModelConfig, *, pad_token_id: int = 0,
                              architecture: str = "ModernBertForMaskedLM",
                              extras: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The Hugging Face ``config.json`` fields of ``cfg`` (a ``transformers.ModernBertConfig`` dict).

    Args:
      cfg: the model configuration.
      pad_token_id: the tokenizer's padding id.
      architecture: the ``transformers`` class (a key of ``ARCHITECTURE_PARTS``).
      extras: task fields laid over the result (``id2label``, ``label2id``, ``problem_type``).
    """
    return {
        "architectures": [architecture],
        "model_type": "modernbert",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size,
        "hidden_activation": EXPORT_ACTIVATIONS[cfg.hidden_act],
        "classifier_activation": EXPORT_ACTIVATIONS[cfg.classifier_act],
        "max_position_embeddings": cfg.max_position_embeddings,
        "initializer_range": cfg.initializer_range,
        "norm_eps": cfg.layer_norm_eps,
        "norm_bias": cfg.norm_bias,
        "attention_bias": cfg.attention_bias,
        "mlp_bias": cfg.mlp_bias,
        "decoder_bias": cfg.decoder_bias,
        "classifier_bias": cfg.classifier_bias,
        "classifier_pooling": cfg.classifier_pooling,
        "embedding_dropout": cfg.hidden_dropout,
        "mlp_dropout": cfg.hidden_dropout,
        "classifier_dropout": cfg.hidden_dropout,
        "attention_dropout": cfg.attention_dropout,
        "local_attention": cfg.local_attention,
        "layer_types": [_LAYER_TYPES[modernbert.is_global_layer(cfg, i)] for i in range(cfg.num_layers)],
        "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": cfg.rope_theta},
                            "sliding_attention": {"rope_type": "default", "rope_theta": cfg.local_rope_theta}},
        "pad_token_id": pad_token_id,
        "bos_token_id": None,
        "eos_token_id": None,
        "cls_token_id": None,
        "sep_token_id": None,
        "tie_word_embeddings": True,
        "dtype": "float32",
        **dict(extras or {}),
    }


CONVERSION = Conversion(
    model_type="modernbert",
    prefix="model",
    table=_conversion_table,
    architecture_parts=ARCHITECTURE_PARTS,
    base_architecture="ModernBertModel",
    task_architectures=TASK_ARCHITECTURES,
    mlm_architecture="ModernBertForMaskedLM",
    pretraining_architecture="ModernBertForMaskedLM",
    config_from_hf=hf_config_to_model_config,
    config_to_hf=model_config_to_hf_config,
    tied_keys=TIED_KEYS,
    head_prefixes=("head.", "decoder.", "classifier."),
)
