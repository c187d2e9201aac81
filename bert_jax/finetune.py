"""Fine-tuning: ``run(config, workdir)`` for GLUE, SQuAD, CoNLL-2003, SWAG and local text files.

Order of work: where to start from (``train.init_from``: a pretraining workdir or checkpoint, a Hugging
Face or exported directory, or nothing) -> the model config and tokenizer it implies -> the inputs
(``bert_jax/finetune_inputs.py``: the task's reader reads and featurises every split; bad rows, labels
and answers fail here, before anything compiles) -> per seed (and per cross-validation fold):
``Trainer`` with the task's head -> restore (the encoder from ``init_from``, the pretraining heads
dropped, the task head fresh) -> ``Trainer.fit`` for ``num_epochs`` worth of steps, evaluating with
the benchmark's own metrics (``bert_jax/finetune_scoring.py``; each task kind scores and writes its
prediction files itself, ``bert_jax/tasks``) -> ``finetune_summary.json``; over several seeds/folds
the summary adds mean and std. Each seed/fold shows a progress bar and prints its result as it ends.

Layout of a workdir (one run; several seeds/folds each get ``seed_<s>/`` and ``fold_<k>/``)::

    <run>/checkpoints/...                 the trainer's (final checkpoint, resumable)
    <run>/metrics.jsonl, tensorboard/     train and eval records; curves.png (loss and held-out metrics)
    <run>/predictions/<split>/            predictions.tsv | predictions.conll | SQuAD JSON files,
                                          GLUE submission files (MRPC.tsv, ...) for test splits
    <run>/finetune_summary.json           this run; <workdir>/finetune_summary.json: all runs + mean/std
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
from etils import epath

from bert_jax import checkpoint as checkpoint_lib
from bert_jax import distributed, fileio, logs, metrics, perf, run_config
from bert_jax.config import RUNTIME_MODEL_FIELDS, ModelConfig
from bert_jax.finetune_inputs import RunInputs, num_train_steps, read_inputs, split_file, train_iterator
from bert_jax.finetune_scoring import Evaluator
from bert_jax.heads import PRETRAINING_HEADS
from bert_jax.tasks import Benchmark, FinetuneTask, SplitData
from bert_jax.interop.init_source import (InitSource, hf_importer, model_config_for,  # noqa: F401
                                          resolve_init_source, tokenizer_for)
from bert_jax.trainer import Trainer
from data_pipelines import hf_tokenizer_files
from configs.common import check_moved_fields
from data_pipelines import tokenizer as tokenizer_lib

SUMMARY_FILE = "finetune_summary.json"


class InputError(ValueError):
    """Bad input found before training (a config problem, a missing file, a malformed row, label or
    answer); the message names the field, file and line. Entry points print it without a traceback."""


def validate(config: ml_collections.ConfigDict, model_config: ModelConfig, tokenizer_vocab_size: int,
             num_devices: int, tokenizer_pad_id: int | None = None) -> None:
    """Checks a fine-tuning config before anything compiles; raises ``ConfigError`` listing every problem
    (``tokenizer_pad_id``, when given, must be ``model.pad_token_id``)."""
    train, data = config.train, config.data
    problems = run_config.range_problems(config) or run_config.shared_problems(config, model_config, num_devices)
    if tokenizer_vocab_size > model_config.vocab_size:
        problems.append(f"the tokenizer has {tokenizer_vocab_size} tokens but the model only {model_config.vocab_size}")
    problems += run_config.pad_id_problems(config, model_config, tokenizer_pad_id)
    ways = 1
    try:
        ways = run_config.data_parallel_size(config, num_devices)
    except ValueError:
        pass  # reported by shared_problems
    if train.eval_batch_size < 1 or train.eval_batch_size % ways:
        problems.append(f"train.eval_batch_size={train.eval_batch_size} must be a positive multiple of the {ways} "
                        "data-parallel devices (sharding.mesh data x fsdp)")
    if train.num_steps < 0 or (train.num_steps == 0 and train.num_epochs <= 0):
        problems.append("set train.num_epochs > 0 or train.num_steps > 0")
    if not 0 <= train.warmup_fraction < 1:
        problems.append(f"train.warmup_fraction={train.warmup_fraction} must be in [0, 1)")
    if data.kfold == 1 or data.kfold < 0:
        problems.append(f"data.kfold={data.kfold}: use 0 (no cross-validation) or >= 2 folds")
    if split_file(config, data.train_split) and not config.task.name.startswith("local_text"):
        problems.append("data.files (explicit split files) is only for task.name='local_text'; use data.data_dir")
    if not split_file(config, data.train_split) and not data.data_dir and data.source == "files":
        problems.append("data.data_dir is empty: set it to the folder of the task's files (or use data.source=tfds)")
    if problems:
        raise run_config.ConfigError("invalid fine-tuning config:\n  - " + "\n  - ".join(problems))


# ----------------------------------------------------------------------------------------------------
# Where to start from: model config and tokenizer


# ----------------------------------------------------------------------------------------------------
# One run

def init_trainer(config: ml_collections.ConfigDict, task: FinetuneTask, workdir: str, source: InitSource,
                 data_iterator: Any = None, label_names=None) -> tuple[Trainer, str, list[str]]:
    """A ``Trainer`` for ``task`` restored per the restore order, with the encoder from ``source``.

    Args:
      config: the run config of this run (``train.seed``/``num_steps`` set).
      task: the fine-tuning task.
      workdir: this run's directory (resumes its own checkpoint first).
      source: ``resolve_init_source(config.train.init_from)``.
      data_iterator: restored with the state when resuming this run.
      label_names: the task's class names; a Hugging Face source's head is kept when they match.

    Returns:
      ``(trainer, how it was restored, the top-level params left at their fresh initialisation)``: the
      task head, plus ``bert`` when nothing was restored.
    """
    run_cfg = copy.deepcopy(config)
    with run_cfg.unlocked():
        run_cfg.train.init_from = source.path
    trainer = Trainer(run_cfg, task, workdir, seq_len=config.data.max_seq_length)
    fresh = jax.device_get(trainer.state.params)
    import_hf = hf_importer(task.model_config.scan_layers, task.name, label_names,
                            task.model_config.vocab_pad_multiple) if source.kind == "hf" else None
    # From init_from only the encoder: the pretraining heads and any earlier task head (e.g. of an
    # intermediate fine-tuning) are dropped by name; a Hugging Face source's head is kept when its task and
    # labels match (interop.init_source.hf_importer). Resuming this run's own checkpoint restores all.
    how = trainer.restore(data_iterator, drop_heads=(*PRETRAINING_HEADS, *task.head_names), import_hf=import_hf)
    restored = jax.device_get(trainer.state.params)
    unchanged = [name for name in sorted(fresh) if checkpoint_lib.tree_equal(fresh[name], restored[name])]
    logging.info("restore: %s; at their fresh initialisation: %s", how, ", ".join(unchanged) or "nothing")
    return trainer, how, unchanged


def benchmark_of(config: ml_collections.ConfigDict, inputs: RunInputs) -> Benchmark:
    """What the task is scored against: the reader's task name, the class names, SQuAD decoding."""
    return Benchmark(inputs.reader.task_name, inputs.label_names, dict(config.decode))


