"""Extractive question answering (SQuAD): start and end logits over the tokens of each window.

The head is one dense layer ``H -> 2`` on every position of the sequence output (``qa_outputs``, as in
the original ``run_squad.py`` and Hugging Face). The loss is the mean of the start and end
cross-entropies over the row's positions; windows without the answer point at ``[CLS]`` (position 0),
which is also how SQuAD v2.0 learns "no answer" (``squad/v2.0`` benchmarks). Decoding into answer
texts happens on the host (``bert_jax.squad_decoding``) from :meth:`SpanTask.predictions`; scores are
the official EM/F1 (v2.0 also HasAns/NoAns and the best thresholds).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax import metrics, squad_decoding
from bert_jax.heads import SpanModel
from bert_jax.tasks.base import Metrics, classification_sums, real_examples, safe_divide
from bert_jax.tasks.finetune_base import Benchmark, FinetuneTask, Scores, SplitData, required_text
from data_pipelines import batch as batch_lib
from data_pipelines.finetune import squad

Array = jax.Array


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

    input_fields = ("question", "context")

    @classmethod
    def input_example(cls, index: int, where: str, record: Mapping[str, Any]) -> squad.SquadExample:
        """A question over a context (``id`` optional: ``where`` otherwise)."""
        del index
        return squad.SquadExample(str(record.get("id") or where), str(record.get("title") or ""),
                                  required_text(record, ("question",), where),
                                  required_text(record, ("context",), where), ())

    @classmethod
    def featurize_options(cls, options: Mapping[str, Any], *, training: bool) -> dict[str, Any]:
        """Training windows whose answer cannot be found are skipped (``is_training``)."""
        return {**options, "is_training": training}

    def predictions(self, outputs: Mapping[str, Array], batch: Mapping[str, Array]) -> dict[str, Array]:
        """``{"start_logits", "end_logits"}``: float32 ``[B, S]`` each."""
        return dict(outputs)

    @staticmethod
    def _decoded(split: SplitData, outputs, benchmark: Benchmark) -> squad_decoding.SquadPredictions:
        decode = benchmark.decode or {}
        return squad_decoding.decode_squad(
            split.examples, split.features.metadata, outputs["start_logits"], outputs["end_logits"],
            n_best_size=decode.get("n_best_size", 20), max_answer_length=decode.get("max_answer_length", 30),
            version_2_with_negative=benchmark.task_name.endswith("v2.0"),
            null_score_diff_threshold=decode.get("null_score_diff_threshold", 0.0))

    def decode(self, split: SplitData, outputs, benchmark: Benchmark) -> list[dict]:
        """``{"id", "answer", "probability"}`` per question (``answer`` ``""``: no answer, v2.0)."""
        decoded = self._decoded(split, outputs, benchmark)
        records = []
        for example in split.examples:
            answer = decoded.predictions[example.qas_id]
            best = next((c for c in decoded.nbest[example.qas_id] if c["text"] == answer), None)
            records.append({"id": example.qas_id, "answer": answer,
                            "probability": None if best is None else float(best["probability"])})
        return records

    def score(self, split: SplitData, outputs, benchmark: Benchmark, out_dir: str) -> Scores:
        """``predictions.json``, ``nbest_predictions.json`` (and v2.0 ``null_odds.json``); EM/F1."""
        decoded = self._decoded(split, outputs, benchmark)
        files = squad_decoding.write_squad_predictions(out_dir, decoded)
        if split.is_test:
            return {}, files
        gold = squad.gold_answers(split.examples)
        if decoded.null_odds is not None:
            return metrics.squad_v2_scores(gold, decoded.predictions, decoded.null_odds), files
        return metrics.squad_v1_scores(gold, decoded.predictions), files
