"""Fine-tuning heads on the pooled ``[CLS]`` output: sequence classification and regression.

Every fine-tuning model keeps the encoder under ``bert`` (so pretraining checkpoints and Hugging Face
weights load into it unchanged) and adds its head beside it, named as Hugging Face names it
(``classifier`` here and for tagging/multiple choice, ``qa_outputs`` for spans). Heads start from
BERT's truncated-normal initialisation and see dropout (``hidden_dropout``) on their input, as in the
original ``run_classifier.py``.

This module also holds what every fine-tuning task shares: :class:`FinetuneTask` (a ``Task`` that can
also hand per-row predictions to the host) and :func:`head_dense`.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.config import ModelConfig
from bert_jax.model import CLASSES, EMBED, BertModel, encode_batch
from bert_jax.pooling import mean_pooling as mean_over_tokens  # Sentence-BERT mean pooling, float32 [B, H]
from bert_jax.tasks.base import Metrics, Task, classification_sums, real_examples, safe_divide
from data_pipelines import batch as batch_lib

Array = jax.Array


def head_dense(config: ModelConfig, features: int, name: str) -> nn.Dense:
    """A task head's output projection ``[..., H] -> [..., features]`` (kernel axes ``embed, classes``)."""
    return nn.Dense(
        features,
        dtype=config.compute_dtype,
        param_dtype=config.parameter_dtype,
        kernel_init=nn.with_logical_partitioning(nn.initializers.truncated_normal(config.initializer_range),
                                                 (EMBED, CLASSES)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (CLASSES,)),
        name=name,
    )


def labelled_rows(batch: Mapping[str, Array], label_field: str = "label") -> Array:
    """float32 ``[B]``: 1 for real rows whose ``label`` is known (>= 0), 0 for padding and test rows."""
    return real_examples(batch) * (jnp.asarray(batch[label_field]) >= 0).astype(jnp.float32)


class FinetuneTask(Task):
    """A fine-tuning objective: a ``Task`` whose outputs also become per-row predictions.

    Subclasses implement :meth:`predictions`, the arrays the host needs to score a split with the
    benchmark's own metrics and to write prediction files (logits, scores, tag ids).
    """

    @abc.abstractmethod
    def predictions(self, outputs: Any, batch: Mapping[str, Array]) -> dict[str, Array]:
        """Per-row prediction arrays (leading dimension ``B``) from the model's outputs."""


POOLINGS = ("cls", "mean")


class PooledClassifier(nn.Module):
    """BERT, then dropout and a dense layer on a sentence vector.

    Attributes:
      config: the encoder's hyperparameters.
      num_outputs: classes (1 for regression and for multiple-choice scores).
      pooling: ``"cls"``, BERT's pooled output (tanh dense layer on ``[CLS]``), or ``"mean"``, the mean
        of the last hidden states over the real tokens (for Sentence-BERT encoders such as
        all-MiniLM-L6-v2, trained with mean pooling and never with their ``[CLS]`` pooler).
    """

    config: ModelConfig
    num_outputs: int
    pooling: str = "cls"

    def setup(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling={self.pooling!r}; expected one of {POOLINGS}")
        self.bert = BertModel(self.config)
        self.dropout = nn.Dropout(self.config.hidden_dropout)
        self.classifier = head_dense(self.config, self.num_outputs, "classifier")

    def __call__(self, batch: Mapping[str, Array], deterministic: bool = True) -> Array:
        """float32 ``[B, num_outputs]`` logits from the encoder fields of ``batch`` (``[B, S]`` each)."""
        sequence, pooled = encode_batch(self.bert, batch, deterministic)
        if self.pooling == "mean":
            pooled = mean_over_tokens(sequence, batch["input_mask"])
        return self.classifier(self.dropout(pooled, deterministic=deterministic)).astype(jnp.float32)


class ClassificationTask(FinetuneTask):
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

    def predictions(self, outputs: Array, batch: Mapping[str, Array]) -> dict[str, Array]:
        """``{"logits": float32 [B, num_labels]}``."""
        return {"logits": outputs}


class RegressionTask(FinetuneTask):
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
