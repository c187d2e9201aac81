"""Hugging Face checkpoints <-> bert-jax parameters, for any architecture: the machinery both ways.

An architecture's Hugging Face layout is a :class:`Conversion` (``bert_jax/interop/hf_<name>.py``
declares ``CONVERSION``): a table (:class:`Entry` per tensor: the Hugging Face key and shape, our path
and shape, whether it is a transposed ``torch.nn.Linear`` weight), which ``transformers`` class holds
which *parts* of our tree (the pooler ``bert/pooler``, the pretraining heads, the fine-tuning heads
``classifier`` / ``qa_outputs``), its tied keys, buffers and ``config.json`` mapping. The functions here
read and write state dicts through any such table; :func:`for_model_type` and :func:`for_architecture`
find the conversion of a ``config.json`` or a ``ModelConfig``.

Parameter trees here are the *inner* ``params`` collection, unboxed: ``{"bert": ..., "mlm_head": ...}``;
apply the model with ``{"params": params}``. The looped layout (``bert/encoder/layer_i``) is the one the
tables name; the scanned layout converts through ``stack_layers`` / ``unstack_layers``.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from absl import logging

from bert_jax import models
from bert_jax.config import ModelConfig
from bert_jax.models import ENCODER
from bert_jax.models.layers import unbox

Params = dict[str, Any]
# Fine-tuning heads (top-level names, as in transformers' task models).
TASK_HEADS = ("classifier", "qa_outputs")
# Hugging Face layouts of a registered architecture under another model_type (an ELECTRA discriminator
# is a BERT encoder), importable by ``for_model_type``.
OTHER_LAYOUTS = ("bert_jax.interop.hf_electra",)


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
class Entry:
    """One tensor: its Hugging Face key and shape, our path and shape, and whether it is transposed."""

    hf_key: str
    path: tuple[str, ...]
    hf_shape: tuple[int, ...]
    shape: tuple[int, ...]
    transpose: bool

    @property
    def part(self) -> str | None:
        """``"pooler"``, a head name, or None for the encoder proper (always present)."""
        if self.path[:2] == (ENCODER, "pooler"):
            return "pooler"
        return None if self.path[0] == ENCODER else self.path[0]

    def to_ours(self, x: np.ndarray) -> np.ndarray:
        return (x.T if self.transpose else x).reshape(self.shape)

    def to_hf(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(self.hf_shape[::-1]).T if self.transpose else x.reshape(self.hf_shape)


@dataclasses.dataclass(frozen=True)
class VocabRows(Entry):
    """A tensor whose first axis is the vocabulary: Hugging Face holds ``vocab_size`` rows, we hold
    ``padded_vocab_size`` (``ModelConfig.vocab_pad_multiple``). Import pads with zeros, export slices."""

    def to_ours(self, x: np.ndarray) -> np.ndarray:
        padding = [(0, self.shape[0] - x.shape[0])] + [(0, 0)] * (x.ndim - 1)
        return np.pad(x, padding)

    def to_hf(self, x: np.ndarray) -> np.ndarray:
        return x[: self.hf_shape[0]]


def vocab_rows(hf_key: str, path: tuple[str, ...], cfg: ModelConfig, *trailing: int) -> VocabRows:
    """The entry of a ``[vocab, *trailing]`` tensor (word embeddings, MLM output bias): padded rows on our side."""
    return VocabRows(hf_key, path, (cfg.vocab_size, *trailing), (cfg.padded_vocab_size, *trailing), False)


def linear(hf_prefix: str, path: tuple[str, ...], in_shape: tuple[int, ...], out_shape: tuple[int, ...]):
    """A ``torch.nn.Linear`` (weight ``[out, in]``) <-> our kernel ``in_shape + out_shape`` and bias."""
    hf_weight = (math.prod(out_shape), math.prod(in_shape))
    return [
        Entry(f"{hf_prefix}.weight", path + ("kernel",), hf_weight, in_shape + out_shape, True),
        Entry(f"{hf_prefix}.bias", path + ("bias",), (math.prod(out_shape),), out_shape, False),
    ]


def layer_norm(hf_prefix: str, path: tuple[str, ...], hidden: int):
    return [
        Entry(f"{hf_prefix}.weight", path + ("norm", "scale"), (hidden,), (hidden,), False),
        Entry(f"{hf_prefix}.bias", path + ("norm", "bias"), (hidden,), (hidden,), False),
    ]




#: ``config.json`` activation names -> ours, and back (the BERT-layout configs' ``hidden_act``).
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
EXPORT_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu"}
_REQUIRED_SIZES = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


def bert_layout_fields(hf_config: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``ModelConfig`` fields a BERT-layout ``config.json`` (BERT, RoBERTa, Longformer, DeBERTa) spells alike.

    Args:
      hf_config: the ``config.json`` dict.
      defaults: ``config.json`` key -> the value its ``transformers`` class assumes when the key is absent
        (e.g. RoBERTa's ``layer_norm_eps`` 1e-5); other absent keys take ``ModelConfig``'s defaults.

    Raises:
      ValueError: naming the field, for an unsupported ``hidden_act`` or a missing size field.
    """
    act = hf_config.get("hidden_act", "gelu")
    if act not in HF_ACTIVATIONS:
        raise ValueError(f"config.json hidden_act={act!r}; expected one of {sorted(HF_ACTIVATIONS)}")
    absent = [key for key in _REQUIRED_SIZES if key not in hf_config]
    if absent:
        raise ValueError(f"config.json lacks the field(s) {absent}")
    ours = ModelConfig()
    fallback = {"hidden_dropout_prob": ours.hidden_dropout, "attention_probs_dropout_prob": ours.attention_dropout,
                "max_position_embeddings": ours.max_position_embeddings, "type_vocab_size": ours.type_vocab_size,
                "layer_norm_eps": ours.layer_norm_eps, "initializer_range": ours.initializer_range,
                "pad_token_id": ours.pad_token_id, **dict(defaults or {})}
    get = lambda key: hf_config.get(key, fallback[key])  # noqa: E731
    return dict(
        vocab_size=hf_config["vocab_size"],
        hidden_size=hf_config["hidden_size"],
        num_layers=hf_config["num_hidden_layers"],
        num_heads=hf_config["num_attention_heads"],
        intermediate_size=hf_config["intermediate_size"],
        hidden_act=HF_ACTIVATIONS[act],
        hidden_dropout=get("hidden_dropout_prob"),
        attention_dropout=get("attention_probs_dropout_prob"),
        max_position_embeddings=get("max_position_embeddings"),
        type_vocab_size=get("type_vocab_size"),
        layer_norm_eps=get("layer_norm_eps"),
        initializer_range=get("initializer_range"),
        pad_token_id=get("pad_token_id"),
    )


