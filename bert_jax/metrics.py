"""Fine-tuning metrics as the benchmarks define them (NumPy / SciPy only; no jax).

* GLUE (:func:`glue_metrics`): accuracy; F1 of the positive class plus accuracy for MRPC and QQP;
  Matthews correlation for CoLA (and AX); Pearson and Spearman correlation for STS-B. Values are
  fractions (0..1), not percentages. :func:`summarize_over_seeds` gives mean/std over runs.
* CoNLL NER (:func:`entity_scores`): entity-level precision/recall/F1 as ``conlleval`` computes them;
  an entity counts only when its type and exact span match. Chunks are read with conlleval's
  start/end-of-chunk rules (extended to E-/S- tags as seqeval does), so IOB1, IOB2 (BIO) and IOBES
  all work and an ``I-`` tag after ``O`` or after another type starts a new entity.
* SQuAD (:func:`squad_v1_scores`, :func:`squad_v2_scores`): EM and F1 exactly as the official v1.1
  and v2.0 evaluation scripts compute them (percentages, as the scripts print).
"""

from __future__ import annotations

import collections
import logging
import re
import string
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats as scipy_stats

from data_pipelines.finetune import glue

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# GLUE
# ---------------------------------------------------------------------------------------------

GLUE_METRICS: dict[str, tuple[str, ...]] = {
    "cola": ("matthews_corr",),
    "sst2": ("accuracy",),
    "mrpc": ("f1", "accuracy"),
    "stsb": ("pearson", "spearman"),
    "qqp": ("f1", "accuracy"),
    "mnli": ("accuracy",),
    "mnli_matched": ("accuracy",),
    "mnli_mismatched": ("accuracy",),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    "wnli": ("accuracy",),
    "ax": ("matthews_corr",),
}


def _pair(predictions, labels) -> tuple[np.ndarray, np.ndarray]:
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape or predictions.ndim != 1:
        raise ValueError(f"predictions {predictions.shape} and labels {labels.shape} must be equal 1-D shapes")
    if predictions.size == 0:
        raise ValueError("no predictions to score")
    return predictions, labels


def accuracy(predictions, labels) -> float:
    """Fraction of ``predictions == labels`` (int ``[N]`` each)."""
    predictions, labels = _pair(predictions, labels)
    return float(np.mean(predictions == labels))


def binary_f1(predictions, labels, positive: int = 1) -> float:
    """F1 of class ``positive``; 0.0 when there are no true positives (scikit-learn's convention)."""
    predictions, labels = _pair(predictions, labels)
    true_positives = np.sum((predictions == positive) & (labels == positive))
    predicted, actual = np.sum(predictions == positive), np.sum(labels == positive)
    return float(2 * true_positives / (predicted + actual)) if true_positives else 0.0


def confusion_matrix(predictions, labels, num_classes: int) -> np.ndarray:
    """int64 ``[C, C]`` counts: row = true class, column = predicted class (scikit-learn's layout)."""
    predictions, labels = _pair(predictions, labels)
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (labels.astype(np.int64), predictions.astype(np.int64)), 1)
    return matrix


def macro_f1(predictions, labels, num_classes: int) -> float:
    """The unweighted mean over ``num_classes`` classes of each class's F1 (a class with no true
    positives scores 0, as scikit-learn's ``f1_score(average='macro', zero_division=0)`` does)."""
    matrix = confusion_matrix(predictions, labels, num_classes).astype(np.float64)
    true_positives, predicted, actual = np.diag(matrix), matrix.sum(axis=0), matrix.sum(axis=1)
    f1 = np.divide(2 * true_positives, predicted + actual, out=np.zeros(num_classes), where=true_positives > 0)
    return float(np.mean(f1))


def matthews_corr(predictions, labels) -> float:
    """Matthews correlation coefficient (multi-class form, Gorodkin 2004); 0.0 when undefined."""
    predictions, labels = _pair(predictions, labels)
    classes, encoded = np.unique(np.concatenate([labels, predictions]), return_inverse=True)
    k = len(classes)
    confusion = np.zeros((k, k), np.float64)
    np.add.at(confusion, (encoded[: len(labels)], encoded[len(labels) :]), 1)
    t, p = confusion.sum(axis=1), confusion.sum(axis=0)  # true / predicted counts per class
    n, correct = confusion.sum(), np.trace(confusion)
    denominator = np.sqrt((n * n - p @ p) * (n * n - t @ t))
    return float((correct * n - t @ p) / denominator) if denominator else 0.0


