"""The pretraining objective: masked-LM cross-entropy plus (optionally) next-sentence prediction."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax import models
from bert_jax.config import ModelConfig
from bert_jax.heads import PreTrainingModel
from bert_jax.tasks.base import Metrics, Task, classification_sums, real_examples, safe_divide
from data_pipelines import batch as batch_lib

Array = jax.Array


class PretrainingTask(Task):
    """BERT pretraining: MLM over the real masked positions + ``nsp_weight`` x NSP.

    Loss = sum of MLM cross-entropies / number of real predictions (``masked_lm_weights``) of the
    batch + ``nsp_weight`` x mean NSP cross-entropy over the real rows. With ``nsp_weight=0`` (packed,
    RoBERTa-style data whose ``next_sentence_label`` means nothing) NSP metrics are not reported.

    Metric sums: ``mlm_loss_sum, mlm_correct, mlm_weight`` and, with NSP,
    ``nsp_loss_sum, nsp_correct, nsp_count``.
    """

    name = "pretraining"
    batch_fields = batch_lib.PRETRAINING_FIELDS
    metric_ratios = {
        "mlm_loss": ("mlm_loss_sum", "mlm_weight"),
        "mlm_accuracy": ("mlm_correct", "mlm_weight"),
        "nsp_loss": ("nsp_loss_sum", "nsp_count"),
        "nsp_accuracy": ("nsp_correct", "nsp_count"),
    }

    def __init__(self, model_config: ModelConfig, max_predictions: int = 20, nsp_weight: float = 1.0):
        """Args:
          model_config: the encoder's hyperparameters.
          max_predictions: ``P``, masked positions per sequence in the batches (for ``init_batch``).
          nsp_weight: weight of the NSP loss; 0 disables NSP.
        """
        if max_predictions < 1:
            raise ValueError(f"max_predictions={max_predictions} must be >= 1")
        if nsp_weight < 0:
            raise ValueError(f"nsp_weight={nsp_weight} must be >= 0")
        if nsp_weight and not models.get(model_config.architecture).nsp:
            raise ValueError(f"model.architecture={model_config.architecture!r} has no NSP head; "
                             f"set task.nsp_weight=0 (got {nsp_weight})")
        self.max_predictions = max_predictions
        self.nsp_weight = float(nsp_weight)
        super().__init__(model_config)

    def build_model(self) -> nn.Module:
        return PreTrainingModel(self.model_config)

    def batch_dims(self, batch_size: int, seq_len: int) -> dict[str, int]:
        return {"B": batch_size, "S": seq_len, "P": self.max_predictions}

    def metric_sums(self, outputs: Mapping[str, Array], batch: Mapping[str, Array]) -> Metrics:
        """Sums from ``{"mlm_logits": [B, P, V], "nsp_logits": [B, 2]}`` on a pretraining batch."""
        sums = dict(zip(
            ("mlm_loss_sum", "mlm_correct", "mlm_weight"),
            classification_sums(outputs["mlm_logits"], batch["masked_lm_ids"], batch["masked_lm_weights"])))
        if self.nsp_weight:
            sums.update(zip(
                ("nsp_loss_sum", "nsp_correct", "nsp_count"),
                classification_sums(outputs["nsp_logits"], batch["next_sentence_label"], real_examples(batch))))
        return sums

    def denominators(self, batch: Mapping[str, Array]) -> Metrics:
        denominators = {"mlm_weight": jnp.sum(jnp.asarray(batch["masked_lm_weights"], jnp.float32))}
        if self.nsp_weight:
            denominators["nsp_count"] = jnp.sum(real_examples(batch))
        return denominators

    def loss_from_sums(self, sums: Mapping[str, Any]) -> Array:
        loss = safe_divide(sums["mlm_loss_sum"], sums["mlm_weight"])
        if self.nsp_weight:
            loss = loss + self.nsp_weight * safe_divide(sums["nsp_loss_sum"], sums["nsp_count"])
        return loss