def run_one(config: ml_collections.ConfigDict, workdir: str, *, source: InitSource, inputs: RunInputs,
            train: SplitData, evals: Sequence[SplitData], fold: str | None = None,
            label: str | None = None) -> dict[str, Any]:
    """Fine-tunes one seed on one train set; evaluates ``evals`` and predicts the test splits; returns its summary.

    Args:
      label: what the progress bar calls this run (``seed 1 fold_0``), or None.
    """
    steps = num_train_steps(config, len(train.features))
    config = copy.deepcopy(config)
    with config.unlocked():
        config.train.num_steps = steps
        config.optimizer.total_steps = steps
        config.optimizer.warmup_steps = int(config.train.warmup_fraction * steps)
    task = inputs.task_class.for_data(ModelConfig(**config.model), label_names=inputs.label_names,
                                      train_features=train.features, pooling=config.task.pooling)
    train_iter = train_iterator(train.features, config.train.batch_size, config.train.seed)
    trainer, how, fresh = init_trainer(config, task, workdir, source, train_iter, inputs.label_names)
    if trainer.primary:
        run_config.save_config(config, workdir)
    evaluator = Evaluator(trainer, evals, config.train.eval_batch_size, benchmark_of(config, inputs), workdir)
    result = trainer.fit(train_iter, evaluator, label=label)
    if not result.preempted:  # the final evaluation ran; the test splits are predicted with the same params
        evaluator.results.update({split.name: evaluator.predict(trainer.state.params, split) for split in inputs.tests})
    trainer.close()
    summary = {
        "seed": config.train.seed,
        "fold": fold,
        "workdir": workdir,
        "step": result.step,
        "preempted": result.preempted,
        "restored": how,
        "initialised_fresh": fresh,
        "train_examples": len(train.examples),
        "train_rows": len(train.features),
        "num_steps": steps,
        "label_names": None if inputs.label_names is None else list(inputs.label_names),
        "eval": result.eval_metrics,
        "metrics": {name: m for name, (m, _) in evaluator.results.items() if m},
        "predictions": {name: files for name, (_, files) in evaluator.results.items()},
        "featurization": {s.name: dict(s.features.stats) for s in [train, *evals, *inputs.tests]},
        "curves": logs.plot_curves(workdir) if (trainer.primary and config.train.plot) else None,
    }
    if trainer.primary:
        fileio.write_json(os.path.join(workdir, SUMMARY_FILE), summary)
    return summary


