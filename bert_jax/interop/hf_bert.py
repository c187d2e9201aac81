"""The Hugging Face BERT layout <-> bert-jax parameters: one conversion table, both directions.

The table (``_conversion_table``) names, for every parameter of our looped layout
(``bert/encoder/layer_i``), the Hugging Face key, both shapes and whether the tensor is a
``torch.nn.Linear`` weight (stored ``[out, in]``, transposed to our ``[in, ..., out]`` kernels). The
scanned layout (``bert/encoder/layers`` with a leading layer axis) converts through
``stack_layers`` / ``unstack_layers``.

Besides the encoder (``bert/embeddings``, ``bert/encoder``) our trees carry *parts*: the pooler
(``bert/pooler``), the pretraining heads (``mlm_head``, ``nsp_head``) and the fine-tuning heads, named
as Hugging Face names them (``classifier`` for sequence classification, regression, tagging and
multiple choice; ``qa_outputs`` for spans). ``ARCHITECTURE_PARTS`` says which parts each
``transformers`` class holds, which is all an export needs to choose its keys.

Parameter trees here are the *inner* ``params`` collection, unboxed: ``{"bert": ..., "mlm_head": ...}``;
apply the model with ``{"params": params}``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from absl import logging

from bert_jax.config import ModelConfig
from bert_jax.heads import PRETRAINING_HEADS, BertForPreTraining  # noqa: F401
from bert_jax.model import unbox

# Hugging Face ``hidden_act`` -> ``ModelConfig.hidden_act``, and back.
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
_EXPORT_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu"}

# Buffers that Hugging Face stores beside the weights; they hold no learned values.
IGNORED_BUFFERS = ("bert.embeddings.position_ids", "bert.embeddings.token_type_ids")
# Decoder keys tied to another tensor: alias -> the key that carries the value.
TIED_KEYS = {
    "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}
# Parts of our tree that may be absent from a source checkpoint (initialised fresh and reported).
OPTIONAL_PARTS = (("bert", "pooler"), ("mlm_head",), ("nsp_head",))
# Fine-tuning heads (top-level names, as in transformers' task models).
TASK_HEADS = ("classifier", "qa_outputs")
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

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ImportReport:
    """What an import did with the source checkpoint.

    Attributes:
      source: the weight files read.
      missing_heads: our parts absent from the source and initialised fresh, by name
        (``"bert/pooler"``, ``"mlm_head"``, ``"nsp_head"``).
      missing_keys: the Hugging Face keys that were absent (e.g. ``"cls.seq_relationship.weight"``).
      initialized: our parameter paths initialised fresh (e.g. ``"nsp_head/kernel"``).
      unused: source keys that map to nothing of ours (original spelling).
      ignored: buffers dropped on purpose (``embeddings.position_ids``).
      warnings: anything else worth a look (e.g. an untied decoder that had to be dropped).
      task_heads: fine-tuning heads read from the source (``"classifier"``, ``"qa_outputs"``).
    """

    source: tuple[str, ...]
    missing_heads: tuple[str, ...] = ()
    missing_keys: tuple[str, ...] = ()
    initialized: tuple[str, ...] = ()
    unused: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    task_heads: tuple[str, ...] = ()

    def summary(self) -> str:
        """A multi-line human-readable account, for the log."""
        lines = [f"imported Hugging Face weights from {', '.join(self.source)}"]
        if self.task_heads:
            lines.append(f"fine-tuning heads read: {', '.join(self.task_heads)}")
        if self.missing_heads:
            lines.append(f"initialised fresh (absent from the source): {', '.join(self.missing_heads)} "
                         f"({len(self.initialized)} tensors)")
        if self.unused:
            lines.append(f"unused source keys ({len(self.unused)}): {', '.join(self.unused)}")
        if self.ignored:
            lines.append(f"ignored buffers: {', '.join(self.ignored)}")
        lines.extend(f"warning: {w}" for w in self.warnings)
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class _Entry:
    """One tensor: its Hugging Face key and shape, our path and shape, and whether it is transposed."""

    hf_key: str
    path: tuple[str, ...]
    hf_shape: tuple[int, ...]
    shape: tuple[int, ...]
    transpose: bool

    @property
    def part(self) -> str | None:
        """``"pooler"``, a head name, or None for the encoder proper (always present)."""
        if self.path[:2] == ("bert", "pooler"):
            return "pooler"
        return None if self.path[0] == "bert" else self.path[0]

    def to_ours(self, x: np.ndarray) -> np.ndarray:
        return (x.T if self.transpose else x).reshape(self.shape)

    def to_hf(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(self.hf_shape[::-1]).T if self.transpose else x.reshape(self.hf_shape)


def _linear(hf_prefix: str, path: tuple[str, ...], in_shape: tuple[int, ...], out_shape: tuple[int, ...]):
    """A ``torch.nn.Linear`` (weight ``[out, in]``) <-> our kernel ``in_shape + out_shape`` and bias."""
    hf_weight = (math.prod(out_shape), math.prod(in_shape))
    return [
        _Entry(f"{hf_prefix}.weight", path + ("kernel",), hf_weight, in_shape + out_shape, True),
        _Entry(f"{hf_prefix}.bias", path + ("bias",), (math.prod(out_shape),), out_shape, False),
    ]


def _layer_norm(hf_prefix: str, path: tuple[str, ...], hidden: int):
    return [
        _Entry(f"{hf_prefix}.weight", path + ("norm", "scale"), (hidden,), (hidden,), False),
        _Entry(f"{hf_prefix}.bias", path + ("norm", "bias"), (hidden,), (hidden,), False),
    ]


def _conversion_table(cfg: ModelConfig, classifier_outputs: int | None = None) -> list[_Entry]:
    """Every parameter (looped layout) with its Hugging Face key (``bert.`` prefixed, task-model style).

    Args:
      cfg: the model configuration.
      classifier_outputs: outputs of the ``classifier`` head (classes, tags, or 1 for regression and
        multiple choice); None leaves it out. ``qa_outputs`` (2 outputs) is always listed.
    """
    h, n, d, v = cfg.hidden_size, cfg.num_heads, cfg.head_dim, cfg.vocab_size
    emb = ("bert", "embeddings")
    table = [
        _Entry("bert.embeddings.word_embeddings.weight", emb + ("word_embeddings",), (v, h), (v, h), False),
        _Entry("bert.embeddings.position_embeddings.weight", emb + ("position_embeddings",),
               (cfg.max_position_embeddings, h), (cfg.max_position_embeddings, h), False),
        _Entry("bert.embeddings.token_type_embeddings.weight", emb + ("token_type_embeddings",),
               (cfg.type_vocab_size, h), (cfg.type_vocab_size, h), False),
        *_layer_norm("bert.embeddings.LayerNorm", emb + ("layer_norm",), h),
    ]
    for i in range(cfg.num_layers):
        hf, ours = f"bert.encoder.layer.{i}", ("bert", "encoder", f"layer_{i}")
        for name in ("query", "key", "value"):
            table += _linear(f"{hf}.attention.self.{name}", ours + ("attention", name), (h,), (n, d))
        table += _linear(f"{hf}.attention.output.dense", ours + ("attention", "output"), (n, d), (h,))
        table += _layer_norm(f"{hf}.attention.output.LayerNorm", ours + ("attention", "layer_norm"), h)
        table += _linear(f"{hf}.intermediate.dense", ours + ("intermediate",), (h,), (cfg.intermediate_size,))
        table += _linear(f"{hf}.output.dense", ours + ("output",), (cfg.intermediate_size,), (h,))
        table += _layer_norm(f"{hf}.output.LayerNorm", ours + ("layer_norm",), h)
    table += _linear("bert.pooler.dense", ("bert", "pooler"), (h,), (h,))
    table += _linear("cls.predictions.transform.dense", ("mlm_head", "transform"), (h,), (h,))
    table += _layer_norm("cls.predictions.transform.LayerNorm", ("mlm_head", "layer_norm"), h)
    table.append(_Entry("cls.predictions.bias", ("mlm_head", "output_bias"), (v,), (v,), False))
    table += _linear("cls.seq_relationship", ("nsp_head",), (h,), (2,))
    if classifier_outputs is not None:
        table += _linear("classifier", ("classifier",), (h,), (classifier_outputs,))
    table += _linear("qa_outputs", ("qa_outputs",), (h,), (2,))
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
        raise ValueError(f"config.json model_type={model_type!r}; only 'bert' checkpoints can be imported")
    position_type = hf_config.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise ValueError(f"config.json position_embedding_type={position_type!r}; only 'absolute' is supported")
    act = hf_config.get("hidden_act", "gelu")
    if act not in HF_ACTIVATIONS:
        raise ValueError(f"config.json hidden_act={act!r}; expected one of {sorted(HF_ACTIVATIONS)}")
    required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    absent = [key for key in required if key not in hf_config]
    if absent:
        raise ValueError(f"config.json lacks the field(s) {absent}")
    defaults = ModelConfig()
    fields = dict(
        vocab_size=hf_config["vocab_size"],
        hidden_size=hf_config["hidden_size"],
        num_layers=hf_config["num_hidden_layers"],
        num_heads=hf_config["num_attention_heads"],
        intermediate_size=hf_config["intermediate_size"],
        hidden_act=HF_ACTIVATIONS[act],
        hidden_dropout=hf_config.get("hidden_dropout_prob", defaults.hidden_dropout),
        attention_dropout=hf_config.get("attention_probs_dropout_prob", defaults.attention_dropout),
        max_position_embeddings=hf_config.get("max_position_embeddings", defaults.max_position_embeddings),
        type_vocab_size=hf_config.get("type_vocab_size", defaults.type_vocab_size),
        layer_norm_eps=hf_config.get("layer_norm_eps", defaults.layer_norm_eps),
        initializer_range=hf_config.get("initializer_range", defaults.initializer_range),
    )
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
        "architectures": [architecture],
        "model_type": "bert",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size,
        "hidden_act": _EXPORT_ACTIVATIONS[cfg.hidden_act],
        "hidden_dropout_prob": cfg.hidden_dropout,
        "attention_probs_dropout_prob": cfg.attention_dropout,
        "max_position_embeddings": cfg.max_position_embeddings,
        "type_vocab_size": cfg.type_vocab_size,
        "initializer_range": cfg.initializer_range,
        "layer_norm_eps": cfg.layer_norm_eps,
        "pad_token_id": pad_token_id,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": True,
        "classifier_dropout": None,
        "is_decoder": False,
        "add_cross_attention": False,
        "use_cache": True,
        "dtype": "float32",
        **dict(extras or {}),
    }


def _canonical_key(key: str) -> str:
    """The task-model spelling of a source key: ``bert.`` prefix, ``weight``/``bias`` names."""
    if not key.startswith(("bert.", "cls.", *(f"{head}." for head in TASK_HEADS))):
        key = "bert." + key
    if key.endswith(".gamma"):
        return key.removesuffix(".gamma") + ".weight"
    if key.endswith(".beta"):
        return key.removesuffix(".beta") + ".bias"
    return key


# ----------------------------------------------------------------------------------------------------
# Parameter-tree helpers


def _set_path(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for name in path[:-1]:
        tree = tree.setdefault(name, {})
    tree[path[-1]] = value


def _get_path(tree: Mapping, path: tuple[str, ...]) -> Any:
    for name in path:
        tree = tree[name]
    return tree


def _flatten(tree: Mapping, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Nested dict -> ``{path tuple: leaf}``."""
    flat = {}
    for name, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, prefix + (name,)))
        else:
            flat[prefix + (name,)] = value
    return flat


