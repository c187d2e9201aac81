"""The run config as the trainer reads it: the model config it names, and validation before compiling.

``validate`` collects every problem it finds and raises one ``ConfigError`` listing them with the
config field to change, so a launch fails in a second rather than after compilation or on a pod.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import ml_collections
from etils import epath

from bert_jax import fileio, models, perf, sharding
from bert_jax.config import ModelConfig

NONFINITE_MODES = ("stop", "skip")
INIT_MODES = ("auto", "full", "params")


class ConfigError(ValueError):
    """A run config that cannot work; the message lists each problem with its field."""


def model_config_from(config: ml_collections.ConfigDict) -> ModelConfig:
    """The frozen ``ModelConfig`` of ``config.model`` (every field of the dataclass, none extra)."""
    fields = dict(config.model)
    unknown = sorted(set(fields) - set(ModelConfig.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"config.model has unknown field(s) {unknown}")
    return ModelConfig(**fields)


def data_parallel_size(config: ml_collections.ConfigDict, num_devices: int) -> int:
    """How many ways the batch is split (``data`` x ``fsdp`` mesh axes)."""
    data, fsdp, _ = sharding.mesh_shape(config.sharding.mesh, num_devices)
    return data * fsdp


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_range(problems: list[str], section: Any, prefix: str, name: str, low: float | None = None,
                 high: float | None = None, *, low_open: bool = False, high_open: bool = False,
                 integer: bool = False) -> None:
    """Appends ``'<prefix>.<name>=<value> must be in <range>'`` when ``section[name]`` (if present) is not."""
    if section is None or name not in section or section[name] is None:
        return
    value = section[name]
    if integer and not (isinstance(value, int) and not isinstance(value, bool)):
        problems.append(f"{prefix}.{name}={value!r} must be an integer")
        return
    if not _number(value):
        problems.append(f"{prefix}.{name}={value!r} must be a number")
        return
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        if high is None:
            expected = f"> {low}" if low_open else f">= {low}"
        else:
            expected = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        problems.append(f"{prefix}.{name}={value} must be {expected}")


def range_problems(config: ml_collections.ConfigDict) -> list[str]:
    """Out-of-range values of the sections pretraining and fine-tuning share (``model``, ``train``,
    ``optimizer``), each naming its field and the range expected; checked before any model is built."""
    problems: list[str] = []
    model, train, optimizer = config.get("model"), config.train, config.get("optimizer")
    for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                 "max_position_embeddings"):
        _check_range(problems, model, "model", name, 1, integer=True)
    _check_range(problems, model, "model", "type_vocab_size", 0, integer=True)  # 0: none (DeBERTa-v3)
    for name in ("hidden_dropout", "attention_dropout"):
        _check_range(problems, model, "model", name, 0.0, 1.0, high_open=True)
    for name in ("layer_norm_eps", "initializer_range"):
        _check_range(problems, model, "model", name, 0.0, low_open=True)
    for name in ("batch_size", "grad_accum_steps", "log_every", "checkpoint_every", "keep_checkpoints"):
        _check_range(problems, train, "train", name, 1, integer=True)
    _check_range(problems, optimizer, "optimizer", "learning_rate", 0.0, low_open=True)
    _check_range(problems, optimizer, "optimizer", "warmup_steps", 0, integer=True)
    for name in ("b1", "b2"):
        _check_range(problems, optimizer, "optimizer", name, 0.0, 1.0, high_open=True)
    _check_range(problems, optimizer, "optimizer", "eps", 0.0, low_open=True)
    for name in ("weight_decay", "clip_norm"):
        _check_range(problems, optimizer, "optimizer", name, 0.0)
    _check_range(problems, optimizer, "optimizer", "end_lr_fraction", 0.0, 1.0)
    _check_range(problems, optimizer, "optimizer", "max_consecutive_nonfinite", 0, integer=True)
    return problems


def shared_problems(config: ml_collections.ConfigDict, model: ModelConfig, num_devices: int) -> list[str]:
    """The checks pretraining (``validate``) and fine-tuning (``finetune.validate``) share: rows fit the
    positions, the mesh fits the devices, the batch splits into micro-batches and over the batch axes, and
    checkpoints fall on logging steps."""
    problems: list[str] = []
    data, train = config.data, config.train
    if data.max_seq_length > models.max_length(model):
        offset = model.max_position_embeddings - models.max_length(model)
        problems.append(
            f"data.max_seq_length={data.max_seq_length} exceeds model.max_position_embeddings="
            f"{model.max_position_embeddings}" + (f" less the {offset} position rows before the first token"
                                                   if offset else ""))
    try:
        ways = data_parallel_size(config, num_devices)
    except ValueError as error:
        problems.append(f"sharding.mesh does not fit the {num_devices} devices: {error}")
        ways = 1
    accum = max(1, int(train.grad_accum_steps))
    if train.batch_size % accum:
        problems.append(f"train.batch_size={train.batch_size} is not divisible by train.grad_accum_steps={accum}")
    elif (train.batch_size // accum) % ways:
        problems.append(
            f"train.batch_size={train.batch_size} / grad_accum_steps={accum} is not divisible by the "
            f"{ways} data-parallel devices (sharding.mesh data x fsdp)")
    if train.log_every >= 1 and train.checkpoint_every % train.log_every:
        problems.append(
            f"train.checkpoint_every={train.checkpoint_every} must be a multiple of train.log_every="
            f"{train.log_every} (a resumed run then logs the same windows as an uninterrupted one)")
    return problems


def pad_id_problems(config: ml_collections.ConfigDict, model: ModelConfig, tokenizer_pad_id: int | None) -> list[str]:
    """``model.pad_token_id`` against the tokenizer's padding id (rows pad with the tokenizer's; RoBERTa's
    positions count from the model's, and an export records it): one line naming both when they differ."""
    if tokenizer_pad_id is None or int(tokenizer_pad_id) == model.pad_token_id:
        return []
    tokenizer = config.tokenizer.get("vocab_file") or config.tokenizer.get("model_file") or "the tokenizer"
    return [f"model.pad_token_id={model.pad_token_id} differs from the tokenizer's pad id {tokenizer_pad_id} "
            f"({tokenizer}); set --config.model.pad_token_id={tokenizer_pad_id}"]


