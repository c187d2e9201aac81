"""Token classification (CoNLL-2003 NER): one tag per word, predicted at the word's first sub-token.

The head is dropout + a dense layer ``H -> num_labels`` on every position of the sequence output
(``classifier``, :class:`bert_jax.heads.TokenClassifier`). The loss averages the cross-entropy over
the positions with ``label_weights == 1`` (each word's first sub-token); ``[CLS]``, ``[SEP]``,
continuation pieces and padding carry none.
Entity-level F1 comes from the per-token predictions on the host (``conll.word_predictions`` then
``bert_jax.metrics.entity_scores``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax import fileio, metrics
from bert_jax.config import ModelConfig
from bert_jax.heads import TokenClassifier
from bert_jax.tasks.base import Metrics, classification_sums, safe_divide
from bert_jax.tasks.finetune_base import Benchmark, FinetuneTask, Scores, SplitData, required_text
from data_pipelines import batch as batch_lib
from data_pipelines.finetune import conll

Array = jax.Array


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

    input_fields = ("text",)

    @classmethod
    def input_example(cls, index: int, where: str, record: Mapping[str, Any]) -> conll.TaggedSentence:
        """A sentence: ``words`` (a list) or ``text`` split at whitespace; its tags are placeholders."""
        del index
        words = record.get("words")
        if not isinstance(words, list) or not words:
            words = required_text(record, ("text",), where).split()
        words = tuple(str(w) for w in words)
        return conll.TaggedSentence(where, words, ("O",) * len(words))

    @classmethod
    def for_data(cls, model_config, *, label_names, train_features, pooling="cls") -> TaggingTask:
        del train_features, pooling
        return cls(model_config, num_labels=len(label_names))

    def predictions(self, outputs: Array, batch: Mapping[str, Array]) -> dict[str, Array]:
        """``{"predicted_ids": int32 [B, S]}``: the argmax tag at every position."""
        return {"predicted_ids": jnp.argmax(outputs, axis=-1).astype(jnp.int32)}

    @staticmethod
    def _word_tags(split: SplitData, outputs, benchmark: Benchmark) -> list[list[str]]:
        return conll.word_predictions(split.examples, split.features, outputs["predicted_ids"], benchmark.label_names)

    def decode(self, split: SplitData, outputs, benchmark: Benchmark) -> list[dict]:
        """``{"id", "words", "tags"}`` per sentence: one tag per word."""
        return [{"id": s.guid, "words": list(s.words), "tags": list(tags)}
                for s, tags in zip(split.examples, self._word_tags(split, outputs, benchmark))]

    def score(self, split: SplitData, outputs, benchmark: Benchmark, out_dir: str) -> Scores:
        """``predictions.conll`` (conlleval's ``word gold predicted`` lines) and entity-level scores."""
        predicted_tags = self._word_tags(split, outputs, benchmark)
        lines = []  # a blank line after each sentence
        for sentence, tags in zip(split.examples, predicted_tags):
            lines.extend(f"{w} {g} {p}\n" for w, g, p in zip(sentence.words, sentence.tags, tags))
            lines.append("\n")
        files = {"predictions": fileio.write_text(os.path.join(out_dir, "predictions.conll"), "".join(lines))}
        if split.is_test:
            return {}, files
        scores = metrics.entity_scores([s.tags for s in split.examples], predicted_tags)
        result = {k: float(scores[k]) for k in ("precision", "recall", "f1", "accuracy")}
        result.update({f"f1_{t}": v["f1"] for t, v in scores["per_type"].items()})
        return result, files