def stack_layers(params: Params) -> Params:
    """Looped layout (``bert/encoder/layer_i``) -> scanned layout (``bert/encoder/layers``, layer axis 0)."""
    encoder = params["bert"]["encoder"]
    layers = [encoder[f"layer_{i}"] for i in range(len(encoder))]
    stacked = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *layers)
    return {**params, "bert": {**params["bert"], "encoder": {"layers": stacked}}}


def unstack_layers(params: Params) -> Params:
    """Scanned layout (``bert/encoder/layers``) -> looped layout (``bert/encoder/layer_i``)."""
    stacked = params["bert"]["encoder"]["layers"]
    num_layers = jax.tree.leaves(stacked)[0].shape[0]
    encoder = {f"layer_{i}": jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(num_layers)}
    return {**params, "bert": {**params["bert"], "encoder": encoder}}


def init_pretraining_params(cfg: ModelConfig, rng: jax.Array) -> Params:
    """Freshly initialised, unboxed ``BertForPreTraining`` parameters (the inner ``params`` collection)."""
    dummy = np.zeros((1, 1), np.int32)
    batch = {"input_ids": dummy, "segment_ids": dummy, "sequence_ids": dummy + 1, "position_ids": dummy,
             "masked_lm_positions": dummy}
    return unbox(jax.jit(BertForPreTraining(cfg).init)(rng, batch))["params"]


