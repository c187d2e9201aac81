"""Token classification (CoNLL-2003 NER): one tag per word, predicted at the word's first sub-token.

The head is dropout + a dense layer ``H -> num_labels`` on every position of the sequence output
(``classifier``). The loss averages the cross-entropy over the positions with ``label_weights == 1``
(each word's first sub-token); ``[CLS]``, ``[SEP]``, continuation pieces and padding carry none.
Entity-level F1 comes from the per-token predictions on the host (``conll.word_predictions`` then
``bert_jax.metrics.entity_scores``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.config import ModelConfig
from bert_jax.model import BertModel, encode_batch
from bert_jax.tasks.base import Metrics, classification_sums, safe_divide
from bert_jax.tasks.classification import FinetuneTask, head_dense
from data_pipelines import batch as batch_lib

Array = jax.Array


class TokenClassifier(nn.Module):
    """BERT, then dropout and ``classifier`` at every position: float32 logits ``[B, S, num_labels]``."""

    config: ModelConfig
    num_labels: int

    def setup(self):
        self.bert = BertModel(self.config)
        self.dropout = nn.Dropout(self.config.hidden_dropout)
        self.classifier = head_dense(self.config, self.num_labels, "classifier")

    def __call__(self, batch: Mapping[str, Array], deterministic: bool = True) -> Array:
        sequence, _ = encode_batch(self.bert, batch, deterministic)
        return self.classifier(self.dropout(sequence, deterministic=deterministic)).astype(jnp.float32)


class TaggingTask(FinetuneTask):
    """Token classification with labels on first sub-tokens.

    Metric sums: ``loss_sum``, ``correct`` and ``token_count`` (labelled positions).
    """

    name = "tagging"
    batch_fields = batch_lib.TAGGING_FIELDS
    metric_ratios = {"cross_entropy": ("loss_sum", "token_count"), "token_accuracy": ("correct", "token_count")}

    def __init__(self, model_config: ModelConfig, num_labels: int):
        """Args:
          model_config: the encoder's hyperparameters.
          num_labels: size of the tag set (9 for CoNLL-2003).
        """
        if num_labels < 2:
            raise ValueError(f"num_labels={num_labels} must be >= 2 for tagging")
        self.num_labels = num_labels
        super().__init__(model_config)

    def build_model(self) -> nn.Module:
        return TokenClassifier(self.model_config, self.num_labels)

    def batch_dims(self, batch_size: int, seq_len: int) -> dict[str, int]:
        return {"B": batch_size, "S": seq_len}

    def metric_sums(self, outputs: Array, batch: Mapping[str, Array]) -> Metrics:
        """Sums from logits ``[B, S, num_labels]``."""
        return dict(zip(("loss_sum", "correct", "token_count"),
                        classification_sums(outputs, batch["labels"], batch["label_weights"])))

    def denominators(self, batch: Mapping[str, Array]) -> Metrics:
        return {"token_count": jnp.sum(jnp.asarray(batch["label_weights"], jnp.float32))}

    def loss_from_sums(self, sums: Mapping[str, Any]) -> Array:
        return safe_divide(sums["loss_sum"], sums["token_count"])

    def predictions(self, outputs: Array, batch: Mapping[str, Array]) -> dict[str, Array]:
        """``{"predicted_ids": int32 [B, S]}``: the argmax tag at every position."""
        return {"predicted_ids": jnp.argmax(outputs, axis=-1).astype(jnp.int32)}
