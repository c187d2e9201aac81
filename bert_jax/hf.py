"""Hugging Face BERT checkpoints <-> bert-jax parameters.

Import reads a Hugging Face directory (``config.json`` plus ``model.safetensors``, a sharded
``model.safetensors.index.json``, or a PyTorch ``pytorch_model.bin``) and maps its state dict onto the
parameter tree of ``bert_jax.heads.BertForPreTraining``; export writes the reverse, together with the
WordPiece tokenizer files, so that ``transformers`` loads the directory offline with none of our code.

The mapping is one table (``_conversion_table``): for every parameter of our looped layout
(``bert/encoder/layer_i``) it names the Hugging Face key, both shapes and whether the tensor is a
``torch.nn.Linear`` weight (stored ``[out, in]``, transposed to our ``[in, ..., out]`` kernels). The
scanned layout (``bert/encoder/layers`` with a leading layer axis) converts through
``stack_layers`` / ``unstack_layers``.

Parameter trees here are the *inner* ``params`` collection, unboxed: ``{"bert": ..., "mlm_head": ...,
"nsp_head": ...}``; apply the model with ``{"params": params}``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import safetensors.numpy
from absl import logging

from bert_jax.config import ModelConfig
from bert_jax.heads import PRETRAINING_HEADS, BertForPreTraining
from bert_jax.model import unbox
from data_pipelines.tokenizer import (WORDPIECE_CONFIG_FILE, WORDPIECE_VOCAB_FILE, WordPieceTokenizer,
                                      find_wordpiece_file)

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"
TORCH_FILE = "pytorch_model.bin"
TORCH_INDEX_FILE = "pytorch_model.bin.index.json"
# Weight files in the order they are looked for.
WEIGHT_FILES = (SAFETENSORS_FILE, SAFETENSORS_INDEX_FILE, TORCH_FILE, TORCH_INDEX_FILE)

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

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ImportReport:
    """What ``load_hf_checkpoint`` did with the source checkpoint.

    Attributes:
      source: the weight files read.
      missing_heads: our parts absent from the source and initialised fresh, by name
        (``"bert/pooler"``, ``"mlm_head"``, ``"nsp_head"``).
      missing_keys: the Hugging Face keys that were absent (e.g. ``"cls.seq_relationship.weight"``).
      initialized: our parameter paths initialised fresh (e.g. ``"nsp_head/kernel"``).
      unused: source keys that map to nothing of ours (original spelling), e.g. ``"classifier.weight"``.
      ignored: buffers dropped on purpose (``embeddings.position_ids``).
      warnings: anything else worth a look (e.g. an untied decoder that had to be dropped).
    """

    source: tuple[str, ...]
    missing_heads: tuple[str, ...] = ()
    missing_keys: tuple[str, ...] = ()
    initialized: tuple[str, ...] = ()
    unused: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def summary(self) -> str:
        """A multi-line human-readable account, for the log."""
        lines = [f"imported Hugging Face weights from {', '.join(self.source)}"]
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


def _conversion_table(cfg: ModelConfig) -> list[_Entry]:
    """Every parameter of ``BertForPreTraining`` (looped layout) with its ``BertForPreTraining`` HF key."""
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


def model_config_to_hf_config(cfg: ModelConfig, *, pad_token_id: int = 0,
                              architecture: str = "BertForPreTraining") -> dict[str, Any]:
    """The Hugging Face ``config.json`` fields of ``cfg`` (a ``transformers.BertConfig`` dict)."""
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
    }


# ----------------------------------------------------------------------------------------------------
# Reading a Hugging Face directory


def read_hf_config(directory: str | Path) -> dict[str, Any]:
    """Parses ``directory/config.json``; raises ``FileNotFoundError`` naming the path when absent."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no Hugging Face config at {path} (expected a BERT config.json)")
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def _read_torch_file(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch  # pylint: disable=import-outside-toplevel
    except ImportError as err:
        raise ImportError(
            f"{path} is a PyTorch state dict and reading it needs torch, which is not installed; "
            f"`pip install torch` or convert the checkpoint to {SAFETENSORS_FILE}") from err
    state = torch.load(path, map_location="cpu", weights_only=True)
    arrays = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        value = value.detach()
        arrays[key] = (value.to(torch.float32) if value.is_floating_point() else value).numpy()
    return arrays


def _read_weight_file(path: Path) -> dict[str, np.ndarray]:
    if path.suffix == ".safetensors":
        return safetensors.numpy.load_file(path)
    return _read_torch_file(path)


def read_hf_weights(directory: str | Path) -> tuple[dict[str, np.ndarray], list[Path]]:
    """Reads the state dict of a Hugging Face directory (single file or sharded, safetensors or torch).

    Args:
      directory: holds one of ``WEIGHT_FILES`` (looked for in that order).

    Returns:
      ``(state dict: key -> numpy array in the stored dtype (torch bf16 comes back as fp32), files read)``.

    Raises:
      FileNotFoundError: naming the directory and the file names looked for, or a missing shard.
    """
    directory = Path(directory)
    for name in WEIGHT_FILES:
        path = directory / name
        if path.is_file():
            break
    else:
        raise FileNotFoundError(f"no weights in {directory}: expected one of {', '.join(WEIGHT_FILES)}")
    if not name.endswith(".index.json"):
        return _read_weight_file(path), [path]
    with path.open(encoding="utf-8") as f:
        weight_map = json.load(f)["weight_map"]
    state, files = {}, [directory / shard for shard in sorted(set(weight_map.values()))]
    for shard in files:
        if not shard.is_file():
            raise FileNotFoundError(f"{path} names the shard {shard.name}, which is missing from {directory}")
        state.update(_read_weight_file(shard))
    return state, files


def _canonical_key(key: str) -> str:
    """The ``BertForPreTraining`` spelling of a source key: ``bert.`` prefix, ``weight``/``bias`` names."""
    if not key.startswith(("bert.", "cls.")):
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
      state_dict: key -> array, keys as in ``BertModel`` / ``BertForPreTraining`` (``bert.`` prefix
        optional; LayerNorm ``gamma``/``beta`` accepted).
      cfg: the model configuration; ``cfg.scan_layers`` picks the layout of the result.
      rng: key for the parts absent from the source (default ``jax.random.key(0)``).
      source: names of the files read, for the report.

    Returns:
      ``(params, report)``: numpy arrays in ``cfg.param_dtype`` (Linear weights transposed, q/k/v
      kernels ``[embed, heads, head_dim]``, attention output ``[heads, head_dim, embed]``).

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

    flat, missing = {}, []
    for entry in _conversion_table(cfg):
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
    )
    return params, report