# ----------------------------------------------------------------------------------------------------
# Import


def hf_state_dict_to_params(state_dict: Mapping[str, np.ndarray], cfg: ModelConfig, *,
                            rng: jax.Array | None = None, source: tuple[str, ...] = ("<state dict>",),
                            ) -> tuple[Params, ImportReport]:
    """Maps a Hugging Face BERT state dict onto our parameter tree.

    Args:
      state_dict: key -> array, keys as in ``BertModel`` / ``BertForPreTraining`` / the task models
        (``bert.`` prefix optional; LayerNorm ``gamma``/``beta`` accepted).
      cfg: the model configuration; ``cfg.scan_layers`` picks the layout of the result.
      rng: key for the parts absent from the source (default ``jax.random.key(0)``).
      source: names of the files read, for the report.

    Returns:
      ``(params, report)``: numpy arrays in ``cfg.param_dtype`` (Linear weights transposed, q/k/v
      kernels ``[embed, heads, head_dim]``, attention output ``[heads, head_dim, embed]``). The pooler
      and pretraining heads are always there (fresh when absent); a fine-tuning head (``classifier``,
      ``qa_outputs``) only when the source has it.

    Raises:
      ValueError: on a shape mismatch (naming the key and both shapes), on two source keys that mean
        the same tensor, or when encoder weights (anything but the pooler and the heads) are missing.
    """
    tensors: dict[str, tuple[str, np.ndarray]] = {}
    ignored = []
    for key, value in state_dict.items():
        canonical = _canonical_key(key)
        if canonical in IGNORED_BUFFERS:
            ignored.append(key)
            continue
        if canonical in tensors:
            raise ValueError(f"source keys {tensors[canonical][0]!r} and {key!r} both mean {canonical!r}")
        tensors[canonical] = (key, np.asarray(value))

    warnings = []
    used = set()
    for alias, target in TIED_KEYS.items():
        if alias not in tensors:
            continue
        used.add(alias)
        if target not in tensors:
            tensors[target] = tensors[alias]
        elif not np.array_equal(tensors[alias][1], tensors[target][1]):
            diff = np.max(np.abs(tensors[alias][1].astype(np.float32) - tensors[target][1].astype(np.float32)))
            warnings.append(f"{tensors[alias][0]} differs from {tensors[target][0]} (max abs diff {diff:.3g}); "
                            f"our decoder is tied, so {tensors[alias][0]} was dropped")

    classifier = tensors.get("classifier.weight")
    table = _conversion_table(cfg, None if classifier is None else classifier[1].shape[0])
    task_heads = sorted({e.part for e in table if e.part in TASK_HEADS and e.hf_key in tensors})
    flat, missing = {}, []
    for entry in table:
        if entry.part in TASK_HEADS and entry.part not in task_heads:
            continue
        if entry.hf_key not in tensors:
            missing.append(entry)
            continue
        key, value = tensors[entry.hf_key]
        used.add(entry.hf_key)
        if value.shape != entry.hf_shape:
            raise ValueError(f"shape mismatch for {key}: the checkpoint has {value.shape}, the model config "
                             f"expects {entry.hf_shape} (our {'/'.join(entry.path)} {entry.shape})")
        flat[entry.path] = entry.to_ours(value).astype(cfg.parameter_dtype)

    required = [e.hf_key for e in missing if not any(e.path[:len(p)] == p for p in OPTIONAL_PARTS)]
    if required:
        raise ValueError(f"the checkpoint lacks {len(required)} encoder tensor(s): {', '.join(required[:8])}"
                         f"{' ...' if len(required) > 8 else ''}")
    missing_heads = sorted({"/".join(p) for p in OPTIONAL_PARTS for e in missing if e.path[:len(p)] == p})
    if missing:  # Only the pooler and the heads can be missing, and their shapes do not depend on the layers.
        fresh = init_pretraining_params(cfg.replace(num_layers=0, scan_layers=False, remat=False),
                                        jax.random.key(0) if rng is None else rng)
        for entry in missing:
            flat[entry.path] = np.asarray(_get_path(fresh, entry.path), cfg.parameter_dtype)

    params: Params = {}
    for path, value in flat.items():
        _set_path(params, path, value)
    if cfg.scan_layers:
        params = stack_layers(params)
    report = ImportReport(
        source=tuple(source),
        missing_heads=tuple(missing_heads),
        missing_keys=tuple(e.hf_key for e in missing),
        initialized=tuple("/".join(e.path) for e in missing),
        unused=tuple(sorted(key for canonical, (key, _) in tensors.items() if canonical not in used)),
        ignored=tuple(sorted(ignored)),
        warnings=tuple(warnings),
        task_heads=tuple(task_heads),
    )
    return params, report


