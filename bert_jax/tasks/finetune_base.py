"""What every fine-tuning task shares: :class:`FinetuneTask`, the per-kind behaviour the driver calls.

A fine-tuning task is a ``Task`` (loss and metric sums on device) that also knows, for its kind of head,
everything the fine-tuning driver (``bert_jax/finetune.py``) and ``bert_jax/predict.py`` must do on the
host, so neither switches on the kind:

* :meth:`FinetuneTask.input_example`: one example from a prediction input record (``input_fields``);
* :meth:`FinetuneTask.for_data`: the task sized for a benchmark (classes, candidates);
* :meth:`FinetuneTask.featurize_options`: options the task adds to the reader's featurisation;
* :meth:`FinetuneTask.fold_labels`: the labels k-fold cross-validation stratifies on;
* :meth:`FinetuneTask.predictions`: per-row arrays from the model's outputs (on device);
* :meth:`FinetuneTask.decode`: those rows turned into one prediction record per example;
* :meth:`FinetuneTask.score`: the benchmark's metrics and its prediction files for a split.
"""

from __future__ import annotations

import abc
import csv
import dataclasses
import io
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import jax
import numpy as np

from bert_jax import fileio
from bert_jax.config import ModelConfig
from bert_jax.tasks.base import Task

Array = jax.Array
Scores = tuple[dict[str, float], dict[str, str]]  # (metric -> value, file kind -> path)


@dataclasses.dataclass
class SplitData:
    """One split, read and featurised.

    Attributes:
      name: the split's name (``validation``, ``test``, ``heldout``, ``input``, ...).
      examples: the reader's examples, in order.
      features: their rows (``data_pipelines.finetune.features.FeatureSet``; several windows per
        example for SQuAD and long CoNLL sentences).
      is_test: unlabelled: predicted, never scored.
    """

    name: str
    examples: list
    features: Any
    is_test: bool = False


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """What a task needs to know of the data it is scored on.

    Attributes:
      task_name: the reader's task name (``glue/mrpc``, ``squad/v2.0``, ``conll2003``, ``local_text``, ...).
      label_names: class names in index order (None for regression, spans and multiple choice).
      decode: the SQuAD decoding options (``n_best_size``, ``max_answer_length``,
        ``null_score_diff_threshold``), or None.
    """

    task_name: str
    label_names: tuple[str, ...] | None = None
    decode: Mapping[str, Any] | None = None


def write_tsv(path: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Writes a tab-separated file (quoted where a value holds a tab); returns its path."""
    text = io.StringIO()
    writer = csv.writer(text, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(header)
    writer.writerows(rows)
    return fileio.write_text(path, text.getvalue())


def required_text(record: Mapping[str, Any], names: Sequence[str], where: str) -> str:
    """The first of ``names`` present in ``record`` as a non-empty string; ValueError naming ``where``."""
    for name in names:
        value = record.get(name)
        if isinstance(value, str) and value.strip():
            return value
    raise ValueError(f"{where}: needs a non-empty {' or '.join(repr(n) for n in names)} field")


def softmax(logits: np.ndarray) -> np.ndarray:
    """float64 probabilities over the last axis of host ``logits [..., C]``."""
    shifted = np.asarray(logits, np.float64) - np.max(logits, axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / np.sum(exp, axis=-1, keepdims=True)


class FinetuneTask(Task):
    """A fine-tuning objective: a ``Task`` whose outputs also become predictions, metrics and files.

    Subclasses implement :meth:`predictions` (device), :meth:`decode` and :meth:`score` (host), and
    :meth:`for_data` when their size comes from the data.
    """

    # The fields of a prediction input record, in the column order of a TSV line; the last one of a
    # field ending in "s" (multiple choice "endings") takes the remaining columns.
    input_fields: ClassVar[tuple[str, ...]]

    @classmethod
    @abc.abstractmethod
    def input_example(cls, index: int, where: str, record: Mapping[str, Any]) -> Any:
        """One unlabelled example of this task from an input record (``bert_jax/predict.py``).

        Args:
          index: the record's position in the input.
          where: ``file:line`` for messages and as the example's id where the record has none.
          record: field -> value (``input_fields``).

        Raises:
          ValueError: naming ``where`` and the field when a required field is missing or empty.
        """

    @classmethod
    def for_data(cls, model_config: ModelConfig, *, label_names: Sequence[str] | None, train_features: Any,
                 pooling: str = "cls") -> FinetuneTask:
        """This task sized for a benchmark.

        Args:
          model_config: the encoder's hyperparameters.
          label_names: the benchmark's class names (None where there are none).
          train_features: the featurised train split (gives e.g. the number of candidates).
          pooling: the sentence vector of the pooled heads (``"cls"`` or ``"mean"``).
        """
        del label_names, train_features, pooling
        return cls(model_config)

    @classmethod
    def featurize_options(cls, options: Mapping[str, Any], *, training: bool) -> dict[str, Any]:
        """The reader's featurisation options for a split (``training``: the train split)."""
        del training
        return dict(options)

    @classmethod
    def fold_labels(cls, examples: Sequence[Any]) -> list | None:
        """The labels k-fold cross-validation stratifies on, or None (unstratified folds)."""
        del examples
        return None

    @abc.abstractmethod
    def predictions(self, outputs: Any, batch: Mapping[str, Array]) -> dict[str, Array]:
        """Per-row prediction arrays (leading dimension ``B``) from the model's outputs."""

    @abc.abstractmethod
    def decode(self, split: SplitData, outputs: Mapping[str, np.ndarray], benchmark: Benchmark) -> list[dict]:
        """One JSON-ready prediction record per example of ``split``, in example order.

        Args:
          split: the examples and their rows.
          outputs: :meth:`predictions` of every row, in row order (host arrays).
          benchmark: task name, class names and decoding options.
        """

    @abc.abstractmethod
    def score(self, split: SplitData, outputs: Mapping[str, np.ndarray], benchmark: Benchmark,
              out_dir: str) -> Scores:
        """The benchmark's metrics (none for test splits) and the split's prediction files in ``out_dir``.

        Returns:
          ``(metrics, files)``: metric name -> value, file kind -> path.
        """
