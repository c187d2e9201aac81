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
import numpy as np

from bert_jax.config import ModelConfig
from bert_jax.heads import MultipleChoiceModel
from bert_jax.tasks.base import Metrics, classification_sums, safe_divide
from bert_jax.tasks.classification import score_predicted
from bert_jax.tasks.finetune_base import Benchmark, FinetuneTask, Scores, SplitData, required_text, softmax
from data_pipelines import batch as batch_lib
from data_pipelines.finetune import multiple_choice

Array = jax.Array


def labelled_examples(batch: Mapping[str, Array]) -> Array:
    """float32 ``[B]``: 1 for examples with a real candidate row and a known label."""
    real = jnp.max(batch["input_mask"], axis=(-2, -1)) > 0
    return (real & (jnp.asarray(batch["label"]) >= 0)).astype(jnp.float32)


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

    input_fields = ("context", "question", "endings")

    @classmethod
    def input_example(cls, index: int, where: str, record: Mapping[str, Any]) -> multiple_choice.MultipleChoiceExample:
        """A context, an optional ``question`` stem and two or more ``endings``."""
        del index
        endings = record.get("endings")
        if not isinstance(endings, list) or len(endings) < 2 or not all(isinstance(e, str) for e in endings):
            raise ValueError(f"{where}: needs 'endings', a list of two or more texts")
        return multiple_choice.MultipleChoiceExample(where, required_text(record, ("context",), where),
                                                     str(record.get("question") or ""), tuple(endings), None)

    @classmethod
    def for_data(cls, model_config, *, label_names, train_features, pooling="cls") -> MultipleChoiceTask:
        del label_names
        return cls(model_config, num_choices=train_features.arrays["input_ids"].shape[1], pooling=pooling)

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

    def decode(self, split: SplitData, outputs, benchmark: Benchmark) -> list[dict]:
        """``{"id", "choice", "probabilities": [p per candidate]}`` per example (``id``: its guid)."""
        del benchmark
        return [{"id": e.guid, "choice": int(np.argmax(p)), "probabilities": [float(q) for q in p]}
                for e, p in zip(split.examples, softmax(outputs["logits"]))]

    def score(self, split: SplitData, outputs, benchmark: Benchmark, out_dir: str) -> Scores:
        logits = outputs["logits"]
        return score_predicted(split, np.argmax(logits, axis=-1), [str(i) for i in range(logits.shape[-1])],
                               [e.guid for e in split.examples], benchmark, out_dir)
