"""Extractive question answering (SQuAD): start and end logits over the tokens of each window.

The head is one dense layer ``H -> 2`` on every position of the sequence output (``qa_outputs``, as in
the original ``run_squad.py`` and Hugging Face). The loss is the mean of the start and end
cross-entropies over the row's positions; windows without the answer point at ``[CLS]`` (position 0),
which is also how SQuAD v2.0 learns "no answer". Decoding into answer texts happens on the host
(``bert_jax.squad_decoding``) from :meth:`SpanTask.predictions`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.config import ModelConfig
from bert_jax.model import BertModel, encode_batch
from bert_jax.tasks.base import Metrics, classification_sums, real_examples, safe_divide
from bert_jax.tasks.classification import FinetuneTask, head_dense
from data_pipelines import batch as batch_lib

Array = jax.Array


class SpanModel(nn.Module):
    """BERT with ``qa_outputs``: ``{"start_logits", "end_logits"}``, float32 ``[B, S]`` each."""

    config: ModelConfig

    def setup(self):
        self.bert = BertModel(self.config)
        self.qa_outputs = head_dense(self.config, 2, "qa_outputs")

    def __call__(self, batch: Mapping[str, Array], deterministic: bool = True) -> dict[str, Array]:
        sequence, _ = encode_batch(self.bert, batch, deterministic)
        logits = self.qa_outputs(sequence).astype(jnp.float32)
        return {"start_logits": logits[..., 0], "end_logits": logits[..., 1]}


class SpanTask(FinetuneTask):
    """SQuAD v1.1 / v2.0 span prediction.

    Metric sums: ``start_loss_sum``, ``end_loss_sum``, ``start_correct``, ``end_correct`` and
    ``count`` (real rows). Loss = (start + end cross-entropy) / 2, averaged over the real rows.
    """

    name = "span"
    batch_fields = batch_lib.SPAN_FIELDS
    metric_ratios = {
        "start_cross_entropy": ("start_loss_sum", "count"),
        "end_cross_entropy": ("end_loss_sum", "count"),
        "start_accuracy": ("start_correct", "count"),
        "end_accuracy": ("end_correct", "count"),
    }

    def build_model(self) -> nn.Module:
        return SpanModel(self.model_config)

    def batch_dims(self, batch_size: int, seq_len: int) -> dict[str, int]:
        return {"B": batch_size, "S": seq_len}

    def metric_sums(self, outputs: Mapping[str, Array], batch: Mapping[str, Array]) -> Metrics:
        weights = real_examples(batch)
        start_loss, start_correct, count = classification_sums(
            outputs["start_logits"], batch["start_positions"], weights)
        end_loss, end_correct, _ = classification_sums(outputs["end_logits"], batch["end_positions"], weights)
        return {"start_loss_sum": start_loss, "end_loss_sum": end_loss, "start_correct": start_correct,
                "end_correct": end_correct, "count": count}

    def denominators(self, batch: Mapping[str, Array]) -> Metrics:
        return {"count": jnp.sum(real_examples(batch))}

    def loss_from_sums(self, sums: Mapping[str, Any]) -> Array:
        return 0.5 * safe_divide(sums["start_loss_sum"] + sums["end_loss_sum"], sums["count"])

    def predictions(self, outputs: Mapping[str, Array], batch: Mapping[str, Array]) -> dict[str, Array]:
        """``{"start_logits", "end_logits"}``: float32 ``[B, S]`` each."""
        return dict(outputs)