# ----------------------------------------------------------------------------------------------------
# The whole command


def prepare(config: ml_collections.ConfigDict) -> tuple[ml_collections.ConfigDict, InitSource, Any]:
    """Resolves ``train.init_from``, the model config and the tokenizer, and validates the config.

    Returns:
      ``(config with the full model section, the init source, the tokenizer)``.

    Raises:
      ValueError: for a field that moved (``init_from`` is ``train.init_from``), naming the new one.
    """
    check_moved_fields(config)
    source = resolve_init_source(config.train.init_from)
    model_config = model_config_for(config, source)
    tokenizer = tokenizer_for(config, source)
    config = copy.deepcopy(config)
    with config.unlocked():  # what was resolved, so that the saved config.json loads this run again
        config.model = ml_collections.ConfigDict(model_config.to_dict())
        config.tokenizer = ml_collections.ConfigDict(dict(tokenizer.spec))
    validate(config, model_config, tokenizer.vocab_size, jax.device_count(), tokenizer_pad_id=tokenizer.pad_id)
    return config, source, tokenizer


def _prepare_and_read(config: ml_collections.ConfigDict) -> tuple[RunInputs, InitSource]:
    config, source, tokenizer = prepare(config)
    logging.info("fine-tuning %s from %s (%s); model: %s", config.task.name, config.train.init_from or "scratch",
                 source.kind, ", ".join(f"{k}={v}" for k, v in config.model.items()))
    return read_inputs(config, tokenizer), source


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Fine-tunes as ``config`` says (every seed, every fold), writing everything under ``workdir``.

    Returns:
      The summary (also ``<workdir>/finetune_summary.json``): the task, how the encoder was initialised,
      each run's metrics and files, and ``mean_std``: metric -> mean/std/min/max/n over the runs.

    Raises:
      InputError: before any training, for a config problem (listing them), a missing file, or bad data
        (naming the file, line, field or question).
    """
    perf.configure_compilation_cache(config.train, workdir)  # every seed and fold after the first loads its steps
    try:
        inputs, source = distributed.primary_first(lambda: _prepare_and_read(config), "reading the fine-tuning data")
    except (ValueError, FileNotFoundError) as error:
        raise InputError(f"{type(error).__name__}: {error}") from error
    runs = []
    for seed in inputs.seeds:
        for fold, train, evals in inputs.plans:
            parts = [f"seed_{seed}" if len(inputs.seeds) > 1 else "", fold or ""]
            run_cfg = copy.deepcopy(inputs.config)
            with run_cfg.unlocked():
                run_cfg.train.seed = seed
            label = " ".join(filter(None, parts)) or None
            runs.append(run_one(run_cfg, os.path.join(workdir, *filter(None, parts)), source=source, inputs=inputs,
                                train=train, evals=evals, fold=fold, label=label))
            if jax.process_index() == 0:
                logs.report(f"{label or 'run'} done at step {runs[-1]['step']}: "
                            f"{logs.format_metrics(runs[-1]['metrics'])}")
    flat_runs = [{f"{split}/{k}": v for split, m in r["metrics"].items() for k, v in m.items()} for r in runs]
    summary = {
        "task": inputs.config.task.name,
        "kind": inputs.reader.kind,
        "label_names": None if inputs.label_names is None else list(inputs.label_names),
        "init_from": inputs.config.train.init_from,
        "init_kind": source.kind,
        "seeds": inputs.seeds,
        "kfold": inputs.config.data.kfold,
        "runs": runs,
        "mean_std": metrics.summarize_over_seeds(flat_runs) if all(flat_runs) else {},
    }
    if jax.process_index() == 0:
        fileio.write_json(os.path.join(workdir, SUMMARY_FILE), summary)
    return summary
