"""Scoring during fine-tuning: the shared eval step over a split's rows, then the task's own metrics and files.

``Evaluator`` is the ``evaluate`` of ``Trainer.fit``: for each eval split it runs the trainer's eval
step (``bert_jax.steps.eval_step`` with the task's per-row predictions) over fixed-size batches, sums
the task's metrics on device, and hands the rows to :meth:`FinetuneTask.score`, which computes the
benchmark's metrics and writes the split's prediction files under ``<workdir>/predictions/<split>/``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import numpy as np

from bert_jax import sharding, steps
from bert_jax.finetune_inputs import eval_batches
from bert_jax.tasks import Benchmark, FinetuneTask, SplitData

Scores = tuple[dict[str, float], dict[str, str]]


def jit_predict_step(task: FinetuneTask, params_shardings: Any, mesh: jax.sharding.Mesh, rules: Any) -> Callable:
    """The shared eval step with predictions: ``(params, batch) -> (metric sums, per-row predictions)``."""
    return steps.jit_eval_step(params_shardings, mesh, rules, task=task, with_predictions=True)


def run_rows(step: Callable, params: Any, batches: Iterable[dict[str, np.ndarray]], mesh: jax.sharding.Mesh,
             num_rows: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Runs ``step`` over host batches: the summed metrics and every row's predictions (padding cut off).

    Args:
      step: from :func:`jit_predict_step`.
      params: the (sharded) parameters.
      batches: fixed-size host batches of the task's fields, the last one zero-padded.
      mesh: the device mesh the batches are sharded over.
      num_rows: real rows, in order (the padding rows after them are dropped).

    Returns:
      ``(sums, rows)``: metric sums (host scalars) and field -> ``[num_rows, ...]`` host arrays.
    """
    totals, pieces = {}, []
    for batch in batches:
        sums, predictions = step(params, sharding.shard_batch(batch, mesh))
        totals = sums if not totals else jax.tree.map(lambda a, b: a + b, totals, sums)
        pieces.append(jax.device_get(predictions))
    rows = {k: np.concatenate([p[k] for p in pieces])[:num_rows] for k in pieces[0]}
    return jax.device_get(totals), rows


class Evaluator:
    """Scores splits with the trainer's eval step: the task's mean metrics plus the benchmark's own.

    Calling it (``params -> metrics``) is the ``evaluate`` of ``Trainer.fit``: each eval split gets the
    task's means (loss, accuracy, ...) and the metrics of :meth:`FinetuneTask.score`, which also writes
    the split's prediction files; ``results`` keeps the last ``(metrics, files)`` of each split.
    """

    def __init__(self, trainer, splits: Sequence[SplitData], batch_size: int, benchmark: Benchmark, workdir: str):
        """Args:
          trainer: the run's ``Trainer`` (its task, mesh, rules and parameter shardings).
          splits: the eval splits.
          batch_size: global rows per eval batch.
          benchmark: what the task scores against (task name, class names, decoding).
          workdir: the run's directory; files go to ``<workdir>/predictions/<split>/``.
        """
        self.trainer, self.splits, self.batch_size = trainer, list(splits), batch_size
        self.benchmark, self.workdir = benchmark, workdir
        self.results: dict[str, Scores] = {}
        self._step = jit_predict_step(trainer.task, trainer.state_shardings.params, trainer.mesh, trainer.rules)

    def outputs(self, params: Any, split: SplitData) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """The task's mean metrics (loss, accuracy, ...) and every row's predictions for ``split``."""
        sums, rows = run_rows(self._step, params, eval_batches(split.features, self.batch_size), self.trainer.mesh,
                              len(split.features))
        return self.trainer.task.summarize(sums), rows

    def score(self, split: SplitData, rows: dict[str, np.ndarray]) -> Scores:
        """The task's scoring of ``split`` (no metrics for test splits), writing its prediction files."""
        return self.trainer.task.score(split, rows, self.benchmark,
                                       os.path.join(self.workdir, "predictions", split.name))

    def predict(self, params: Any, split: SplitData) -> Scores:
        """Scores ``split`` (no metrics for test splits) and writes its prediction files."""
        return self.score(split, self.outputs(params, split)[1])

    def __call__(self, params: Any) -> dict[str, float]:
        flat = {}
        for split in self.splits:
            means, rows = self.outputs(params, split)
            self.results[split.name] = self.score(split, rows)
            flat.update({f"{split.name}/{k}": v for k, v in {**means, **self.results[split.name][0]}.items()})
        return flat
