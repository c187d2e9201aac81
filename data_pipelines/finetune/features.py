"""Featurisation shared by the fine-tuning tasks, and the file helpers their readers share.

Every task turns its examples into a :class:`FeatureSet`: a dict of stacked NumPy arrays following
one of the fine-tuning specs of :mod:`data_pipelines.batch` (``CLASSIFICATION_FIELDS``, ...), plus
counters of what featurisation had to cut or skip, plus optional per-row metadata (SQuAD windows,
tagging windows). A FeatureSet has ``len`` and ``__getitem__`` returning one row as a dict, so it
serves directly as a Grain random-access data source.

Rows are BERT's layout: ``[CLS] a [SEP]`` or ``[CLS] a [SEP] b [SEP]`` padded to a fixed length,
segment id 0 for ``[CLS]``, ``a`` and the first ``[SEP]``, 1 for ``b`` and the last ``[SEP]``. The separator
of a pair is the tokenizer's ``pair_separator`` (RoBERTa's BPE: ``<s> a </s></s> b </s>``, as
transformers builds it), and truncation leaves room for it (:func:`row_specials`).

Tokenizers: anything with ``encode_batch(texts) -> list[int array]`` (no special tokens),
``cls_id``/``sep_id``/``pad_id``/``unk_id`` and ``pair_separator``, i.e.
:class:`data_pipelines.tokenizer.Tokenizer`. SQuAD
also needs character offsets (``encode_batch_with_offsets``, :class:`OffsetTokenizerLike`).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from data_pipelines import batch as batch_lib
from data_pipelines.rows import encoder_rows

logger = logging.getLogger(__name__)


class TokenizerLike(Protocol):
    """What featurisation needs from a tokenizer (``data_pipelines.tokenizer.Tokenizer`` has it)."""

    cls_id: int
    sep_id: int
    pad_id: int
    unk_id: int
    pair_separator: tuple[int, ...]

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """One int ``[num_tokens_i]`` array per text, without special tokens or truncation."""
        ...


class OffsetTokenizerLike(TokenizerLike, Protocol):
    """A tokenizer that also reports character offsets (SQuAD needs them)."""

    def encode_batch_with_offsets(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per text: ids int ``[n]`` and ``[start, end)`` character offsets int ``[n, 2]``."""
        ...


@dataclasses.dataclass(frozen=True)
class TextPairExample:
    """One sentence or sentence-pair example (GLUE, local text classification).

    Attributes:
      guid: where it came from, for messages, e.g. ``"train.tsv:13"`` or ``"glue/cola:train:12"``.
      index: the example's index in its split (the GLUE ``index``/``idx`` column where there is one);
        test-set submission files list predictions by this index.
      text_a: the first (or only) text.
      text_b: the second text, or None for single-sentence tasks.
      label: class index (int), regression target (float), or None when unlabelled (test sets).
    """

    guid: str
    index: int
    text_a: str
    text_b: str | None
    label: int | float | None


