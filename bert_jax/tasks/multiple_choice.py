"""Multiple choice (SWAG): one score per candidate from the pooled output, softmax over the candidates.

A batch is ``[B, C, S]`` (``C`` candidate rows per example). The model runs BERT on the ``B * C`` rows,
scores each with ``classifier`` (dropout + dense ``H -> 1`` on the pooled ``[CLS]`` output, the
Hugging Face ``BertForMultipleChoice`` layout) and reshapes the scores to ``[B, C]`` logits; the loss
is the cross-entropy of the correct candidate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.config import ModelConfig
from bert_jax.tasks.base import Metrics, classification_sums, safe_divide
from bert_jax.tasks.classification import FinetuneTask, PooledClassifier
from data_pipelines import batch as batch_lib

Array = jax.Array


def labelled_examples(batch: Mapping[str, Array]) -> Array:
    """float32 ``[B]``: 1 for examples with a real candidate row and a known label."""
    real = jnp.max(batch["input_mask"], axis=(-2, -1)) > 0
    return (real & (jnp.asarray(batch["label"]) >= 0)).astype(jnp.float32)


class MultipleChoiceModel(PooledClassifier):
    """``PooledClassifier`` with one output, applied to every candidate: float32 logits ``[B, C]``."""

    def __call__(self, batch: Mapping[str, Array], deterministic: bool = True) -> Array:
        b, c, s = batch["input_ids"].shape
        rows = {name: batch[name].reshape(b * c, s) for name in batch_lib.ENCODER_FIELDS}
        return super().__call__(rows, deterministic).reshape(b, c)


class MultipleChoiceTask(FinetuneTask):
    """Choose the right ending among ``num_choices`` (4 for SWAG).

    Metric sums: ``loss_sum``, ``correct`` and ``count`` (labelled examples).
    """

    name = "multiple_choice"
    batch_fields = batch_lib.MULTIPLE_CHOICE_FIELDS
    metric_ratios = {"cross_entropy": ("loss_sum", "count"), "accuracy": ("correct", "count")}

    def __init__(self, model_config: ModelConfig, num_choices: int = 4, pooling: str = "cls"):
        """Args:
          model_config: the encoder's hyperparameters.
          num_choices: ``C``, candidates per example (for ``init_batch``; any ``C`` runs).
          pooling: ``"cls"`` or ``"mean"`` (``PooledClassifier``).
        """
        if num_choices < 2:
            raise ValueError(f"num_choices={num_choices} must be >= 2")
        self.num_choices, self.pooling = num_choices, pooling
        super().__init__(model_config)

    def build_model(self) -> nn.Module:
        return MultipleChoiceModel(self.model_config, 1, self.pooling)

    def batch_dims(self, batch_size: int, seq_len: int) -> dict[str, int]:
        return {"B": batch_size, "C": self.num_choices, "S": seq_len}

    def metric_sums(self, outputs: Array, batch: Mapping[str, Array]) -> Metrics:
        """Sums from logits ``[B, C]``."""
        return dict(zip(("loss_sum", "correct", "count"),
                        classification_sums(outputs, batch["label"], labelled_examples(batch))))

    def denominators(self, batch: Mapping[str, Array]) -> Metrics:
        return {"count": jnp.sum(labelled_examples(batch))}

    def loss_from_sums(self, sums: Mapping[str, Any]) -> Array:
        return safe_divide(sums["loss_sum"], sums["count"])

    def predictions(self, outputs: Array, batch: Mapping[str, Array]) -> dict[str, Array]:
        """``{"logits": float32 [B, C]}``."""
        return {"logits": outputs}