def pearson(predictions, labels) -> float:
    """Pearson correlation of float scores (NaN when either side is constant)."""
    predictions, labels = _pair(predictions, labels)
    x, y = predictions.astype(np.float64), labels.astype(np.float64)
    x, y = x - x.mean(), y - y.mean()
    denominator = np.sqrt((x @ x) * (y @ y))
    return float(x @ y / denominator) if denominator else float("nan")


def spearman(predictions, labels) -> float:
    """Spearman rank correlation: Pearson of the ranks (ties get their average rank)."""
    predictions, labels = _pair(predictions, labels)
    return pearson(scipy_stats.rankdata(predictions), scipy_stats.rankdata(labels))


_METRIC_FUNCTIONS = {
    "accuracy": accuracy,
    "f1": binary_f1,
    "matthews_corr": matthews_corr,
    "pearson": pearson,
    "spearman": spearman,
}


def glue_metrics(task: str, predictions, labels) -> dict[str, float]:
    """The GLUE metrics of one task.

    Args:
      task: any spelling ``data_pipelines.finetune.glue.canonical_task_name`` accepts.
      predictions: class indices int ``[N]`` (float scores for STS-B).
      labels: gold class indices int ``[N]`` (float scores for STS-B).

    Returns:
      Metric name -> value (fractions), e.g. ``{'f1': 0.88, 'accuracy': 0.84}`` for MRPC.
    """
    names = GLUE_METRICS[glue.canonical_task_name(task)]
    return {name: _METRIC_FUNCTIONS[name](predictions, labels) for name in names}


def glue_task_score(task: str, metrics: Mapping[str, float]) -> float:
    """The task's single leaderboard number: the mean of its metrics (e.g. MRPC (F1 + acc) / 2)."""
    names = GLUE_METRICS[glue.canonical_task_name(task)]
    return float(np.mean([metrics[name] for name in names]))