def load_hf_checkpoint(path: str | Path, *, model_config_overrides: Mapping[str, Any] | None = None,
                       rng: jax.Array | None = None, scan_layers: bool | None = None,
                       ) -> tuple[ModelConfig, Params, ImportReport]:
    """Imports a Hugging Face BERT directory.

    Args:
      path: directory with ``config.json`` and one of ``WEIGHT_FILES``.
      model_config_overrides: ``ModelConfig`` fields to set over those of ``config.json``; size fields
        that disagree with the weights raise a shape-mismatch error.
      rng: key for the parts absent from the source (e.g. MiniLM has no MLM/NSP head).
      scan_layers: if given, sets ``ModelConfig.scan_layers`` (the layout of the returned params).

    Returns:
      ``(model_config, params, report)``; ``params`` is the unboxed inner ``params`` tree of
      ``BertForPreTraining`` as numpy arrays; the report is also logged.
    """
    overrides = dict(model_config_overrides or {})
    if scan_layers is not None:
        overrides["scan_layers"] = scan_layers
    cfg = hf_config_to_model_config(read_hf_config(path), **overrides)
    state_dict, files = read_hf_weights(path)
    params, report = hf_state_dict_to_params(state_dict, cfg, rng=rng, source=tuple(map(str, files)))
    logging.info("%s", report.summary())
    for warning in report.warnings:
        logging.warning("%s", warning)
    return cfg, params, report


# ----------------------------------------------------------------------------------------------------
# Export


def _write_tokenizer(vocab: str | Path, lowercase: bool | None, cfg: ModelConfig, out_dir: Path) -> int:
    """Writes vocab.txt and tokenizer_config.json (by ``data_pipelines.tokenizer``); returns the [PAD] id."""
    vocab = Path(vocab)
    if vocab.is_dir():
        vocab = Path(find_wordpiece_file(vocab) or vocab / WORDPIECE_VOCAB_FILE)
    tokenizer = WordPieceTokenizer(str(vocab), lowercase=lowercase)
    if tokenizer.vocab_size > cfg.vocab_size:
        raise ValueError(f"{vocab} has {tokenizer.vocab_size} tokens, more than model vocab_size={cfg.vocab_size}")
    if tokenizer.vocab_size < cfg.vocab_size:
        logging.warning("%s has %d tokens; the model's last %d embedding rows have no token",
                        vocab, tokenizer.vocab_size, cfg.vocab_size - tokenizer.vocab_size)
    tokenizer.save(str(out_dir))
    config_path = out_dir / WORDPIECE_CONFIG_FILE
    tokenizer_config = json.loads(config_path.read_text(encoding="utf-8"))
    _write_json(config_path, {**tokenizer_config, "model_max_length": cfg.max_position_embeddings})
    return tokenizer.pad_id


def _write_json(path: Path, content: Mapping[str, Any]) -> None:
    with path.open("w", encoding="utf-8") as f:
        json.dump(content, f, indent=2, sort_keys=True)
        f.write("\n")


