"""Sentence (pair) classification and regression on the pooled ``[CLS]`` output (GLUE, local text).

The model is :class:`bert_jax.heads.PooledClassifier`; on the host, predictions become class names
(or scores), ``predictions.tsv``, GLUE submission files for test splits, and the GLUE metrics (for other
benchmarks accuracy, macro-F1 and the confusion matrix, ``confusion_matrix.tsv`` / ``.png``).
:func:`score_predicted` is shared with multiple choice.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import logs, metrics
from bert_jax.config import ModelConfig
from bert_jax.heads import PooledClassifier
from bert_jax.tasks.base import Metrics, classification_sums, real_examples, safe_divide
from bert_jax.tasks.finetune_base import (Benchmark, FinetuneTask, Scores, SplitData, required_text, softmax,
                                          write_tsv)
from data_pipelines import batch as batch_lib
from data_pipelines.finetune import features, glue

Array = jax.Array


def labelled_rows(batch: Mapping[str, Array], label_field: str = "label") -> Array:
    """float32 ``[B]``: 1 for real rows whose ``label`` is known (>= 0), 0 for padding and test rows."""
    return real_examples(batch) * (jnp.asarray(batch[label_field]) >= 0).astype(jnp.float32)


def _name(label_names: Sequence[str] | None, value: Any) -> str:
    if value is None:
        return ""
    return label_names[int(value)] if label_names else f"{float(value):.9g}"  # float32 exactly


class _TextPairInput:
    """Prediction input of the sentence (pair) tasks: ``text`` and, for pair tasks, ``text_b``."""

    input_fields = ("text", "text_b")

    @classmethod
    def input_example(cls, index: int, where: str, record: Mapping[str, Any]) -> features.TextPairExample:
        text_b = record.get("text_b") or record.get("sentence2") or None
        return features.TextPairExample(where, index, required_text(record, ("text", "text_a", "sentence1"), where),
                                        text_b, None)


def class_names(benchmark: Benchmark, num_classes: int) -> tuple[str, ...]:
    """The benchmark's class names, or ``"0" .. "C-1"`` when it has none."""
    return tuple(benchmark.label_names or [str(i) for i in range(num_classes)])


def score_predicted(split: SplitData, predicted: np.ndarray, names: Sequence[str] | None, ids: Sequence[Any],
                    benchmark: Benchmark, out_dir: str, *, confusion: bool = False) -> Scores:
    """``predictions.tsv`` (index, prediction, label), GLUE submissions of test splits, and the metrics.

    Args:
      split: the examples (``label`` None on test splits).
      predicted: ``[N]`` class ids, or float scores when ``names`` is None (regression).
      names: class names in index order, or None for scores.
      ids: the index column, one per example.
      benchmark: ``glue/*`` tasks get the GLUE metrics and submission files; others accuracy.
      out_dir: where the files go.
      confusion: for classes of a benchmark other than GLUE, also ``macro_f1`` and the confusion matrix
        (``confusion_matrix.tsv`` and ``confusion_matrix.png``, :func:`write_confusion`).
    """
    files = {"predictions": write_tsv(
        os.path.join(out_dir, "predictions.tsv"), ("index", "prediction", "label"),
        [(i, _name(names, p), _name(names, e.label)) for i, p, e in zip(ids, predicted, split.examples)])}
    is_glue = benchmark.task_name.startswith("glue/")
    if split.is_test and is_glue:
        files["submission"] = glue.write_glue_submission(benchmark.task_name, split.name, ids, predicted, out_dir)
    if split.is_test:
        return {}, files
    labels = np.asarray([e.label for e in split.examples])
    if is_glue:
        return metrics.glue_metrics(benchmark.task_name, predicted, labels), files
    scores = {"accuracy": metrics.accuracy(predicted, labels)}
    if names is not None and confusion:
        scores["macro_f1"] = metrics.macro_f1(predicted, labels, len(names))
        files.update(write_confusion(metrics.confusion_matrix(predicted, labels, len(names)), names, split.name,
                                     out_dir))
    return scores, files


def write_confusion(matrix: np.ndarray, names: Sequence[str], split_name: str, out_dir: str) -> dict[str, str]:
    """``confusion_matrix.tsv`` (true class per row, predicted per column, counts) and its PNG, in ``out_dir``."""
    table = write_tsv(os.path.join(out_dir, "confusion_matrix.tsv"), ("true \\ predicted", *names),
                      [(name, *map(int, row)) for name, row in zip(names, matrix)])
    png = logs.plot_confusion_matrix(matrix, names, os.path.join(out_dir, logs.CONFUSION_FILE),
                                     title=f"{split_name}: {int(np.trace(matrix))} of {int(matrix.sum())} correct")
    return {"confusion_matrix": table, "confusion_matrix_png": png}


