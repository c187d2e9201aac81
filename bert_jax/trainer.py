"""The one trainer every task shares: sharded state, restore order, the loop, logs and checkpoints.

``Trainer(config, task, workdir)`` builds the mesh, optimizer and sharded train state from the run
config's ``sharding``, ``optimizer`` and ``train`` sections; ``restore(...)`` applies the restore order
of ``bert_jax.checkpoint``; ``fit(train_iter, evaluate)`` runs the loop: train step, metric windows
(``metrics.jsonl``, TensorBoard, progress bar), periodic evaluation, periodic and final checkpoints,
SIGTERM handling and the non-finite loss policy. Pretraining (``bert_jax.train``) and fine-tuning use it
with their own data and evaluation.

Non-finite losses: with ``train.on_nonfinite='stop'`` the run stops at the first non-finite loss ``s``
naming the newest checkpoint at or before ``s - 2`` (checkpoint ``s - 1``'s parameters gave that loss;
it and any newer one are moved aside to ``<step>.nonfinite-<time>``, so rerunning resumes from the good
one). ``'skip'`` skips such updates (``optax.apply_if_finite``); either policy resumes the other's
checkpoints (``Checkpointer.restore``). A checkpoint that does not fit on the disk stops the run with one
``checkpoint.DiskFullError`` line; earlier checkpoints stay intact.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import ml_collections
import numpy as np

from bert_jax import checkpoint as checkpoint_lib
from bert_jax import attention, logs, perf, sharding, step_builder
from bert_jax.tasks.base import Task

Evaluate = Callable[[Any], dict[str, float]]  # params -> metric means


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or Inf (with ``train.on_nonfinite='stop'``)."""


class _Preemption:
    """Turns a preemption notice (SIGTERM) into a step at which to save a checkpoint and stop.

    One process: a Python SIGTERM handler sets a flag the loop reads after each step. Several processes:
    JAX's preemption service (started by ``jax.distributed.initialize``) catches SIGTERM on any host,
    tells the others, and all agree on the step at which every process saves; ``requested_at(step)``
    asks it (``multihost_utils.reached_preemption_sync_point``) at every step. A Python handler there
    would stop only the signalled process and leave the others waiting in the next collective.
    """

    def __init__(self, multi_process: bool):
        self.multi_process = multi_process
        self.requested = False
        self._previous = None

    def __enter__(self):
        if self.multi_process:
            return self
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no handler, so no preemption saves
            self._previous = None
        return self

    def _handle(self, signum, frame):
        del signum, frame
        logging.warning("SIGTERM received: saving a checkpoint and stopping")
        self.requested = True

    def requested_at(self, step: int) -> bool:
        """Whether to save and stop after ``step`` (every process must ask at every step)."""
        if self.multi_process and not self.requested:
            from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

            try:
                self.requested = multihost_utils.reached_preemption_sync_point(step)
            except RuntimeError as error:  # the preemption service is off (jax_enable_preemption_service)
                logging.warning("no preemption handling across processes: %s", error)
                self.multi_process = False
            if self.requested:
                logging.warning("preemption notice: all processes save a checkpoint at step %d and stop", step)
        return self.requested

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


@dataclasses.dataclass
class _Window:
    """Step metrics since the last log record (device arrays, fetched once per window)."""

    first_step: int
    metrics: list = dataclasses.field(default_factory=list)
    start_time: float = dataclasses.field(default_factory=time.perf_counter)

    def totals(self) -> dict[str, float]:
        fetched = jax.device_get(self.metrics)
        return {k: float(sum(m[k] for m in fetched)) for k in fetched[0]} if fetched else {}


@dataclasses.dataclass
class FitResult:
    """What ``Trainer.fit`` ends with."""

    step: int
    preempted: bool
    eval_metrics: dict[str, float]