# ----------------------------------------------------------------------------------------------------
# Export


def inner_params(params: Any) -> Params:
    """Unboxed host arrays of the inner ``params`` collection, looped layout (``bert/encoder/layer_i``)."""
    params = unbox(params)
    if set(params) == {"params"}:
        params = params["params"]
    params = jax.device_get(params)
    return unstack_layers(params) if "layers" in params["bert"]["encoder"] else params


def default_architecture(params: Params) -> str:
    """The ``transformers`` class for a tree's parts when nothing else says (no fine-tuning task known).

    Raises:
      ValueError: for a ``classifier`` head (its task decides: sequence classification, tagging or
        multiple choice) or an NSP head without the MLM head.
    """
    if "classifier" in params:
        raise ValueError("params have a 'classifier' head: name the architecture (BertForSequenceClassification, "
                         "BertForTokenClassification or BertForMultipleChoice)")
    if "qa_outputs" in params:
        return "BertForQuestionAnswering"
    if "mlm_head" in params:
        return "BertForPreTraining" if "nsp_head" in params else "BertForMaskedLM"
    if "nsp_head" in params:
        raise ValueError("params have nsp_head but no mlm_head; transformers has no BERT class for NSP alone")
    return "BertModel"


def params_to_hf_state_dict(params: Params, cfg: ModelConfig, architecture: str | None = None,
                            ) -> dict[str, np.ndarray]:
    """Maps our parameters (either layout) to the state dict of a ``transformers`` BERT class (fp32).

    Args:
      params: our parameters, boxed or unboxed, with or without the outer ``{"params": ...}`` level.
      cfg: the configuration they belong to.
      architecture: a key of ``ARCHITECTURE_PARTS``; None: ``default_architecture(params)``. The keys
        are that class's (``bert.``-prefixed, tied decoder weight and bias for the MLM classes;
        ``BertModel``'s have no prefix). Parts the class lacks (e.g. the pooler for token
        classification) are left out and logged.

    Raises:
      ValueError: naming our parameter path when the class needs it and it is missing or has an
        unexpected shape, or for an unknown architecture.
    """
    params = inner_params(params)
    architecture = architecture or default_architecture(params)
    if architecture not in ARCHITECTURE_PARTS:
        raise ValueError(f"architecture {architecture!r}; expected one of {sorted(ARCHITECTURE_PARTS)}")
    parts = ARCHITECTURE_PARTS[architecture]
    classifier_outputs = None
    if "classifier" in parts:
        if "classifier" not in params:
            raise ValueError(f"{architecture} needs a 'classifier' head; the params have {sorted(params)}")
        classifier_outputs = np.shape(params["classifier"]["kernel"])[-1]
    leftovers = set(_flatten(params))
    state = {}
    for entry in _conversion_table(cfg, classifier_outputs):
        if entry.part is not None and entry.part not in parts:
            continue
        try:
            value = np.asarray(_get_path(params, entry.path), np.float32)
        except KeyError as err:
            raise ValueError(f"params lack {'/'.join(entry.path)}, needed for {architecture} {entry.hf_key}") from err
        if value.shape != entry.shape:
            raise ValueError(f"params {'/'.join(entry.path)} has shape {value.shape}; the model config "
                             f"expects {entry.shape}")
        key = entry.hf_key if architecture != "BertModel" else entry.hf_key.removeprefix("bert.")
        state[key] = np.ascontiguousarray(entry.to_hf(value))
        leftovers.discard(entry.path)
    if "mlm_head" in parts:
        for alias, target in TIED_KEYS.items():
            state[alias] = state[target].copy()
    if leftovers:
        logging.info("not part of %s, so not exported: %s", architecture,
                     ", ".join(sorted({"/".join(path[:2]) for path in leftovers})))
    return state