def _pretraining_range_problems(config: ml_collections.ConfigDict) -> list[str]:
    """Ranges of the pretraining-only fields (``data``, run length, schedule, source weights)."""
    problems: list[str] = []
    data, optimizer = config.data, config.optimizer
    _check_range(problems, data, "data", "max_seq_length", 1, integer=True)
    _check_range(problems, data, "data", "masked_lm_prob", 0.0, 1.0, low_open=True)
    _check_range(problems, data, "data", "short_seq_prob", 0.0, 1.0)
    _check_range(problems, data, "data", "dupe_factor", 1, integer=True)
    _check_range(problems, optimizer, "optimizer", "total_steps", 1, integer=True)
    warmup, total = optimizer.get("warmup_steps", 0), optimizer.get("total_steps", 1)
    if _number(warmup) and _number(total):
        decay = optimizer.get("decay", "linear")
        if warmup > total or (decay != "constant" and warmup == total):
            problems.append(
                f"optimizer.warmup_steps={warmup} must be {'<=' if decay == 'constant' else '<'} optimizer.total_steps="
                f"{total} (decay={decay!r} runs from the end of warmup to total_steps)")
    for index, spec in enumerate(data.get("sources") or ()):
        _check_range(problems, spec, f"data.sources[{index}]", "eval_fraction", 0.0, 1.0, high_open=True)
        _check_range(problems, spec, f"data.sources[{index}]", "weight", 0.0, low_open=True)
    return problems