def params_to_hf_state_dict(params: Params, cfg: ModelConfig) -> dict[str, np.ndarray]:
    """Maps our parameters (either layout) to a Hugging Face state dict of fp32 numpy arrays.

    With both pretraining heads present the keys are those of ``BertForPreTraining`` (``bert.*``,
    ``cls.*``, tied decoder weight and bias included); without heads they are ``BertModel``'s
    (no prefix). Leaves outside our pretraining model (e.g. a fine-tuning head) are skipped and logged.

    Raises:
      ValueError: naming our parameter path when it is missing or has an unexpected shape, or when
        only one of the two pretraining heads is present.
    """
    params = unbox(params)
    if set(params) == {"params"}:
        params = params["params"]
    params = jax.device_get(params)
    if "layers" in params["bert"]["encoder"]:
        params = unstack_layers(params)
    heads = [name for name in PRETRAINING_HEADS if name in params]
    if len(heads) == 1:
        raise ValueError(f"params have {heads[0]} but not the other pretraining head; export needs both or none")
    leftovers = set(_flatten(params))
    state = {}
    for entry in _conversion_table(cfg):
        if entry.path[0] in PRETRAINING_HEADS and not heads:
            continue
        try:
            value = np.asarray(_get_path(params, entry.path), np.float32)
        except KeyError as err:
            raise ValueError(f"params lack {'/'.join(entry.path)}, needed for {entry.hf_key}") from err
        if value.shape != entry.shape:
            raise ValueError(f"params {'/'.join(entry.path)} has shape {value.shape}; the model config "
                             f"expects {entry.shape}")
        key = entry.hf_key if heads else entry.hf_key.removeprefix("bert.")
        state[key] = np.ascontiguousarray(entry.to_hf(value))
        leftovers.discard(entry.path)
    if heads:
        for alias, target in TIED_KEYS.items():
            state[alias] = state[target].copy()
    if leftovers:
        logging.warning("not exported (no Hugging Face BERT counterpart): %s",
                        ", ".join("/".join(path) for path in sorted(leftovers)))
    return state


def export_hf(params: Params, model_config: ModelConfig, out_dir: str | Path, *,
              vocab_file: str | Path | None = None, lowercase: bool | None = None) -> Path:
    """Writes a Hugging Face BERT directory that ``transformers`` loads offline with no code of ours.

    Writes ``config.json`` (``BertForPreTraining``, or ``BertModel`` when ``params`` have no
    pretraining heads), ``model.safetensors`` (fp32) and, given a vocab, ``vocab.txt`` and
    ``tokenizer_config.json`` for ``AutoTokenizer`` (written by ``data_pipelines.tokenizer``).

    Args:
      params: our parameters, either layer layout, boxed or unboxed, with or without the outer
        ``{"params": ...}`` level.
      model_config: the configuration the parameters belong to.
      out_dir: created if needed; existing files of the same names are overwritten.
      vocab_file: a WordPiece ``vocab.txt`` or a directory holding one; ``None`` writes no tokenizer.
      lowercase: ``do_lower_case`` of the tokenizer; ``None`` takes it from the
        ``tokenizer_config.json`` next to the vocab when there is one, else ``True``.

    Returns:
      ``out_dir`` as a ``Path``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = params_to_hf_state_dict(params, model_config)
    pad_token_id = 0
    if vocab_file is not None:
        pad_token_id = _write_tokenizer(vocab_file, lowercase, model_config, out_dir)
    else:
        logging.warning("no vocab given: %s will have no tokenizer files", out_dir)
    architecture = "BertForPreTraining" if "cls.predictions.bias" in state else "BertModel"
    _write_json(out_dir / CONFIG_FILE,
                model_config_to_hf_config(model_config, pad_token_id=pad_token_id, architecture=architecture))
    safetensors.numpy.save_file(state, out_dir / SAFETENSORS_FILE, metadata={"format": "pt"})
    (out_dir / SAFETENSORS_FILE).chmod(0o644)  # safetensors writes 0600; match the other files
    logging.info("exported %s (%d tensors) to %s", architecture, len(state), out_dir)
    return out_dir


def convert_hf_directory(source: str | Path, out_dir: str | Path, *, vocab_file: str | Path | None = None,
                         lowercase: bool | None = None) -> ImportReport:
    """Imports a Hugging Face BERT directory and exports it again (e.g. ``pytorch_model.bin`` ->
    ``model.safetensors``), through our parameter tree.

    Pretraining heads absent from the source are not invented: such a source is written as a
    ``BertModel`` (a missing pooler is written freshly initialised, as the report says). The vocab
    defaults to ``source``'s own ``vocab.txt`` or ``tokenizer.json``.

    Returns:
      The import report.
    """
    cfg, params, report = load_hf_checkpoint(source)
    params = {name: value for name, value in params.items() if name not in report.missing_heads}
    if vocab_file is None:
        vocab_file = find_wordpiece_file(source)
    export_hf(params, cfg, out_dir, vocab_file=vocab_file, lowercase=lowercase)
    return report