# ----------------------------------------------------------------------------------------------------
# Fine-tuning tasks and their transformers classes

# Fine-tuning task kind (``FinetuneReader.kind`` / task name) -> the transformers class of its head.
TASK_ARCHITECTURES = {
    "classification": "BertForSequenceClassification",
    "regression": "BertForSequenceClassification",
    "multiple_choice": "BertForMultipleChoice",
    "tagging": "BertForTokenClassification",
    "span": "BertForQuestionAnswering",
}


def hf_label_names(hf_config: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The class names of a task ``config.json`` in id order (``id2label``), or None when absent."""
    id2label = hf_config.get("id2label")
    if not id2label:
        return None
    by_id = {int(k): v for k, v in id2label.items()}
    return tuple(by_id[i] for i in range(len(by_id)))


def hf_task_kind(hf_config: Mapping[str, Any]) -> str | None:
    """The fine-tuning task kind of a Hugging Face ``config.json`` (None for a non-task class).

    ``BertForSequenceClassification`` is ``regression`` with ``problem_type="regression"`` or a
    single label, else ``classification``.
    """
    architecture = (hf_config.get("architectures") or [None])[0]
    if architecture == "BertForSequenceClassification":
        names = hf_label_names(hf_config) or ()
        regression = hf_config.get("problem_type") == "regression" or len(names) == 1
        return "regression" if regression else "classification"
    kinds = [kind for kind, arch in TASK_ARCHITECTURES.items() if arch == architecture]
    return kinds[0] if kinds else None


def head_mismatch(hf_config: Mapping[str, Any], task_kind: str,
                  label_names: tuple[str, ...] | None) -> str | None:
    """Why a source's fine-tuning head does not fit a task, or None when it does.

    It fits when the source is the task's transformers class (``TASK_ARCHITECTURES``) and, for tasks
    with classes, has the same labels in the same order. Unnamed source labels (transformers'
    defaults ``LABEL_0``, ``LABEL_1``, ...) only need the same count.
    """
    architecture = (hf_config.get("architectures") or ["(no architectures field)"])[0]
    source_kind = hf_task_kind(hf_config)
    if source_kind != task_kind:
        return f"a {architecture} head ({source_kind or 'no task'}), this run is {task_kind}"
    theirs = hf_label_names(hf_config)
    if label_names is None or theirs is None or task_kind == "regression":
        return None
    unnamed = theirs == tuple(f"LABEL_{i}" for i in range(len(theirs)))
    if len(theirs) != len(label_names) or (not unnamed and tuple(label_names) != theirs):
        return f"labels {list(theirs)} there, {list(label_names)} here"
    return None