def bert_layout_config(cfg: ModelConfig, model_type: str, architecture: str) -> dict[str, Any]:
    """The ``config.json`` fields every BERT-layout class spells alike (the inverse of :func:`bert_layout_fields`)."""
    return {
        "architectures": [architecture],
        "model_type": model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size,
        "hidden_act": EXPORT_ACTIVATIONS[cfg.hidden_act],
        "hidden_dropout_prob": cfg.hidden_dropout,
        "attention_probs_dropout_prob": cfg.attention_dropout,
        "max_position_embeddings": cfg.max_position_embeddings,
        "type_vocab_size": cfg.type_vocab_size,
        "initializer_range": cfg.initializer_range,
        "layer_norm_eps": cfg.layer_norm_eps,
        "tie_word_embeddings": True,
        "dtype": "float32",
    }


@dataclasses.dataclass(frozen=True)
class Conversion:
    """One architecture's Hugging Face layout.

    Attributes:
      model_type: ``config.json``'s ``model_type`` (``"bert"``).
      prefix: the base-model prefix of the task models' keys (``"bert"`` in ``bert.encoder...``).
      table: ``table(cfg, classifier_outputs)`` -> every :class:`Entry` (looped layout, keys prefixed);
        ``classifier_outputs`` None leaves the ``classifier`` head out.
      architecture_parts: ``transformers`` class -> the parts of our tree it holds.
      base_architecture: the bare encoder class, whose keys carry no prefix (``"BertModel"``).
      task_architectures: fine-tuning task kind -> the class of its head.
      mlm_architecture: the class of a pretrained model with its MLM head (``"BertForMaskedLM"``).
      pretraining_architecture: the class of a model with every pretraining head
        (``"BertForPreTraining"``: MLM and NSP); the MLM class where there is no NSP.
      config_from_hf: ``fn(hf_config, **overrides) -> ModelConfig``.
      config_to_hf: ``fn(cfg, *, pad_token_id, architecture, extras) -> config.json dict``.
      ignored_buffers: keys Hugging Face stores that hold no learned values (canonical spelling).
      tied_keys: alias key -> the key that carries its value (tied decoders).
      optional_parts: our paths that may be absent from a source (initialised fresh and reported).
      head_prefixes: key prefixes that are not under ``prefix`` (heads: ``"cls."``, ``"classifier."``).
      task_heads: our fine-tuning head names.
      class_keys: ``transformers`` class -> {table key: the key that class stores the tensor under}, for
        a class that names a tensor otherwise (RoBERTa's classification head holds the pooler as
        ``classifier.dense``); read back under the table key on import.
      choose_architecture: ``fn(params) -> class`` for a layout whose heads the rule of
        :meth:`default_architecture` does not cover (ELECTRA's discriminator); None: that rule.
    """

    model_type: str
    prefix: str
    table: Callable[[ModelConfig, int | None], list[Entry]]
    architecture_parts: Mapping[str, tuple[str, ...]]
    base_architecture: str
    task_architectures: Mapping[str, str]
    mlm_architecture: str
    pretraining_architecture: str
    config_from_hf: Callable[..., ModelConfig]
    config_to_hf: Callable[..., dict[str, Any]]
    ignored_buffers: tuple[str, ...] = ()
    tied_keys: Mapping[str, str] = dataclasses.field(default_factory=dict)
    optional_parts: tuple[tuple[str, ...], ...] = ((ENCODER, "pooler"), ("mlm_head",), ("nsp_head",))
    head_prefixes: tuple[str, ...] = ("classifier.", "qa_outputs.")
    task_heads: tuple[str, ...] = TASK_HEADS
    class_keys: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)
    choose_architecture: Callable[[Params], str] | None = None

    def default_architecture(self, params: Params) -> str:
        """The ``transformers`` class for a tree's heads when nothing else says (no fine-tuning task known).

        ``qa_outputs``: the span class; ``mlm_head``: the pretraining class with ``nsp_head`` beside it, else
        the MLM class; no head: the base class.

        Raises:
          ValueError: for a ``classifier`` head (its task decides the class: the message lists them), a
            ``qa_outputs`` head without a span class, or an NSP head without the MLM head.
        """
        if self.choose_architecture is not None:
            return self.choose_architecture(params)
        if "classifier" in params:
            names = sorted({arch for kind, arch in self.task_architectures.items() if kind != "span"})
            raise ValueError(f"params have a 'classifier' head: name the architecture ({' or '.join(names)})")
        if "qa_outputs" in params:
            if "span" not in self.task_architectures:
                raise ValueError(f"params have a 'qa_outputs' head; the {self.model_type!r} layout has no "
                                 "question-answering class")
            return self.task_architectures["span"]
        if "mlm_head" in params:
            return self.pretraining_architecture if "nsp_head" in params else self.mlm_architecture
        if "nsp_head" in params:
            raise ValueError(f"params have nsp_head but no mlm_head; the {self.model_type!r} layout has no class "
                             "for NSP alone")
        return self.base_architecture

    def canonical_key(self, key: str) -> str:
        """The task-model spelling of a source key: base-model prefix, ``weight``/``bias`` names, the
        table's key for a class-specific name (``class_keys``)."""
        if not key.startswith((self.prefix + ".", *self.head_prefixes)):
            key = f"{self.prefix}.{key}"
        if key.endswith(".gamma"):
            key = key.removesuffix(".gamma") + ".weight"
        elif key.endswith(".beta"):
            key = key.removesuffix(".beta") + ".bias"
        aliases = {theirs: ours for renames in self.class_keys.values() for ours, theirs in renames.items()}
        return aliases.get(key, key)

    def class_key(self, architecture: str, table_key: str) -> str:
        """The key ``architecture`` (a ``transformers`` class) stores the table key ``table_key`` under."""
        key = self.class_keys.get(architecture, {}).get(table_key, table_key)
        return key.removeprefix(self.prefix + ".") if architecture == self.base_architecture else key