@dataclasses.dataclass
class FeatureSet:
    """Fixed-shape features of a whole split, ready to batch.

    Attributes:
      arrays: field name -> array with the example (row) dimension first, following ``fields``
        with ``B`` = number of rows.
      fields: the :mod:`data_pipelines.batch` spec the arrays follow.
      stats: counts of what featurisation cut or skipped (e.g. ``truncated_pairs``).
      metadata: optional per-row objects (SQuAD / tagging windows), same order as the rows.
    """

    arrays: dict[str, np.ndarray]
    fields: Mapping[str, tuple[str, ...]]
    stats: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    metadata: list[Any] | None = None

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        """Row ``index`` as a dict of arrays without the row dimension."""
        return {name: array[index] for name, array in self.arrays.items()}

    def rows(self, indices: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        """A batch: the rows at ``indices`` stacked (``B = len(indices)``)."""
        indices = np.asarray(indices, dtype=np.int64)
        return {name: array[indices] for name, array in self.arrays.items()}

    def validate(self) -> dict[str, int]:
        """Checks the arrays against ``fields`` (:func:`data_pipelines.batch.validate_batch`)."""
        return batch_lib.validate_batch(self.arrays, self.fields)


def stack_rows(rows: Sequence[Mapping[str, Any]], fields: Mapping[str, tuple[str, ...]]) -> dict[str, np.ndarray]:
    """Stacks per-row values into arrays with the dtypes :mod:`data_pipelines.batch` prescribes.

    Args:
      rows: one dict per row, holding every field of ``fields`` without the row dimension.
      fields: the batch spec.

    Returns:
      field -> array ``[len(rows), ...]``. With no rows, each array has shape ``(0,)`` plus nothing
      else, so check ``len`` before using shapes.
    """
    if not rows:
        return {name: np.zeros((0,), batch_lib.field_dtype(name)) for name in fields}
    return {name: np.asarray([row[name] for row in rows], dtype=batch_lib.field_dtype(name)) for name in fields}


def truncate_pair_lengths(len_a: int, len_b: int, max_tokens: int) -> tuple[int, int]:
    """Lengths that fit ``max_tokens`` after BERT's longest-first truncation.

    Tokens are removed one at a time from the end of the longer text (from ``b`` on ties), as the
    original ``_truncate_seq_pair`` does.

    Args:
      len_a: tokens in text a.
      len_b: tokens in text b (0 for a single text).
      max_tokens: room left after the special tokens.

    Returns:
      ``(kept_a, kept_b)``.
    """
    if max_tokens < 0:
        raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
    while len_a + len_b > max_tokens:
        if len_a > len_b:
            len_a -= 1
        else:
            len_b -= 1
    return len_a, len_b


def row_specials(tokenizer: TokenizerLike, pair: bool) -> int:
    """The special tokens of a row: ``[CLS]`` and the last ``[SEP]``, plus the pair separator for a pair."""
    return 2 + (len(tokenizer.pair_separator) if pair else 0)


def encoder_row(
    tokens_a: Sequence[int] | np.ndarray,
    tokens_b: Sequence[int] | np.ndarray | None,
    max_seq_length: int,
    tokenizer: TokenizerLike,
) -> dict[str, np.ndarray]:
    """Builds one padded ``[CLS] a [SEP] (b [SEP])`` row (the tokenizer's ``pair_separator`` after ``a``).

    Args:
      tokens_a: ids of text a (already truncated to fit).
      tokens_b: ids of text b, or None for a single text.
      max_seq_length: S, the padded length.
      tokenizer: provides ``cls_id``, ``sep_id``, ``pad_id``, ``pair_separator``.

    Returns:
      The :data:`data_pipelines.batch.ENCODER_FIELDS`, each int32 ``[S]``.

    Raises:
      ValueError: when the tokens do not fit (truncate first).
    """
    rows = encoder_rows([tokens_a], None if tokens_b is None else [tokens_b], length=max_seq_length,
                        cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id, pad_id=tokenizer.pad_id, positions=True,
                        pair_separator=tokenizer.pair_separator)
    return {name: rows[name][0] for name in batch_lib.ENCODER_FIELDS}


TRUNCATIONS = ("head", "head_tail")


def keep_head_tail(tokens: np.ndarray, kept: int, head_tokens: int) -> np.ndarray:
    """The ``kept`` tokens of head-plus-tail truncation: the first ``min(head_tokens, kept)`` and the last rest.

    Sun et al. 2019 ("How to Fine-Tune BERT for Text Classification", sec. 5.3.1) keep the first 128 and
    last 382 tokens of a long document at length 512. ``tokens`` no longer than ``kept`` come back whole.

    Args:
      tokens: int ``[n]`` token ids of one text.
      kept: how many tokens to keep (>= 0).
      head_tokens: how many of them come from the start (>= 0).

    Returns:
      int ``[min(n, kept)]``: ``tokens[:h]`` then ``tokens[n - (kept - h):]`` with ``h = min(head_tokens, kept)``.
    """
    if len(tokens) <= kept:
        return tokens
    head = min(head_tokens, kept)
    tail = kept - head
    return np.concatenate([tokens[:head], tokens[len(tokens) - tail:]]) if tail else tokens[:head]


def pair_row(
    tokens_a: np.ndarray,
    tokens_b: np.ndarray | None,
    max_seq_length: int,
    tokenizer: TokenizerLike,
    stats: collections.Counter,
    *,
    truncation: str = "head",
    head_tokens: int | None = None,
) -> dict[str, np.ndarray]:
    """:func:`encoder_row` after longest-first truncation; counts ``truncated_pairs`` in ``stats``.

    Args:
      truncation: ``"head"`` keeps each text's first tokens (BERT's ``_truncate_seq_pair``);
        ``"head_tail"`` keeps each cut text's first ``head_tokens`` and its last ones
        (:func:`keep_head_tail`). Longest-first decides how many tokens each text keeps either way.
      head_tokens: with ``"head_tail"``, the tokens kept from the start of a cut text.
    """
    len_b = 0 if tokens_b is None else len(tokens_b)
    kept_a, kept_b = truncate_pair_lengths(len(tokens_a), len_b,
                                           max_seq_length - row_specials(tokenizer, tokens_b is not None))
    if (kept_a, kept_b) != (len(tokens_a), len_b):
        stats["truncated_pairs"] += 1
    if truncation == "head_tail":
        tokens_a = keep_head_tail(tokens_a, kept_a, head_tokens)
        tokens_b = None if tokens_b is None else keep_head_tail(tokens_b, kept_b, head_tokens)
    return encoder_row(tokens_a[:kept_a], None if tokens_b is None else tokens_b[:kept_b], max_seq_length, tokenizer)


def encode_texts(tokenizer: TokenizerLike, texts: Sequence[str | None]) -> list[np.ndarray | None]:
    """Encodes texts in one batch call; ``None`` entries stay ``None``."""
    present = [i for i, text in enumerate(texts) if text is not None]
    encoded = tokenizer.encode_batch([texts[i] for i in present]) if present else []
    out: list[np.ndarray | None] = [None] * len(texts)
    for i, ids in zip(present, encoded):
        out[i] = np.asarray(ids, dtype=np.int32)
    return out


def featurize_text_pairs(
    examples: Sequence[TextPairExample],
    tokenizer: TokenizerLike,
    max_seq_length: int,
    *,
    regression: bool = False,
    truncation: str = "head",
    head_tokens: int | None = None,
) -> FeatureSet:
    """Featurises sentence / sentence-pair examples for classification or regression.

    Args:
      examples: the examples; ``label`` None (test sets) becomes -1 (classification) or NaN
        (regression).
      tokenizer: see :class:`TokenizerLike`.
      max_seq_length: S.
      regression: build ``REGRESSION_FIELDS`` (float32 ``regression_target``) instead of
        ``CLASSIFICATION_FIELDS`` (int32 ``label``).
      truncation: ``"head"`` (BERT: a long text keeps its first tokens) or ``"head_tail"`` (its first
        ``head_tokens`` and its last ones; :func:`pair_row`). Config: ``data.featurize_options``.
      head_tokens: required with ``"head_tail"``: 0 <= head_tokens <= max_seq_length - 2.

    Returns:
      A FeatureSet with one row per example; ``stats['truncated_pairs']`` counts truncated rows.

    Raises:
      ValueError: for an unknown ``truncation`` or a missing / out-of-range ``head_tokens``.
    """
    if truncation not in TRUNCATIONS:
        raise ValueError(f"data.featurize_options.truncation={truncation!r}: expected one of {TRUNCATIONS}")
    if truncation == "head_tail" and (head_tokens is None or not 0 <= int(head_tokens) <= max_seq_length - 2):
        raise ValueError(f"data.featurize_options.head_tokens={head_tokens!r}: truncation='head_tail' needs the "
                         f"tokens kept from the start, 0 <= head_tokens <= max_seq_length - 2 = {max_seq_length - 2}")
    fields = batch_lib.REGRESSION_FIELDS if regression else batch_lib.CLASSIFICATION_FIELDS
    stats: collections.Counter = collections.Counter()
    ids_a = encode_texts(tokenizer, [example.text_a for example in examples])
    ids_b = encode_texts(tokenizer, [example.text_b for example in examples])
    rows = []
    for example, tokens_a, tokens_b in zip(examples, ids_a, ids_b):
        row = pair_row(tokens_a, tokens_b, max_seq_length, tokenizer, stats, truncation=truncation,
                       head_tokens=None if head_tokens is None else int(head_tokens))
        if regression:
            row["regression_target"] = np.nan if example.label is None else float(example.label)
        else:
            row["label"] = -1 if example.label is None else int(example.label)
        rows.append(row)
    stats["examples"] = len(examples)
    if stats["truncated_pairs"]:
        logger.info("truncated %d of %d examples to %d tokens", stats["truncated_pairs"], len(examples), max_seq_length)
    return FeatureSet(stack_rows(rows, fields), fields, stats)


# ---------------------------------------------------------------------------------------------
# File helpers shared by the readers.
# ---------------------------------------------------------------------------------------------


def read_lines(path: str, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """Yields ``(line_number, line)`` (1-based, newline and a leading BOM removed).

    Raises:
      ValueError: naming ``path:line`` when a line does not decode with ``encoding``.
    """
    with open(path, "rb") as f:
        for line_number, raw in enumerate(f, start=1):
            try:
                line = raw.decode(encoding)
            except UnicodeDecodeError as e:
                raise ValueError(
                    f"{path}:{line_number}: byte {raw[e.start]:#04x} at column {e.start + 1} is not valid "
                    f"{encoding} ({e.reason}); pass the file's encoding (e.g. encoding='cp1252')"
                ) from None
            if line_number == 1:
                line = line.removeprefix("\ufeff")
            yield line_number, line.rstrip("\n").rstrip("\r")


def read_jsonl(path: str, encoding: str = "utf-8") -> Iterator[tuple[str, dict]]:
    """Yields ``("path:line", object)`` for each non-blank line of a JSON-lines file.

    Raises:
      ValueError: naming ``path:line`` for invalid JSON or a line that is not a JSON object.
    """
    for line_number, line in read_lines(path, encoding):
        if not line.strip():
            continue
        where = f"{path}:{line_number}"
        yield where, parse_json_object(line, where)


def parse_json_object(line: str, where: str) -> dict:
    """One JSON-lines line as a dict; ValueError naming ``where`` for invalid JSON or a non-object."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    return record


def label_index(label: str, label_names: Sequence[str], where: str) -> int:
    """The index of ``label`` in ``label_names``; ValueError naming ``where`` when it is not there."""
    try:
        return list(label_names).index(label)
    except ValueError:
        raise ValueError(f"{where}: label {label!r} is not one of {list(label_names)}") from None


def as_text(value: Any) -> str:
    """A TFDS text value (bytes, str or 0-d array) as ``str``."""
    if isinstance(value, np.ndarray):
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)
