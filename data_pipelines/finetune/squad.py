"""SQuAD v1.1 / v2.0: readers (original JSON, TFDS ``squad/*``) and document-stride windows.

A question whose context is longer than one row is cut into windows (BERT's recipe:
``max_seq_length`` 384, ``doc_stride`` 128, ``max_query_length`` 64). Each row is
``[CLS] question [SEP] context window [SEP]`` (the tokenizer's ``pair_separator`` after the question:
RoBERTa's BPE writes ``<s> question </s></s> window </s>``); the answer's first/last tokens are found from the
tokenizer's character offsets. A window that does not contain the whole answer (and every window of
a v2.0 question without an answer) gets the ``[CLS]`` labels ``(0, 0)``.

Each row has a :class:`SquadWindow` in ``FeatureSet.metadata`` with what decoding needs: the
character span of every context token and whether this window is the token's "max context" window
(the one where it has the most surrounding context, BERT's ``_check_is_max_context``).
``bert_jax/squad_decoding.py`` turns start/end logits back into answer texts.

JSON layout (the official files): ``{"data": [{"title", "paragraphs": [{"context", "qas": [{"id",
"question", "answers": [{"text", "answer_start"}], "is_impossible" (v2.0)}]}]}]}``.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from data_pipelines import batch as batch_lib
from data_pipelines.finetune import features

logger = logging.getLogger(__name__)

VERSIONS = ("v1.1", "v2.0")


@dataclasses.dataclass(frozen=True)
class SquadAnswer:
    """A gold answer: its text and the character index where it starts in the context."""

    text: str
    answer_start: int


@dataclasses.dataclass(frozen=True)
class SquadExample:
    """One question over one context.

    Attributes:
      qas_id: the question id (keys of ``predictions.json``).
      title: the article title.
      question: the question text.
      context: the paragraph.
      answers: gold answers (train: one; dev: several annotators; v2.0 unanswerable: none).
      is_impossible: v2.0 questions without an answer.
    """

    qas_id: str
    title: str
    question: str
    context: str
    answers: tuple[SquadAnswer, ...]
    is_impossible: bool = False


@dataclasses.dataclass(frozen=True)
class SquadWindow:
    """What decoding needs about one row.

    Attributes:
      example_index: index of the question in the example list.
      window_index: index of this row in the feature set.
      context_offsets: int32 ``[S, 2]``: ``[start, end)`` characters in the context of each context
        token in the row, ``-1`` for ``[CLS]``, question, ``[SEP]`` and padding positions.
      is_max_context: bool ``[S]``: the token has its most context in this window.
    """

    example_index: int
    window_index: int
    context_offsets: np.ndarray
    is_max_context: np.ndarray


def read_squad_json(path: str) -> list[SquadExample]:
    """Reads an official SQuAD v1.1 or v2.0 JSON file.

    Raises:
      ValueError: naming the file and the question id when a required field is missing.
    """
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if "data" not in data:
        raise ValueError(f"{path}: no top-level 'data' list; is this a SQuAD file?")
    examples = []
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                try:
                    answers = tuple(_answer(a, path, qa) for a in qa["answers"])
                    examples.append(
                        SquadExample(
                            qas_id=qa["id"],
                            title=article.get("title", ""),
                            question=qa["question"],
                            context=paragraph["context"],
                            answers=answers,
                            is_impossible=bool(qa.get("is_impossible", False)),
                        )
                    )
                except KeyError as e:
                    raise ValueError(f"{path}: question {qa.get('id', '?')!r} lacks the field {e}") from None
    return examples


def _answer(answer: Mapping, path: str, qa: Mapping) -> SquadAnswer:
    """One ``answers`` entry; ``answer_start`` must be a non-negative integer (``12`` or ``"12"``)."""
    start = answer["answer_start"]
    try:
        value = int(start)
    except (TypeError, ValueError):
        value = -1
    if isinstance(start, bool) or (isinstance(start, float) and not start.is_integer()) or value < 0:
        raise ValueError(
            f"{path}: question {qa.get('id', '?')!r}: answer_start {start!r} is not a character "
            "offset (expected a non-negative integer)"
        )
    return SquadAnswer(answer["text"], value)


def read_squad_tfds(version: str, split: str, data_dir: str | None = None) -> list[SquadExample]:
    """Reads ``squad/v1.1`` or ``squad/v2.0`` prepared for TFDS in ArrayRecord format.

    Args:
      version: ``'v1.1'`` or ``'v2.0'``.
      split: ``'train'`` or ``'validation'`` (slices work).
      data_dir: the TFDS data dir (None: TFDS's default).
    """
    if version not in VERSIONS:
        raise ValueError(f"SQuAD version must be one of {VERSIONS}, got {version!r}")
    import tensorflow_datasets as tfds  # local: heavy, and only this path needs it
    import tensorflow_datasets.datasets.squad.squad_dataset_builder  # noqa: F401  registers the builder

    source = tfds.data_source(f"squad/{version}", split=split, data_dir=data_dir)
    return squad_examples_from_records(source[i] for i in range(len(source)))


def squad_examples_from_records(records: Iterable[Mapping]) -> list[SquadExample]:
    """Converts TFDS ``squad/*`` records (dicts) to examples."""
    examples = []
    for record in records:
        texts = [features.as_text(t) for t in np.asarray(record["answers"]["text"]).reshape(-1)]
        starts = np.asarray(record["answers"]["answer_start"]).reshape(-1)
        qas_id = features.as_text(record["id"])
        if len(texts) != len(starts):
            raise ValueError(f"TFDS SQuAD question {qas_id!r}: {len(texts)} answer texts but {len(starts)} answer starts")
        examples.append(
            SquadExample(
                qas_id=qas_id,
                title=features.as_text(record["title"]),
                question=features.as_text(record["question"]),
                context=features.as_text(record["context"]),
                answers=tuple(SquadAnswer(t, int(s)) for t, s in zip(texts, starts)),
                is_impossible=bool(np.asarray(record.get("is_impossible", False)).item()),
            )
        )
    return examples


def gold_answers(examples: Sequence[SquadExample]) -> dict[str, list[str]]:
    """Question id -> gold answer texts (``[]`` for v2.0 questions without an answer), in file order."""
    return {example.qas_id: [answer.text for answer in example.answers] for example in examples}


def answer_char_span(example: SquadExample) -> tuple[int, int] | None:
    """``[start, end)`` of the first gold answer in the context, or None when it is not there.

    The answer is found when the context at ``answer_start`` reads the answer text (surrounding
    whitespace of the answer text ignored).
    """
    answer = example.answers[0]
    text = answer.text.strip()
    start = answer.answer_start + (len(answer.text) - len(answer.text.lstrip()))
    if not text or example.context[start : start + len(text)] != text:
        return None
    return start, start + len(text)


def _token_span(offsets: np.ndarray, char_start: int, char_end: int) -> tuple[int, int] | None:
    """First and last token (inclusive) overlapping ``[char_start, char_end)``, or None."""
    first = int(np.searchsorted(offsets[:, 1], char_start, side="right"))
    last = int(np.searchsorted(offsets[:, 0], char_end, side="left")) - 1
    if first >= len(offsets) or last < first:
        return None
    return first, last


def _window_starts(num_tokens: int, window_length: int, doc_stride: int) -> list[int]:
    """Start token of each window (BERT: step ``min(length, doc_stride)`` until the end is covered)."""
    starts = [0]
    while starts[-1] + window_length < num_tokens:
        starts.append(starts[-1] + min(window_length, doc_stride))
    return starts


def _max_context_windows(num_tokens: int, starts: Sequence[int], window_length: int) -> np.ndarray:
    """For each context token, the window where min(left, right) context + 0.01 * length is largest."""
    best_score = np.full((num_tokens,), -np.inf)
    best_window = np.zeros((num_tokens,), np.int64)
    for w, start in enumerate(starts):
        length = min(window_length, num_tokens - start)
        positions = np.arange(start, start + length)
        score = np.minimum(positions - start, start + length - 1 - positions) + 0.01 * length
        better = score > best_score[positions]
        best_score[positions[better]] = score[better]
        best_window[positions[better]] = w
    return best_window


def featurize_squad(
    examples: Sequence[SquadExample],
    tokenizer: features.OffsetTokenizerLike,
    *,
    max_seq_length: int = 384,
    doc_stride: int = 128,
    max_query_length: int = 64,
    is_training: bool,
    strict: bool = False,
) -> features.FeatureSet:
    """Cuts questions into document-stride windows with span labels.

    Args:
      examples: the questions.
      tokenizer: a tokenizer with ``encode_batch_with_offsets`` (character offsets).
      max_seq_length: S.
      doc_stride: tokens between the starts of consecutive windows.
      max_query_length: questions are cut to this many tokens (counted in ``truncated_questions``).
      is_training: when True, a question whose gold answer is not found in its context is skipped
        (logged with its id, counted in ``answers_not_found``); when False it is kept (its windows
        get the ``(0, 0)`` labels) so every question is predicted and scored.
      strict: raise instead of skipping when an answer is not found.

    Returns:
      A FeatureSet following ``SPAN_FIELDS`` with one :class:`SquadWindow` per row in ``metadata``.
      ``stats``: ``examples``, ``windows``, ``answers_not_found``, ``skipped_examples``,
      ``truncated_questions``, ``cls_labelled_windows``.

    Raises:
      ValueError: in strict mode, naming the question id whose answer is not in its context; or when
        the question leaves no room for context.
    """
    fields = batch_lib.SPAN_FIELDS
    stats: collections.Counter = collections.Counter(examples=len(examples))
    question_ids = features.encode_texts(tokenizer, [example.question for example in examples])
    contexts = tokenizer.encode_batch_with_offsets([example.context for example in examples])
    rows: list[dict[str, np.ndarray]] = []
    windows: list[SquadWindow] = []
    for example_index, (example, query, (context_ids, offsets)) in enumerate(zip(examples, question_ids, contexts)):
        if len(query) > max_query_length:
            stats["truncated_questions"] += 1
            query = query[:max_query_length]
        answer_tokens = None
        if not example.is_impossible and example.answers:
            char_span = answer_char_span(example)
            answer_tokens = None if char_span is None else _token_span(offsets, *char_span)
            if answer_tokens is None:
                stats["answers_not_found"] += 1
                message = (
                    f"SQuAD question {example.qas_id!r}: answer {example.answers[0].text!r} at character "
                    f"{example.answers[0].answer_start} is not in its context"
                )
                if strict:
                    raise ValueError(message)
                logger.warning("%s; %s", message, "skipped" if is_training else "kept with (0, 0) labels")
                if is_training:
                    stats["skipped_examples"] += 1
                    continue
        window_length = max_seq_length - len(query) - features.row_specials(tokenizer, pair=True)
        if window_length <= 0:
            raise ValueError(f"max_seq_length={max_seq_length} leaves no room for context after a {len(query)}-token question")
        starts = _window_starts(len(context_ids), window_length, doc_stride)
        best_window = _max_context_windows(len(context_ids), starts, window_length)
        context_row_start = 1 + len(query) + len(tokenizer.pair_separator)  # [CLS] question [SEP]
        for w, start in enumerate(starts):
            end = min(start + window_length, len(context_ids))
            row = features.encoder_row(query, context_ids[start:end], max_seq_length, tokenizer)
            if answer_tokens is not None and start <= answer_tokens[0] and answer_tokens[1] < end:
                row["start_positions"] = answer_tokens[0] - start + context_row_start
                row["end_positions"] = answer_tokens[1] - start + context_row_start
            else:
                row["start_positions"] = row["end_positions"] = 0
                stats["cls_labelled_windows"] += 1
            row["example_index"] = example_index
            row["window_index"] = len(rows)
            context_offsets = np.full((max_seq_length, 2), -1, np.int32)
            context_offsets[context_row_start : context_row_start + end - start] = offsets[start:end]
            is_max_context = np.zeros((max_seq_length,), bool)
            is_max_context[context_row_start : context_row_start + end - start] = best_window[start:end] == w
            windows.append(SquadWindow(example_index, len(rows), context_offsets, is_max_context))
            rows.append(row)
    stats["windows"] = len(rows)
    return features.FeatureSet(features.stack_rows(rows, fields), fields, stats, windows)