def for_architecture(config_or_name: ModelConfig | str) -> Conversion:
    """The conversion of an architecture (a ``ModelConfig`` or its ``architecture`` name)."""
    return models.conversion(config_or_name).CONVERSION


def for_model_type(hf_config: Mapping[str, Any]) -> Conversion:
    """The conversion whose ``model_type`` a ``config.json`` names (absent: ``"bert"``).

    Raises:
      ValueError: naming the ``model_type`` and the ones that can be imported.
    """
    model_type = hf_config.get("model_type", "bert")
    known = {}
    for name in models.names():
        conversion = for_architecture(name)
        known[conversion.model_type] = conversion
    for module in OTHER_LAYOUTS:
        conversion = importlib.import_module(module).CONVERSION
        known[conversion.model_type] = conversion
    if model_type not in known:
        raise ValueError(f"config.json model_type={model_type!r}; the importable ones are {sorted(known)}")
    return known[model_type]


def init_pretraining_params(cfg: ModelConfig, rng: jax.Array) -> Params:
    """Freshly initialised, unboxed pretraining-model parameters (the inner ``params`` collection)."""
    from bert_jax.heads import PreTrainingModel  # heads import the registry, which imports this lazily

    dummy = np.zeros((1, 1), np.int32)
    batch = {"input_ids": dummy, "segment_ids": dummy, "sequence_ids": dummy + 1, "position_ids": dummy,
             "masked_lm_positions": dummy}
    return unbox(jax.jit(PreTrainingModel(cfg).init)(rng, batch))["params"]