class ClassificationTask(_TextPairInput, FinetuneTask):
    """Sentence (pair) classification, e.g. GLUE: softmax cross-entropy over ``num_labels`` classes.

    Rows with ``label == -1`` (test sets) and padding rows carry no loss. Metric sums:
    ``loss_sum``, ``correct``, ``count``.
    """

    name = "classification"
    batch_fields = batch_lib.CLASSIFICATION_FIELDS
    metric_ratios = {"cross_entropy": ("loss_sum", "count"), "accuracy": ("correct", "count")}

    def __init__(self, model_config: ModelConfig, num_labels: int, pooling: str = "cls"):
        """Args:
          model_config: the encoder's hyperparameters.
          num_labels: number of classes (>= 2).
          pooling: the sentence vector the head reads, ``"cls"`` or ``"mean"`` (``PooledClassifier``).
        """
        if num_labels < 2:
            raise ValueError(f"num_labels={num_labels} must be >= 2 for classification")
        self.num_labels, self.pooling = num_labels, pooling
        super().__init__(model_config)

    def build_model(self) -> nn.Module:
        return PooledClassifier(self.model_config, self.num_labels, self.pooling)

    def batch_dims(self, batch_size: int, seq_len: int) -> dict[str, int]:
        return {"B": batch_size, "S": seq_len}

    def metric_sums(self, outputs: Array, batch: Mapping[str, Array]) -> Metrics:
        """Sums from logits ``[B, num_labels]``."""
        return dict(zip(("loss_sum", "correct", "count"),
                        classification_sums(outputs, batch["label"], labelled_rows(batch))))

    def denominators(self, batch: Mapping[str, Array]) -> Metrics:
        return {"count": jnp.sum(labelled_rows(batch))}

    def loss_from_sums(self, sums: Mapping[str, Any]) -> Array:
        return safe_divide(sums["loss_sum"], sums["count"])

    @classmethod
    def for_data(cls, model_config, *, label_names, train_features, pooling="cls") -> ClassificationTask:
        del train_features
        return cls(model_config, num_labels=len(label_names), pooling=pooling)

    @classmethod
    def fold_labels(cls, examples) -> list:
        """Stratified folds: each fold keeps the class balance of the train split."""
        return [e.label for e in examples]

    def predictions(self, outputs: Array, batch: Mapping[str, Array]) -> dict[str, Array]:
        """``{"logits": float32 [B, num_labels]}``."""
        return {"logits": outputs}

    def decode(self, split: SplitData, outputs, benchmark: Benchmark) -> list[dict]:
        """``{"id", "label", "probabilities": {class name: p}}`` per example (``id``: its split index)."""
        names = class_names(benchmark, outputs["logits"].shape[-1])
        probabilities = softmax(outputs["logits"])
        return [{"id": e.index, "label": names[int(np.argmax(p))],
                 "probabilities": {name: float(q) for name, q in zip(names, p)}}
                for e, p in zip(split.examples, probabilities)]

    def score(self, split: SplitData, outputs, benchmark: Benchmark, out_dir: str) -> Scores:
        names = class_names(benchmark, outputs["logits"].shape[-1])
        return score_predicted(split, np.argmax(outputs["logits"], axis=-1), names,
                               [e.index for e in split.examples], benchmark, out_dir, confusion=True)


class RegressionTask(_TextPairInput, FinetuneTask):
    """Sentence-pair regression (STS-B): one score per row, mean squared error.

    Rows whose ``regression_target`` is NaN (test sets) and padding rows carry no loss. Metric sums:
    ``squared_error_sum``, ``count``.
    """

    name = "regression"
    batch_fields = batch_lib.REGRESSION_FIELDS
    metric_ratios = {"mse": ("squared_error_sum", "count")}

    def __init__(self, model_config: ModelConfig, pooling: str = "cls"):
        """Args:
          model_config: the encoder's hyperparameters.
          pooling: ``"cls"`` or ``"mean"`` (``PooledClassifier``).
        """
        self.pooling = pooling
        super().__init__(model_config)

    @classmethod
    def for_data(cls, model_config, *, label_names, train_features, pooling="cls") -> RegressionTask:
        del label_names, train_features
        return cls(model_config, pooling=pooling)

    def build_model(self) -> nn.Module:
        return PooledClassifier(self.model_config, 1, self.pooling)

    def batch_dims(self, batch_size: int, seq_len: int) -> dict[str, int]:
        return {"B": batch_size, "S": seq_len}

    @staticmethod
    def _weights(batch: Mapping[str, Array]) -> Array:
        return real_examples(batch) * jnp.isfinite(batch["regression_target"]).astype(jnp.float32)

    def metric_sums(self, outputs: Array, batch: Mapping[str, Array]) -> Metrics:
        """Sums from scores ``[B, 1]``."""
        weights = self._weights(batch)
        target = jnp.where(weights > 0, batch["regression_target"], 0.0)
        error = outputs[:, 0] - target
        return {"squared_error_sum": jnp.sum(weights * error * error), "count": jnp.sum(weights)}

    def denominators(self, batch: Mapping[str, Array]) -> Metrics:
        return {"count": jnp.sum(self._weights(batch))}

    def loss_from_sums(self, sums: Mapping[str, Any]) -> Array:
        return safe_divide(sums["squared_error_sum"], sums["count"])

    def predictions(self, outputs: Array, batch: Mapping[str, Array]) -> dict[str, Array]:
        """``{"score": float32 [B]}``."""
        return {"score": outputs[:, 0]}

    def decode(self, split: SplitData, outputs, benchmark: Benchmark) -> list[dict]:
        """``{"id", "score"}`` per example."""
        del benchmark
        return [{"id": e.index, "score": float(score)} for e, score in zip(split.examples, outputs["score"])]

    def score(self, split: SplitData, outputs, benchmark: Benchmark, out_dir: str) -> Scores:
        return score_predicted(split, outputs["score"], None, [e.index for e in split.examples], benchmark, out_dir)