def validate(
    config: ml_collections.ConfigDict,
    *,
    num_devices: int,
    process_count: int = 1,
    tokenizer_vocab_size: int | None = None,
    tokenizer_pad_id: int | None = None,
) -> None:
    """Checks a run config against itself, the devices and the tokenizer.

    Args:
      config: the run config (``configs/*.py``).
      num_devices: global device count (``jax.device_count()``).
      process_count: number of JAX processes.
      tokenizer_vocab_size: the loaded tokenizer's vocabulary size, when known.
      tokenizer_pad_id: the loaded tokenizer's padding id, when known (must be ``model.pad_token_id``).

    Raises:
      ConfigError: listing every problem found.
    """
    problems = range_problems(config) + _pretraining_range_problems(config)
    if problems:  # a size of 0 or a negative rate would make the checks below (and ModelConfig) misleading
        raise ConfigError("invalid run config:\n  - " + "\n  - ".join(problems))
    try:
        model = model_config_from(config)
    except (ConfigError, ValueError, TypeError) as error:
        raise ConfigError(f"config.model: {error}") from error
    data, train = config.data, config.train
    problems = shared_problems(config, model, num_devices)
    if not 1 <= data.max_predictions_per_seq <= data.max_seq_length:
        problems.append(
            f"data.max_predictions_per_seq={data.max_predictions_per_seq} must be in [1, data.max_seq_length]")
    if tokenizer_vocab_size is not None and tokenizer_vocab_size != model.vocab_size:
        problems.append(
            f"model.vocab_size={model.vocab_size} does not match the tokenizer's {tokenizer_vocab_size} "
            f"({config.tokenizer.vocab_file or config.tokenizer.model_file}); set --config.model.vocab_size="
            f"{tokenizer_vocab_size}")
    problems += pad_id_problems(config, model, tokenizer_pad_id)
    if train.batch_size % process_count:
        problems.append(f"train.batch_size={train.batch_size} is not divisible by the {process_count} processes")
    if train.num_steps < 1:
        problems.append(f"train.num_steps={train.num_steps} must be >= 1")
    if train.on_nonfinite not in NONFINITE_MODES:
        problems.append(f"train.on_nonfinite={train.on_nonfinite!r}; expected one of {NONFINITE_MODES}")
    if train.get("host_heap", "default") not in perf.HOST_HEAP_MODES:
        problems.append(f"train.host_heap={train.host_heap!r}; expected one of {perf.HOST_HEAP_MODES}")
    if train.init_mode not in INIT_MODES:
        problems.append(f"train.init_mode={train.init_mode!r}; expected one of {INIT_MODES}")
    nsp_weight = float(config.task.get("nsp_weight", 1.0))
    if nsp_weight > 0 and not data.nsp:
        problems.append(
            f"task.nsp_weight={nsp_weight} but data.nsp=False: packed/unpaired rows carry no NSP label; set "
            "--config.task.nsp_weight=0")
    if data.nsp and data.packing:
        problems.append("data.nsp and data.packing are exclusive (packing is the no-NSP, RoBERTa-style layout)")
    if train.eval_batches < 1:
        problems.append(f"train.eval_batches={train.eval_batches} must be >= 1")
    if train.eval_every < 0:
        problems.append(f"train.eval_every={train.eval_every} must be >= 0 (0: evaluate at the end only)")
    if problems:
        raise ConfigError("invalid run config:\n  - " + "\n  - ".join(problems))


# Fields of a source spec naming its raw input (needed only while its dataset is not prepared yet).
_SOURCE_INPUT_FIELDS = ("dump_path", "books_dir")


def precheck(config: ml_collections.ConfigDict, workdir: str) -> None:
    """The checks a run makes first, before its tokenizer, model or data: value ranges
    (``range_problems`` and the pretraining ones), that ``workdir`` is writable, and that every source
    still to be prepared (``'prepare': True``) has its raw input (``dump_path``, ``books_dir``).

    Raises:
      ConfigError: listing each problem with its field.
    """
    problems = range_problems(config) + _pretraining_range_problems(config)
    if not fileio.is_remote(workdir):
        try:
            os.makedirs(workdir, exist_ok=True)
            with tempfile.TemporaryFile(dir=workdir):
                pass
        except OSError as error:
            problems.append(f"--workdir={workdir} is not a writable directory: {error.strerror or error}")
    for index, spec in enumerate(config.data.get("sources") or ()):
        if not spec.get("prepare"):
            continue
        for field in _SOURCE_INPUT_FIELDS:
            path = spec.get(field)
            if path and not fileio.is_remote(path) and not os.path.exists(path):
                problems.append(f"data.sources[{index}].{field}={path}: no such file or directory")
    if problems:
        raise ConfigError("invalid run config:\n  - " + "\n  - ".join(problems))


def save_config(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Writes the resolved config to ``<workdir>/config.json``; returns the path."""
    return fileio.write_text(epath.Path(workdir) / "config.json", config.to_json_best_effort(indent=2, sort_keys=True))


def load_saved_config(workdir: str) -> dict[str, Any]:
    """Reads back ``<workdir>/config.json`` (a plain dict)."""
    return fileio.read_json(epath.Path(workdir) / "config.json")