# ----------------------------------------------------------------------------------------------------
# Parameter-tree helpers


def set_path(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for name in path[:-1]:
        tree = tree.setdefault(name, {})
    tree[path[-1]] = value


def get_path(tree: Mapping, path: tuple[str, ...]) -> Any:
    for name in path:
        tree = tree[name]
    return tree


def flatten(tree: Mapping, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Nested dict -> ``{path tuple: leaf}``."""
    flat = {}
    for name, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix + (name,)))
        else:
            flat[prefix + (name,)] = value
    return flat


def stack_layers(params: Params) -> Params:
    """Looped layout (``bert/encoder/layer_i``) -> scanned layout (``bert/encoder/layers``, layer axis 0)."""
    encoder = params[ENCODER]["encoder"]
    layers = [encoder[f"layer_{i}"] for i in range(len(encoder))]
    stacked = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *layers)
    return {**params, ENCODER: {**params[ENCODER], "encoder": {"layers": stacked}}}


def unstack_layers(params: Params) -> Params:
    """Scanned layout (``bert/encoder/layers``) -> looped layout (``bert/encoder/layer_i``)."""
    stacked = params[ENCODER]["encoder"]["layers"]
    num_layers = jax.tree.leaves(stacked)[0].shape[0]
    encoder = {f"layer_{i}": jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(num_layers)}
    return {**params, ENCODER: {**params[ENCODER], "encoder": encoder}}


# ----------------------------------------------------------------------------------------------------
# Import


def state_dict_to_params(conversion: Conversion, state_dict: Mapping[str, np.ndarray], cfg: ModelConfig, *,
                         rng: jax.Array | None = None, source: tuple[str, ...] = ("<state dict>",),
                         ) -> tuple[Params, ImportReport]:
    """Maps a Hugging Face state dict of ``conversion``'s architecture onto our parameter tree.

    Args:
      conversion: the architecture's layout (e.g. ``hf_bert.CONVERSION``).
      state_dict: key -> array, keys as in the base model / the pretraining and task models
        (base-model prefix optional; LayerNorm ``gamma``/``beta`` accepted).
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
        canonical = conversion.canonical_key(key)
        if canonical in conversion.ignored_buffers:
            ignored.append(key)
            continue
        if canonical in tensors:
            raise ValueError(f"source keys {tensors[canonical][0]!r} and {key!r} both mean {canonical!r}")
        tensors[canonical] = (key, np.asarray(value))

    warnings = []
    used = set()
    for alias, target in conversion.tied_keys.items():
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
    table = conversion.table(cfg, None if classifier is None else classifier[1].shape[0])
    task_heads = sorted({e.part for e in table if e.part in conversion.task_heads and e.hf_key in tensors})
    flat, missing = {}, []
    for entry in table:
        if entry.part in conversion.task_heads and entry.part not in task_heads:
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

    required = [e.hf_key for e in missing if not any(e.path[:len(p)] == p for p in conversion.optional_parts)]
    if required:
        raise ValueError(f"the checkpoint lacks {len(required)} encoder tensor(s): {', '.join(required[:8])}"
                         f"{' ...' if len(required) > 8 else ''}")
    missing_heads = sorted({"/".join(p) for p in conversion.optional_parts for e in missing if e.path[:len(p)] == p})
    if missing:  # Only the pooler and the heads can be missing, and their shapes do not depend on the layers.
        fresh = init_pretraining_params(cfg.replace(num_layers=0, scan_layers=False, remat=False, remat_policy=None),
                                        jax.random.key(0) if rng is None else rng)
        for entry in missing:
            try:
                flat[entry.path] = np.asarray(get_path(fresh, entry.path), cfg.parameter_dtype)
            except KeyError:  # a head the pretraining model lacks (e.g. ELECTRA's discriminator): left out
                continue

    params: Params = {}
    for path, value in flat.items():
        set_path(params, path, value)
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
    return unstack_layers(params) if "layers" in params[ENCODER]["encoder"] else params


def params_to_state_dict(conversion: Conversion, params: Params, cfg: ModelConfig, architecture: str | None = None,
                         ) -> dict[str, np.ndarray]:
    """Maps our parameters (either layout) to the state dict of a ``transformers`` class (fp32).

    Args:
      conversion: the architecture's layout (e.g. ``hf_bert.CONVERSION``).
      params: our parameters, boxed or unboxed, with or without the outer ``{"params": ...}`` level.
      cfg: the configuration they belong to.
      architecture: a key of ``conversion.architecture_parts``; None: ``conversion.default_architecture``
        of the params. The keys are that class's (base-model prefixed, tied decoder weight and bias for
        the MLM classes; the base model's own have no prefix). Parts the class lacks (e.g. the pooler for token
        classification) are left out and logged.

    Raises:
      ValueError: naming our parameter path when the class needs it and it is missing or has an
        unexpected shape, or for an unknown architecture.
    """
    params = inner_params(params)
    architecture = architecture or conversion.default_architecture(params)
    if architecture not in conversion.architecture_parts:
        raise ValueError(f"architecture {architecture!r}; expected one of {sorted(conversion.architecture_parts)}")
    parts = conversion.architecture_parts[architecture]
    classifier_outputs = None
    if "classifier" in parts:
        if "classifier" not in params:
            raise ValueError(f"{architecture} needs a 'classifier' head; the params have {sorted(params)}")
        classifier_outputs = np.shape(params["classifier"]["kernel"])[-1]
    leftovers = set(flatten(params))
    state = {}
    for entry in conversion.table(cfg, classifier_outputs):
        if entry.part is not None and entry.part not in parts:
            continue
        try:
            value = np.asarray(get_path(params, entry.path), np.float32)
        except KeyError as err:
            raise ValueError(f"params lack {'/'.join(entry.path)}, needed for {architecture} {entry.hf_key}") from err
        if value.shape != entry.shape:
            raise ValueError(f"params {'/'.join(entry.path)} has shape {value.shape}; the model config "
                             f"expects {entry.shape}")
        key = conversion.class_key(architecture, entry.hf_key)
        state[key] = np.ascontiguousarray(entry.to_hf(value))
        leftovers.discard(entry.path)
    if "mlm_head" in parts:
        for alias, target in conversion.tied_keys.items():
            state[alias] = state[target].copy()
    if leftovers:
        logging.info("not part of %s, so not exported: %s", architecture,
                     ", ".join(sorted({"/".join(path[:2]) for path in leftovers})))
    return state


# ----------------------------------------------------------------------------------------------------
# Fine-tuning tasks and their transformers classes


def hf_label_names(hf_config: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The class names of a task ``config.json`` in id order (``id2label``), or None when absent."""
    id2label = hf_config.get("id2label")
    if not id2label:
        return None
    by_id = {int(k): v for k, v in id2label.items()}
    return tuple(by_id[i] for i in range(len(by_id)))


def hf_task_kind(conversion: Conversion, hf_config: Mapping[str, Any]) -> str | None:
    """The fine-tuning task kind of a Hugging Face ``config.json`` (None for a non-task class).

    The sequence-classification class (e.g. ``BertForSequenceClassification``) is ``regression`` with
    ``problem_type="regression"`` or a single label, else ``classification``.
    """
    architecture = (hf_config.get("architectures") or [None])[0]
    if architecture == conversion.task_architectures.get("classification"):
        names = hf_label_names(hf_config) or ()
        regression = hf_config.get("problem_type") == "regression" or len(names) == 1
        return "regression" if regression else "classification"
    kinds = [kind for kind, arch in conversion.task_architectures.items() if arch == architecture]
    return kinds[0] if kinds else None


def head_mismatch(conversion: Conversion, hf_config: Mapping[str, Any], task_kind: str,
                  label_names: tuple[str, ...] | None) -> str | None:
    """Why a source's fine-tuning head does not fit a task, or None when it does.

    It fits when the source is the task's transformers class (``conversion.task_architectures``) and, for tasks
    with classes, has the same labels in the same order. Unnamed source labels (transformers'
    defaults ``LABEL_0``, ``LABEL_1``, ...) only need the same count.
    """
    architecture = (hf_config.get("architectures") or ["(no architectures field)"])[0]
    source_kind = hf_task_kind(conversion, hf_config)
    if source_kind != task_kind:
        return f"a {architecture} head ({source_kind or 'no task'}), this run is {task_kind}"
    theirs = hf_label_names(hf_config)
    if label_names is None or theirs is None or task_kind == "regression":
        return None
    unnamed = theirs == tuple(f"LABEL_{i}" for i in range(len(theirs)))
    if len(theirs) != len(label_names) or (not unnamed and tuple(label_names) != theirs):
        return f"labels {list(theirs)} there, {list(label_names)} here"
    return None