class Trainer:
    """Sharded state, restore, loop, logs and checkpoints for one task.

    Attributes:
      builder: the ``step_builder.StepBuilder`` (task, optimizer, mesh, state layout, jitted steps); the
        AOT check and the step benchmark compile the same ``builder.train_step``.
      mesh, rules: the device mesh and logical-axis rules.
      optimizer, schedule: the optax transformation and its learning-rate schedule.
      state, state_shardings: the (sharded) ``steps.TrainState`` and its shardings.
      train_fn, eval_fn: the jitted train and eval steps.
      checkpointer: ``<workdir>/checkpoints``.
      writer: the metrics writer (``metrics.jsonl`` + TensorBoard) of the primary process.
    """

    def __init__(self, config: ml_collections.ConfigDict, task: Task, workdir: str, *, seq_len: int,
                 flops_per_token: float | None = None):
        """Builds the mesh, optimizer and the sharded, freshly initialised state.

        Args:
          config: the run config (``train``, ``optimizer`` and ``sharding`` sections are read).
          task: the objective.
          workdir: where checkpoints and logs go.
          seq_len: tokens per row (for tokens/s).
          flops_per_token: model FLOPs per trained token, for MFU on devices with a known peak.
        """
        self.config, self.task, self.workdir = config, task, workdir
        self.train_cfg = config.train
        self.primary = jax.process_index() == 0
        self.builder = step_builder.from_config(config, task, seq_len=seq_len)
        if getattr(task, "model_config", None) is not None:
            logging.info("%s", attention.describe(task.model_config))
        self.mesh, self.rules = self.builder.mesh, self.builder.rules
        self.optimizer, self.schedule = self.builder.optimizer, self.builder.schedule
        self.state_shardings = self.builder.state_shardings
        self.state = self.builder.init_state(self.train_cfg.seed)
        self.train_fn, self.eval_fn = self.builder.train_step, self.builder.eval_step
        self.tokens_per_step = self.train_cfg.batch_size * seq_len
        self.flops_per_token = flops_per_token
        self.checkpointer = checkpoint_lib.Checkpointer(
            os.path.join(workdir, checkpoint_lib.CHECKPOINT_SUBDIR), save_every=self.train_cfg.checkpoint_every,
            keep=self.train_cfg.keep_checkpoints, async_save=self.train_cfg.async_checkpoint)
        self.writer = logs.MetricWriter(workdir, enabled=self.primary, tensorboard=self.train_cfg.tensorboard)

    def restore(self, data_iterator: Any = None, *, drop_heads=(), import_hf=None) -> str:
        """Applies the restore order (``bert_jax.checkpoint``); returns which rule applied."""
        self.state, how = checkpoint_lib.restore_or_initialize(
            self.checkpointer, self.state, data_iterator=data_iterator,
            init_from=self.train_cfg.init_from or None, init_mode=self.train_cfg.init_mode,
            drop_heads=drop_heads, import_hf=import_hf)
        logging.info("%s", how)
        return how

    def evaluate_batches(self, params: Any, batches) -> dict[str, float]:
        """The task's mean metrics over host batches (summed on device, one fetch)."""
        totals: dict[str, Any] = {}
        for batch in batches:
            sums = self.eval_fn(params, sharding.shard_batch(batch, self.mesh))
            totals = sums if not totals else jax.tree.map(lambda a, b: a + b, totals, sums)
        return self.task.summarize(jax.device_get(totals))

    def _check_finite(self, window: _Window) -> None:
        """Raises NonFiniteLossError naming the first bad step and a checkpoint that does not reproduce it.

        Step ``s``'s loss is computed from the parameters after step ``s - 1``, so when it is the first
        non-finite loss, checkpoint ``s - 1`` holds parameters that give it again: the checkpoint to
        resume from is the newest one at or before ``s - 2`` (finite parameters whose next loss, at most
        step ``s - 1``, was finite). Newer ones are moved aside (``<step>.nonfinite-<time>``, kept), so
        rerunning the same command resumes from it.
        """
        for offset, metrics in enumerate(jax.device_get(window.metrics)):
            loss = float(self.task.loss_from_sums(metrics))
            if not math.isfinite(loss):
                step = window.first_step + offset + 1
                self.checkpointer.wait()  # name a finalised checkpoint, not one still being written
                saved = self.checkpointer.all_steps()
                good = [c for c in saved if c <= step - 2]
                bad = [c for c in saved if c > step - 2]
                moved = ""
                if bad:
                    suffix = self.checkpointer.move_aside(bad, checkpoint_lib.NONFINITE_SUFFIX)
                    moved = (f" (checkpoint{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad))}, whose "
                             f"parameters give this loss, moved aside to <step>{suffix})")
                where = (f"{self.checkpointer.directory}/{good[-1]} (its next loss, at step {good[-1] + 1}, was "
                         "finite)") if good else "none yet"
                raise NonFiniteLossError(
                    f"loss is {loss} at step {step}; last good checkpoint: {where}{moved}. Lower the learning rate "
                    "or set --config.train.on_nonfinite=skip, then rerun the same command to resume from it.")

    def _log_window(self, window: _Window, step: int, progress: logs.Progress) -> None:
        if self.train_cfg.on_nonfinite == "stop":
            self._check_finite(window)
        elapsed = max(time.perf_counter() - window.start_time, 1e-9)
        means = self.task.summarize(window.totals())
        tokens_per_second = len(window.metrics) * self.tokens_per_step / elapsed
        means.update(tokens_per_second=tokens_per_second, steps_per_second=len(window.metrics) / elapsed)
        utilisation = None
        peak = perf.device_peak_flops()
        if peak and self.flops_per_token:
            utilisation = tokens_per_second * self.flops_per_token / (peak * jax.device_count())
            means["mfu"] = utilisation
        self.writer.write(step, "train", means)
        progress.update(step, loss=means["loss"], tok_s=tokens_per_second, mfu=utilisation)

    def fit(self, train_iter: Iterator[dict[str, np.ndarray]], evaluate: Evaluate, *,
            label: str | None = None) -> FitResult:
        """Trains to ``train.num_steps`` from the current state's step.

        Args:
          train_iter: host batches of the task's fields (this process's share); its state is saved with
            every checkpoint when it has ``get_state`` (a Grain iterator).
          evaluate: ``params -> metric means``, run every ``train.eval_every`` steps and at the end
            (the progress bar shows the latest figures).
          label: the progress bar's name for this run (e.g. ``seed_1 fold_0``), or None.

        Returns:
          The final step, whether SIGTERM stopped the run, and the last evaluation.
        """
        cfg = self.train_cfg
        data_iterator = train_iter if hasattr(train_iter, "get_state") else None
        train_fn = self.train_fn
        step = int(jax.device_get(self.state.step))
        progress = logs.Progress(cfg.num_steps, step, enabled=self.primary and cfg.progress_bar, label=label)
        window, eval_metrics, preempted = _Window(step), {}, False
        with _Preemption(multi_process=jax.process_count() > 1) as preemption:
            while step < cfg.num_steps:
                batch = next(train_iter)
                self.state, metrics = train_fn(self.state, sharding.shard_batch(batch, self.mesh))
                step += 1
                window.metrics.append(metrics)
                stop = preemption.requested_at(step)
                if step % cfg.log_every == 0 or step == cfg.num_steps or stop:
                    self._log_window(window, step, progress)
                    window = _Window(step)
                if stop:  # before evaluating: the grace period after SIGTERM is short
                    self.checkpointer.save(step, self.state, data_iterator, force=True)
                    preempted = True
                    break
                if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.num_steps:
                    eval_metrics = self.writer.write(step, "eval", evaluate(self.state.params))
                    progress.show_eval(eval_metrics)
                if step % cfg.checkpoint_every == 0:
                    self.checkpointer.save(step, self.state, data_iterator)
            if window.metrics:
                self._log_window(window, step, progress)
            if not preempted:
                if self.checkpointer.latest_step() != step:
                    self.checkpointer.save(step, self.state, data_iterator, force=True)
                eval_metrics = self.writer.write(step, "eval", evaluate(self.state.params))
                progress.show_eval(eval_metrics)
        self.checkpointer.wait()
        progress.close()
        if jax.config.jax_compilation_cache_dir:
            counts = perf.compilation_cache_counts()
            logging.info("compilation cache %s: %d hits, %d misses in this process so far",
                         jax.config.jax_compilation_cache_dir, counts["hits"], counts["misses"])
        return FitResult(step=step, preempted=preempted, eval_metrics=eval_metrics)

    def close(self) -> None:
        self.checkpointer.close()
        self.writer.close()

