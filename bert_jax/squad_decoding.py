"""SQuAD span decoding: start/end logits of document windows -> answer texts and prediction files.

Follows the original BERT ``write_predictions``:

* per window, the ``n_best_size`` highest start and end logits form candidate spans; a span is kept
  when both ends are context tokens, ``start <= end``, it is at most ``max_answer_length`` tokens and
  its start token has its max context in this window;
* candidates of all the question's windows compete on ``start_logit + end_logit``; the answer text is
  the context's characters from the start token's first to the end token's last character (offsets
  from featurisation, so the original casing and spacing come back);
* v2.0: the null score is ``start_logit[CLS] + end_logit[CLS]`` (the smallest over the windows); the
  null answer competes for the n-best list (and is appended if it did not make it), and the
  prediction is the best non-null text unless
  ``null_score - best_non_null_score > null_score_diff_threshold``. That difference is written to
  ``null_odds.json``; the official v2.0 evaluation's ``best_f1_thresh`` on that file is the threshold
  to use (with the default 0 this is "predict '' when best_non_null - null < 0").

Windows come from ``data_pipelines.finetune.squad.featurize_squad`` (its ``FeatureSet.metadata``);
logits are indexed by ``window_index``.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from collections.abc import Sequence

import numpy as np

from bert_jax import fileio
from data_pipelines.finetune.squad import SquadExample, SquadWindow


@dataclasses.dataclass(frozen=True)
class SquadPredictions:
    """Decoded answers.

    Attributes:
      predictions: question id -> answer text (``''`` = no answer, v2.0).
      nbest: question id -> up to n_best_size dicts ``{text, probability, start_logit, end_logit}``,
        best first (probabilities: softmax of ``start_logit + end_logit`` over the list).
      null_odds: v2.0 only: question id -> ``null_score - best_non_null_score``.
    """

    predictions: dict[str, str]
    nbest: dict[str, list[dict]]
    null_odds: dict[str, float] | None


def _best_indexes(logits: np.ndarray, n_best_size: int) -> np.ndarray:
    """Indexes of the ``n_best_size`` largest logits, largest first (stable on ties)."""
    return np.argsort(-logits, kind="stable")[:n_best_size]


def _window_candidates(
    window: SquadWindow, start_logits: np.ndarray, end_logits: np.ndarray, n_best_size: int, max_answer_length: int
) -> list[tuple[float, float, int, int]]:
    """``(start_logit, end_logit, start_char, end_char)`` of the valid spans of one window."""
    in_context = window.context_offsets[:, 0] >= 0
    candidates = []
    for start in _best_indexes(start_logits, n_best_size):
        if not (in_context[start] and window.is_max_context[start]):
            continue
        for end in _best_indexes(end_logits, n_best_size):
            if not in_context[end] or end < start or end - start + 1 > max_answer_length:
                continue
            candidates.append(
                (
                    float(start_logits[start]),
                    float(end_logits[end]),
                    int(window.context_offsets[start, 0]),
                    int(window.context_offsets[end, 1]),
                )
            )
    return candidates


def _softmax(scores: Sequence[float]) -> np.ndarray:
    scores = np.asarray(scores, np.float64)
    exp = np.exp(scores - scores.max())
    return exp / exp.sum()


def decode_squad(
    examples: Sequence[SquadExample],
    windows: Sequence[SquadWindow],
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    *,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    version_2_with_negative: bool = False,
    null_score_diff_threshold: float = 0.0,
) -> SquadPredictions:
    """Decodes answers from the logits of every window.

    Args:
      examples: the questions, indexed by ``SquadWindow.example_index``.
      windows: the rows' windows (``FeatureSet.metadata`` of ``featurize_squad``).
      start_logits: float ``[num_windows, S]``, row i for the window with ``window_index == i``.
      end_logits: float ``[num_windows, S]``.
      n_best_size: candidates per window and per end, and length of the n-best lists.
      max_answer_length: longest answer, in tokens.
      version_2_with_negative: SQuAD v2.0 (questions may have no answer).
      null_score_diff_threshold: v2.0: predict ``''`` when ``null - best_non_null`` exceeds it.

    Returns:
      :class:`SquadPredictions` covering every question that has at least one window.
    """
    start_logits = np.asarray(start_logits, np.float32)
    end_logits = np.asarray(end_logits, np.float32)
    if start_logits.shape != end_logits.shape or start_logits.shape[0] != len(windows):
        raise ValueError(
            f"logits {start_logits.shape} / {end_logits.shape} do not match {len(windows)} windows of [S] positions"
        )
    windows_by_example: dict[int, list[SquadWindow]] = collections.defaultdict(list)
    for window in windows:
        windows_by_example[window.example_index].append(window)

    predictions: dict[str, str] = {}
    nbest_out: dict[str, list[dict]] = {}
    null_odds: dict[str, float] | None = {} if version_2_with_negative else None
    for example_index, example_windows in windows_by_example.items():
        example = examples[example_index]
        candidates = []
        null_start = null_end = np.inf
        for window in example_windows:
            starts, ends = start_logits[window.window_index], end_logits[window.window_index]
            candidates += _window_candidates(window, starts, ends, n_best_size, max_answer_length)
            if starts[0] + ends[0] < null_start + null_end:
                null_start, null_end = float(starts[0]), float(ends[0])
        if version_2_with_negative:  # the null answer competes for a place in the n-best list
            candidates.append((null_start, null_end, -1, -1))
        candidates.sort(key=lambda c: c[0] + c[1], reverse=True)

        nbest: list[tuple[str, float, float]] = []
        seen: set[str] = set()
        for start_logit, end_logit, start_char, end_char in candidates:
            if len(nbest) >= n_best_size:
                break
            text = example.context[start_char:end_char] if start_char >= 0 else ""
            if text in seen:
                continue
            seen.add(text)
            nbest.append((text, start_logit, end_logit))
        if version_2_with_negative:
            if "" not in seen:
                nbest.append(("", null_start, null_end))
            if len(nbest) == 1:  # only the null answer: add BERT's placeholder so a non-null exists
                nbest.insert(0, ("empty", 0.0, 0.0))
        if not nbest:
            nbest.append(("empty", 0.0, 0.0))

        probabilities = _softmax([s + e for _, s, e in nbest])
        nbest_out[example.qas_id] = [
            {"text": text, "probability": float(p), "start_logit": s, "end_logit": e}
            for (text, s, e), p in zip(nbest, probabilities)
        ]
        if not version_2_with_negative:
            predictions[example.qas_id] = nbest[0][0]
            continue
        best_text, best_start, best_end = next(entry for entry in nbest if entry[0])
        score_diff = (null_start + null_end) - (best_start + best_end)
        null_odds[example.qas_id] = float(score_diff)
        predictions[example.qas_id] = "" if score_diff > null_score_diff_threshold else best_text
    return SquadPredictions(predictions, nbest_out, null_odds)


def write_squad_predictions(output_dir: str, decoded: SquadPredictions) -> dict[str, str]:
    """Writes ``predictions.json``, ``nbest_predictions.json`` and (v2.0) ``null_odds.json``.

    These are the files the official evaluation scripts read (``null_odds.json`` is the v2.0
    script's ``--na-prob-file``).

    Returns:
      File kind -> path written.
    """
    contents = {"predictions": decoded.predictions, "nbest_predictions": decoded.nbest}
    if decoded.null_odds is not None:
        contents["null_odds"] = decoded.null_odds
    paths = {}
    for name, value in contents.items():
        paths[name] = fileio.write_json(os.path.join(output_dir, f"{name}.json"), value, ensure_ascii=False)
    return paths
