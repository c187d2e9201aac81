"""The run config as the trainer reads it: the model config it names, and validation before compiling.

``validate`` collects every problem it finds and raises one ``ConfigError`` listing them with the
config field to change, so a launch fails in a second rather than after compilation or on a pod.
"""

from __future__ import annotations

import json
from typing import Any

import ml_collections
from etils import epath

from bert_jax import fileio, perf, sharding
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


def validate(
    config: ml_collections.ConfigDict,
    *,
    num_devices: int,
    process_count: int = 1,
    tokenizer_vocab_size: int | None = None,
) -> None:
    """Checks a run config against itself, the devices and the tokenizer.

    Args:
      config: the run config (``configs/*.py``).
      num_devices: global device count (``jax.device_count()``).
      process_count: number of JAX processes.
      tokenizer_vocab_size: the loaded tokenizer's vocabulary size, when known.

    Raises:
      ConfigError: listing every problem found.
    """
    problems: list[str] = []
    try:
        model = model_config_from(config)
    except (ConfigError, ValueError, TypeError) as error:
        raise ConfigError(f"config.model: {error}") from error
    data, train = config.data, config.train
    if data.max_seq_length > model.max_position_embeddings:
        problems.append(
            f"data.max_seq_length={data.max_seq_length} exceeds model.max_position_embeddings="
            f"{model.max_position_embeddings}")
    if not 1 <= data.max_predictions_per_seq <= data.max_seq_length:
        problems.append(
            f"data.max_predictions_per_seq={data.max_predictions_per_seq} must be in [1, data.max_seq_length]")
    if tokenizer_vocab_size is not None and tokenizer_vocab_size != model.vocab_size:
        problems.append(
            f"model.vocab_size={model.vocab_size} does not match the tokenizer's {tokenizer_vocab_size} "
            f"({config.tokenizer.vocab_file or config.tokenizer.model_file}); set --config.model.vocab_size="
            f"{tokenizer_vocab_size}")
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
    for name in ("log_every", "checkpoint_every", "eval_batches"):
        if train[name] < 1:
            problems.append(f"train.{name}={train[name]} must be >= 1")
    if train.eval_every < 0:
        problems.append(f"train.eval_every={train.eval_every} must be >= 0 (0: evaluate at the end only)")
    if train.log_every >= 1 and train.checkpoint_every % train.log_every:
        problems.append(
            f"train.checkpoint_every={train.checkpoint_every} must be a multiple of train.log_every="
            f"{train.log_every} (a resumed run then logs the same windows as an uninterrupted one)")
    if problems:
        raise ConfigError("invalid run config:\n  - " + "\n  - ".join(problems))


def save_config(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Writes the resolved config to ``<workdir>/config.json``; returns the path."""
    return fileio.write_text(epath.Path(workdir) / "config.json", config.to_json_best_effort(indent=2, sort_keys=True))


def load_saved_config(workdir: str) -> dict[str, Any]:
    """Reads back ``<workdir>/config.json`` (a plain dict)."""
    return fileio.read_json(epath.Path(workdir) / "config.json")