def summarize_over_seeds(runs: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Mean, sample standard deviation (ddof=1; 0 for one run), min, max and n of each metric.

    Args:
      runs: one metrics dict per seed, all with the same keys.

    Raises:
      ValueError: when runs are empty or their keys differ (naming the run).
    """
    if not runs:
        raise ValueError("no runs to summarise")
    keys = set(runs[0])
    for i, run in enumerate(runs):
        if set(run) != keys:
            raise ValueError(f"run {i} has metrics {sorted(run)} but run 0 has {sorted(keys)}")
    summary = {}
    for key in sorted(keys):
        values = np.asarray([run[key] for run in runs], np.float64)
        summary[key] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "min": float(values.min()),
            "max": float(values.max()),
            "n": len(values),
        }
    return summary


# ---------------------------------------------------------------------------------------------
# CoNLL entity-level scores (conlleval)
# ---------------------------------------------------------------------------------------------


def _split_tag(tag: str, where: str) -> tuple[str, str]:
    if tag == "O":
        return "O", ""
    prefix, dash, entity_type = tag.partition("-")
    if not dash or prefix not in ("B", "I", "E", "S") or not entity_type:
        raise ValueError(f"{where}: tag {tag!r} is not 'O' or B-/I-/E-/S- followed by a type")
    return prefix, entity_type


def _chunk_ends(prev_tag: str, tag: str, prev_type: str, entity_type: str) -> bool:
    """conlleval's endOfChunk: does the chunk ending at the previous token end there?"""
    if prev_tag in ("E", "S") or (prev_tag in ("B", "I") and tag in ("B", "S", "O")):
        return True
    return prev_tag != "O" and prev_type != entity_type


def _chunk_starts(prev_tag: str, tag: str, prev_type: str, entity_type: str) -> bool:
    """conlleval's startOfChunk: does a chunk start at the current token?"""
    if tag in ("B", "S") or (prev_tag in ("E", "S", "O") and tag in ("E", "I")):
        return True
    return tag != "O" and prev_type != entity_type


def conll_entities(tags: Sequence[str], where: str = "sequence") -> set[tuple[str, int, int]]:
    """The entities of one tag sequence as ``(type, first, last)`` token positions (inclusive).

    Raises:
      ValueError: naming ``where`` and the position of a tag that is not ``O`` or ``X-TYPE``.
    """
    entities = set()
    prev_tag, prev_type, start = "O", "", None
    for i, tag in enumerate([*tags, "O"]):
        prefix, entity_type = _split_tag(tag, f"{where}, token {i}")
        if start is not None and _chunk_ends(prev_tag, prefix, prev_type, entity_type):
            entities.add((prev_type, start, i - 1))
            start = None
        if _chunk_starts(prev_tag, prefix, prev_type, entity_type):
            start = i
        prev_tag, prev_type = prefix, entity_type
    return entities


def _prf(correct: int, predicted: int, gold: int) -> dict[str, float]:
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": gold}


def entity_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict:
    """Entity-level precision / recall / F1 over sentences, as conlleval reports them.

    Args:
      gold: gold tag sequences, one per sentence (entities never cross sentences).
      predicted: predicted tag sequences, same lengths.

    Returns:
      ``{'precision', 'recall', 'f1'}`` (fractions), ``'accuracy'`` (token level), the counts
      ``'gold_entities'``, ``'predicted_entities'``, ``'correct_entities'``, and ``'per_type'``:
      type -> ``{'precision', 'recall', 'f1', 'support'}``.

    Raises:
      ValueError: naming the sentence when lengths differ or a tag is malformed.
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted")
    counts = {"gold": collections.Counter(), "predicted": collections.Counter(), "correct": collections.Counter()}
    tokens = correct_tokens = 0
    for i, (gold_tags, predicted_tags) in enumerate(zip(gold, predicted)):
        if len(gold_tags) != len(predicted_tags):
            raise ValueError(f"sentence {i}: {len(gold_tags)} gold tags but {len(predicted_tags)} predicted")
        gold_entities = conll_entities(gold_tags, f"gold sentence {i}")
        predicted_entities = conll_entities(predicted_tags, f"predicted sentence {i}")
        for name, entities in (("gold", gold_entities), ("predicted", predicted_entities),
                               ("correct", gold_entities & predicted_entities)):
            counts[name].update(entity[0] for entity in entities)
        tokens += len(gold_tags)
        correct_tokens += sum(g == p for g, p in zip(gold_tags, predicted_tags))
    totals = {name: sum(counter.values()) for name, counter in counts.items()}
    result = _prf(totals["correct"], totals["predicted"], totals["gold"])
    del result["support"]
    result.update(
        accuracy=correct_tokens / tokens if tokens else 0.0,
        gold_entities=totals["gold"],
        predicted_entities=totals["predicted"],
        correct_entities=totals["correct"],
        per_type={
            entity_type: _prf(counts["correct"][entity_type], counts["predicted"][entity_type], counts["gold"][entity_type])
            for entity_type in sorted(set(counts["gold"]) | set(counts["predicted"]))
        },
    )
    return result


# ---------------------------------------------------------------------------------------------
# SQuAD (official evaluation scripts v1.1 and v2.0)
# ---------------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation, drop the articles a/an/the, collapse whitespace (official)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def squad_exact_match(prediction: str, ground_truth: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def squad_f1(prediction: str, ground_truth: str, *, version_2: bool = False) -> float:
    """Token-overlap F1 of the normalised strings (``Counter`` intersection).

    With ``version_2`` (the v2.0 script), two empty answers score 1 and one empty answer scores 0;
    the v1.1 script scores any empty side 0.
    """
    prediction_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(ground_truth).split()
    if version_2 and (not prediction_tokens or not gold_tokens):
        return float(prediction_tokens == gold_tokens)
    num_same = sum((collections.Counter(prediction_tokens) & collections.Counter(gold_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_v1_scores(gold: Mapping[str, Sequence[str]], predictions: Mapping[str, str]) -> dict[str, float]:
    """The SQuAD v1.1 script: ``{'exact_match', 'f1'}`` in percent, max over each question's answers.

    Args:
      gold: question id -> gold answer texts (``data_pipelines.finetune.squad.gold_answers``).
      predictions: question id -> predicted text. A missing question scores 0 (and is logged).
    """
    exact = f1 = 0.0
    missing = [qid for qid in gold if qid not in predictions]
    if missing:
        logger.warning("%d questions have no prediction and score 0, e.g. %s", len(missing), missing[:3])
    for qid, answers in gold.items():
        if qid not in predictions:
            continue
        exact += max(squad_exact_match(predictions[qid], answer) for answer in answers)
        f1 += max(squad_f1(predictions[qid], answer) for answer in answers)
    return {"exact_match": 100.0 * exact / len(gold), "f1": 100.0 * f1 / len(gold)}


def _best_threshold(
    predictions: Mapping[str, str], scores: Mapping[str, float], na_probs: Mapping[str, float], has_answer: Mapping[str, bool]
) -> tuple[float, float]:
    """The v2.0 script's find_best_thresh: sweep the no-answer threshold over the sorted na_probs."""
    score = best_score = sum(1 for qid in has_answer if not has_answer[qid])
    best_threshold = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        if has_answer[qid]:
            score += scores[qid]
        else:
            score += -1 if predictions[qid] else 0
        if score > best_score:
            best_score, best_threshold = score, na_probs[qid]
    return 100.0 * best_score / len(scores), best_threshold


def squad_v2_scores(
    gold: Mapping[str, Sequence[str]],
    predictions: Mapping[str, str],
    na_probs: Mapping[str, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> dict[str, float]:
    """The SQuAD v2.0 script's output dict.

    Args:
      gold: question id -> gold answer texts, ``[]`` for unanswerable questions (whose only gold is
        then ``''``; answers that normalise to empty are dropped as the script does).
      predictions: question id -> predicted text (``''`` = no answer). Every question needs one.
      na_probs: question id -> no-answer score (``null_odds.json``); None: all 0 and no threshold
        search.
      na_prob_thresh: a question whose na_prob exceeds it counts as answered ``''``.

    Returns:
      ``exact``, ``f1``, ``total``; ``HasAns_exact``/``_f1``/``_total`` and ``NoAns_*`` when such
      questions exist; with ``na_probs``: ``best_exact``, ``best_exact_thresh``, ``best_f1``,
      ``best_f1_thresh``. Scores in percent.

    Raises:
      ValueError: when questions lack a prediction (the official script fails on them too).
    """
    missing = [qid for qid in gold if qid not in predictions]
    if missing:
        raise ValueError(f"{len(missing)} questions have no prediction, e.g. {missing[:3]}")
    has_answer = {qid: bool(answers) for qid, answers in gold.items()}
    exact_raw, f1_raw = {}, {}
    for qid, answers in gold.items():
        answers = [a for a in answers if normalize_answer(a)] or [""]
        exact_raw[qid] = max(squad_exact_match(predictions[qid], a) for a in answers)
        f1_raw[qid] = max(squad_f1(predictions[qid], a, version_2=True) for a in answers)
    threshold_probs = na_probs if na_probs is not None else {qid: 0.0 for qid in predictions}

    def thresholded(raw: Mapping[str, float]) -> dict[str, float]:
        return {
            qid: float(not has_answer[qid]) if threshold_probs[qid] > na_prob_thresh else score
            for qid, score in raw.items()
        }

    exact, f1 = thresholded(exact_raw), thresholded(f1_raw)

    def summary(qids: Sequence[str]) -> dict[str, float]:
        return {
            "exact": 100.0 * sum(exact[q] for q in qids) / len(qids),
            "f1": 100.0 * sum(f1[q] for q in qids) / len(qids),
            "total": len(qids),
        }

    result = summary(list(exact))
    for prefix, wanted in (("HasAns", True), ("NoAns", False)):
        qids = [qid for qid, has in has_answer.items() if has == wanted]
        if qids:
            result.update({f"{prefix}_{k}": v for k, v in summary(qids).items()})
    if na_probs is not None:
        result["best_exact"], result["best_exact_thresh"] = _best_threshold(predictions, exact_raw, na_probs, has_answer)
        result["best_f1"], result["best_f1_thresh"] = _best_threshold(predictions, f1_raw, na_probs, has_answer)
    return result
