"""The pretraining run: ``run(config, workdir)``.

Order of work: validate the config (before anything compiles) -> tokenizer (trained first when the
config asks and the file is missing) -> mesh, task, optimizer, sharded train state -> data loaders ->
restore (``bert_jax.checkpoint`` documents the order) -> the loop (train step, logs, evaluation,
checkpoints, SIGTERM) -> final checkpoint, evaluation and curves.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from bert_jax import checkpoint as checkpoint_lib
from bert_jax import logs, optim, perf, run_config, sharding, steps
from bert_jax.tasks import get_task
from data_pipelines import tokenizer as tokenizer_lib
from data_pipelines.loader import make_pretraining_loader

FINAL_SUMMARY_FILE = "final_metrics.json"


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or Inf (with ``train.on_nonfinite='stop'``)."""


class _Preemption:
    """Turns SIGTERM into a flag the loop checks (save a checkpoint, then exit cleanly)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no handler, no preemption saves
            self._previous = None
        return self

    def _handle(self, signum, frame):
        del signum, frame
        logging.warning("SIGTERM received: saving a checkpoint and stopping")
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def prepare_tokenizer(config: ml_collections.ConfigDict) -> tokenizer_lib.Tokenizer:
    """Loads the configured tokenizer; trains it on the first training source first when the file is
    missing and ``tokenizer.build_if_missing`` is set."""
    spec = {k: v for k, v in config.tokenizer.items() if k != "build_if_missing" and v not in ("", None)}
    path = spec.get("vocab_file") if spec["kind"] == "wordpiece" else spec.get("model_file")
    if config.tokenizer.build_if_missing and path and not os.path.exists(path):
        logging.info("tokenizer file %s is missing: training one on the first training source", path)
        tokenizer_lib.build_vocab_from_source(
            dict(config.data.sources[0]), {k: v for k, v in spec.items() if k not in ("vocab_file", "model_file")},
            os.path.dirname(path))
    return tokenizer_lib.load_tokenizer(spec)


def _hf_importer(model_config):
    """``(hf_dir, params_template) -> params``: imports HF weights, keeps fresh heads HF lacks."""

    def import_hf(hf_dir: str, template: Any) -> Any:
        from bert_jax import hf  # pylint: disable=g-import-not-at-top

        _, params, report = hf.load_hf_checkpoint(hf_dir, scan_layers=model_config.scan_layers)
        logging.info("%s", report.summary())
        fresh = set(report.missing_heads)
        merged = {name: (template[name] if name in fresh or name not in params else params[name]) for name in template}
        return jax.tree.map(lambda x, t: jax.device_put(np.asarray(x, t.dtype), t.sharding), merged, template)

    return import_hf


@dataclasses.dataclass
class _Window:
    """Step metrics since the last log record (device arrays; fetched once per window)."""

    first_step: int
    metrics: list = dataclasses.field(default_factory=list)
    start_time: float = dataclasses.field(default_factory=time.perf_counter)

    def totals(self) -> dict[str, float]:
        fetched = jax.device_get(self.metrics)
        return {k: float(sum(m[k] for m in fetched)) for k in fetched[0]} if fetched else {}


def _check_finite(task, window: _Window, checkpointer: checkpoint_lib.Checkpointer) -> None:
    """Raises NonFiniteLossError naming the first bad step and the checkpoint to resume from."""
    for offset, metrics in enumerate(jax.device_get(window.metrics)):
        loss = float(task.loss_from_sums(metrics))
        if not math.isfinite(loss):
            step = window.first_step + offset + 1
            latest = checkpointer.latest_step()
            where = f"{checkpointer.directory}/{latest}" if latest is not None else "none (no checkpoint yet)"
            raise NonFiniteLossError(
                f"loss is {loss} at step {step}; last good checkpoint: {where}. Lower the learning rate or set "
                "--config.train.on_nonfinite=skip, then rerun the same command to resume from it.")


def evaluate(eval_fn, params, eval_batches, mesh, task) -> dict[str, float]:
    """Mean metrics over the fixed held-out batches."""
    totals: dict[str, Any] = {}
    for batch in eval_batches:
        sums = eval_fn(params, sharding.shard_batch(batch, mesh))
        totals = sums if not totals else jax.tree.map(lambda a, b: a + b, totals, sums)
    return task.summarize(jax.device_get(totals))


def unigram_baseline(eval_batches) -> float:
    """MLM accuracy of always predicting the most frequent target token of the held-out batches."""
    ids = np.concatenate([b["masked_lm_ids"][b["masked_lm_weights"] > 0] for b in eval_batches])
    return float(np.bincount(ids).max() / max(len(ids), 1)) if len(ids) else math.nan


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Pretrains (or resumes pretraining) as ``config`` says, writing everything under ``workdir``.

    Returns:
      The final summary (also written to ``<workdir>/final_metrics.json``): step, final eval metrics,
      the unigram baseline, whether the run was preempted, and the paths of checkpoints, logs and plot.
    """
    train_cfg = config.train
    process_index, process_count = jax.process_index(), jax.process_count()
    primary = process_index == 0
    tokenizer = prepare_tokenizer(config)
    run_config.validate(config, num_devices=jax.device_count(), process_count=process_count,
                        tokenizer_vocab_size=tokenizer.vocab_size)
    if primary:
        run_config.save_config(config, workdir)
    model_config = run_config.model_config_from(config)
    mesh = sharding.make_mesh(config.sharding.mesh)
    rules = config.sharding.rules
    task = get_task(config.task.name, model_config, max_predictions=config.data.max_predictions_per_seq,
                    nsp_weight=config.task.nsp_weight)
    opt_cfg = ml_collections.ConfigDict(config.optimizer)
    opt_cfg.skip_nonfinite = opt_cfg.skip_nonfinite or train_cfg.on_nonfinite == "skip"
    optimizer, schedule = optim.make_optimizer(opt_cfg), optim.make_schedule(opt_cfg)
    seq_len, batch_size = config.data.max_seq_length, train_cfg.batch_size
    state, state_shardings = steps.create_train_state(
        task, optimizer, mesh, rules, train_cfg.seed, batch_size=1, seq_len=seq_len)

    loader_args = dict(batch_size=batch_size, process_index=process_index, process_count=process_count)
    train_loader = make_pretraining_loader(config.data, tokenizer, split="train", seed=train_cfg.seed,
                                           worker_count=train_cfg.worker_count, **loader_args)
    train_iter = iter(train_loader)
    checkpointer = checkpoint_lib.Checkpointer(
        os.path.join(workdir, checkpoint_lib.CHECKPOINT_SUBDIR), save_every=train_cfg.checkpoint_every,
        keep=train_cfg.keep_checkpoints, async_save=train_cfg.async_checkpoint)
    state, how = checkpoint_lib.restore_or_initialize(
        checkpointer, state, data_iterator=train_iter, init_from=train_cfg.init_from or None,
        init_mode=train_cfg.init_mode, import_hf=_hf_importer(model_config))
    logging.info("%s", how)

    if train_cfg.grad_accum_steps > 1:
        train_fn = steps.jit_train_step(steps.accumulate_step, state_shardings, mesh, rules, task=task,
                                        optimizer=optimizer, schedule=schedule,
                                        num_micro_batches=train_cfg.grad_accum_steps)
    else:
        train_fn = steps.jit_train_step(steps.train_step, state_shardings, mesh, rules, task=task,
                                        optimizer=optimizer, schedule=schedule)
    eval_fn = steps.jit_eval_step(state_shardings.params, mesh, rules, task=task)
    eval_loader = make_pretraining_loader(config.data, tokenizer, split="eval", seed=train_cfg.seed, **loader_args)
    eval_iter = iter(eval_loader)
    eval_batches = [next(eval_iter) for _ in range(train_cfg.eval_batches)]
    baseline = unigram_baseline(eval_batches)

    writer = logs.MetricWriter(workdir, enabled=primary, tensorboard=train_cfg.tensorboard)
    step = int(jax.device_get(state.step))
    progress = logs.Progress(train_cfg.num_steps, step, enabled=primary and train_cfg.progress_bar)
    tokens_per_step = batch_size * seq_len
    window = _Window(first_step=step)
    eval_metrics: dict[str, float] = {}
    preempted = False

    def flush_window():
        nonlocal window
        if not window.metrics:
            return
        if train_cfg.on_nonfinite == "stop":
            _check_finite(task, window, checkpointer)
        sums = window.totals()
        elapsed = max(time.perf_counter() - window.start_time, 1e-9)
        means = task.summarize(sums)
        tokens_per_second = len(window.metrics) * tokens_per_step / elapsed
        means.update(tokens_per_second=tokens_per_second, steps_per_second=len(window.metrics) / elapsed)
        utilisation = perf.mfu(tokens_per_second, model_config, seq_len, config.data.max_predictions_per_seq)
        if utilisation is not None:
            means["mfu"] = utilisation
        writer.write(step, "train", means)
        progress.update(step, loss=means["loss"], tok_s=tokens_per_second, mfu=utilisation)
        window = _Window(first_step=step)

    with _Preemption() as preemption:
        while step < train_cfg.num_steps:
            batch = next(train_iter)
            state, metrics = train_fn(state, sharding.shard_batch(batch, mesh))
            step += 1
            window.metrics.append(metrics)
            if step % train_cfg.log_every == 0 or step == train_cfg.num_steps or preemption.requested:
                flush_window()
            if train_cfg.eval_every and step % train_cfg.eval_every == 0 and step < train_cfg.num_steps:
                eval_metrics = writer.write(step, "eval", evaluate(eval_fn, state.params, eval_batches, mesh, task))
            if preemption.requested:
                checkpointer.save(step, state, train_iter, force=True)
                preempted = True
                break
            if step % train_cfg.checkpoint_every == 0:
                checkpointer.save(step, state, train_iter)
        flush_window()
        if not preempted:
            if checkpointer.latest_step() != step:
                checkpointer.save(step, state, train_iter, force=True)
            eval_metrics = writer.write(step, "eval", evaluate(eval_fn, state.params, eval_batches, mesh, task))
    checkpointer.close()
    progress.close()
    writer.close()
    skipped = train_loader.skipped_documents()
    summary = {
        "step": step,
        "preempted": preempted,
        "restored": how,
        "eval": eval_metrics,
        "unigram_baseline_mlm_accuracy": baseline,
        "skipped_documents": skipped,
        "checkpoints": str(checkpointer.directory),
        "metrics": os.path.join(workdir, logs.METRICS_FILE),
        "tensorboard": os.path.join(workdir, "tensorboard") if train_cfg.tensorboard else None,
        "curves": logs.plot_curves(workdir) if (primary and train_cfg.plot) else None,
    }
    if primary:
        with open(os.path.join(workdir, FINAL_SUMMARY_FILE), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2, default=str)
    if hasattr(train_iter, "close"):
        train_iter.close()
    return summary
