"""CoNLL-2003 NER: readers (the original column files, TFDS ``conll2003``) and first-sub-token labels.

File format: one token a line, four space-separated columns ``token POS chunk NER``; a blank line
ends a sentence; ``-DOCSTART- -X- -X- O`` lines mark documents (they end a sentence and are not
tokens). The original English files (``eng.train``, ``eng.testa``, ``eng.testb``) use IOB1 tags, the
common re-distribution (``train.txt``, ``valid.txt``, ``test.txt``, the one TFDS uses) IOB2; both
draw from the same nine tags (:data:`NER_TAGS`).

Featurisation: each word is tokenized on its own; its tag index goes on its FIRST sub-token with
weight 1, its other sub-tokens get weight 0 (as do ``[CLS]``, ``[SEP]`` and padding). A sentence
longer than one row is split into consecutive windows of whole words (``long_sentences='window'``,
counted in ``split_sentences``) or cut (``'truncate'``, counted in ``truncated_sentences`` and
``dropped_words``). :func:`word_predictions` maps per-token predictions back to one tag per word.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from data_pipelines import batch as batch_lib
from data_pipelines.finetune import features

logger = logging.getLogger(__name__)

# The CoNLL-2003 NER tag set, in TFDS ``conll2003`` ClassLabel order.
NER_TAGS: tuple[str, ...] = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
DOCSTART = "-DOCSTART-"
# Split -> file names looked for, in order (re-distribution first, then the original names).
SPLIT_FILES: dict[str, tuple[str, ...]] = {
    "train": ("train.txt", "eng.train"),
    "validation": ("valid.txt", "eng.testa"),
    "test": ("test.txt", "eng.testb"),
}
_TFDS_SPLITS = {"train": "train", "validation": "dev", "test": "test"}


@dataclasses.dataclass(frozen=True)
class TaggedSentence:
    """One sentence: words and their NER tags (plus POS and chunk tags when the source has them)."""

    guid: str
    words: tuple[str, ...]
    tags: tuple[str, ...]
    pos: tuple[str, ...] | None = None
    chunks: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True)
class TaggingWindow:
    """Which words of which sentence one row holds: ``words[word_start:word_end]``."""

    example_index: int
    window_index: int
    word_start: int
    word_end: int


def read_conll_file(
    path: str, *, label_names: Sequence[str] = NER_TAGS, num_columns: int = 4, encoding: str = "utf-8"
) -> list[TaggedSentence]:
    """Reads a CoNLL-2003 style file.

    Args:
      path: the file.
      label_names: allowed NER tags (last column).
      num_columns: columns per token line (4: token POS chunk NER).
      encoding: text encoding.

    Returns:
      The sentences, in file order; ``guid`` is ``path:first_line``.

    Raises:
      ValueError: naming ``path:line`` for a line with the wrong number of columns or an unknown tag.
    """
    sentences: list[TaggedSentence] = []
    rows: list[list[str]] = []
    first_line = 0

    def flush() -> None:
        if rows:
            columns = list(zip(*rows))
            sentences.append(
                TaggedSentence(
                    guid=f"{path}:{first_line}",
                    words=columns[0],
                    tags=columns[-1],
                    pos=columns[1] if num_columns >= 4 else None,
                    chunks=columns[2] if num_columns >= 4 else None,
                )
            )
            rows.clear()

    allowed = set(label_names)
    for line_number, line in features.read_lines(path, encoding):
        fields = line.split()
        if not fields:
            flush()
            continue
        if fields[0] == DOCSTART:
            flush()
            continue
        if len(fields) != num_columns:
            raise ValueError(
                f"{path}:{line_number}: expected {num_columns} space-separated columns (token POS chunk NER), "
                f"got {len(fields)}: {line!r}"
            )
        if fields[-1] not in allowed:
            raise ValueError(f"{path}:{line_number}: NER tag {fields[-1]!r} is not one of {sorted(allowed)}")
        if not rows:
            first_line = line_number
        rows.append(fields)
    flush()
    return sentences


def conll_split_path(data_dir: str, split: str) -> str:
    """The file of ``split`` in ``data_dir`` (see :data:`SPLIT_FILES`); FileNotFoundError naming them."""
    if split not in SPLIT_FILES:
        raise ValueError(f"CoNLL split must be one of {list(SPLIT_FILES)}, got {split!r}")
    candidates = [os.path.join(data_dir, name) for name in SPLIT_FILES[split]]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"CoNLL-2003 {split} file not found; looked for {candidates}")


def read_conll_tfds(split: str, data_dir: str | None = None) -> list[TaggedSentence]:
    """Reads TFDS ``conll2003`` (prepared as ArrayRecord); ``split`` is train/validation/test."""
    import tensorflow_datasets as tfds  # local: heavy, and only this path needs it
    import tensorflow_datasets.text.conll2003  # noqa: F401  registers the builder

    tfds_split = _TFDS_SPLITS.get(split, split)
    source = tfds.data_source("conll2003", split=tfds_split, data_dir=data_dir)
    return conll_sentences_from_records((source[i] for i in range(len(source))), f"conll2003:{tfds_split}")


def conll_sentences_from_records(records: Iterable[Mapping], name: str = "conll2003") -> list[TaggedSentence]:
    """Converts TFDS ``conll2003`` records (tokens + NER tag indices into :data:`NER_TAGS`)."""
    sentences = []
    for i, record in enumerate(records):
        words = tuple(features.as_text(w) for w in np.asarray(record["tokens"]).reshape(-1))
        tag_ids = np.asarray(record["ner"]).reshape(-1)
        if len(words) != len(tag_ids):
            raise ValueError(f"{name}:{i}: {len(words)} tokens but {len(tag_ids)} NER tags")
        if np.any((tag_ids < 0) | (tag_ids >= len(NER_TAGS))):
            raise ValueError(f"{name}:{i}: NER tag ids {tag_ids.tolist()} outside [0, {len(NER_TAGS)})")
        sentences.append(TaggedSentence(f"{name}:{i}", words, tuple(NER_TAGS[t] for t in tag_ids)))
    return sentences


def _split_words(piece_counts: Sequence[int], budget: int) -> list[tuple[int, int]]:
    """Consecutive word ranges whose sub-token counts fit ``budget`` (a too-long word stands alone)."""
    ranges, start, used = [], 0, 0
    for i, count in enumerate(piece_counts):
        if i > start and used + count > budget:
            ranges.append((start, i))
            start, used = i, 0
        used += count
    ranges.append((start, len(piece_counts)))
    return ranges


def featurize_tagging(
    sentences: Sequence[TaggedSentence],
    tokenizer: features.TokenizerLike,
    max_seq_length: int,
    *,
    label_names: Sequence[str] = NER_TAGS,
    long_sentences: str = "window",
) -> features.FeatureSet:
    """Featurises sentences with labels on first sub-tokens.

    Args:
      sentences: the sentences.
      tokenizer: see :class:`features.TokenizerLike`.
      max_seq_length: S.
      label_names: tag -> index.
      long_sentences: ``'window'`` or ``'truncate'`` (see the module docstring).

    Returns:
      A FeatureSet following ``TAGGING_FIELDS`` with a :class:`TaggingWindow` per row. ``stats``:
      ``sentences``, ``windows``, ``split_sentences``, ``truncated_sentences``, ``dropped_words``,
      ``truncated_words`` (a single word longer than a row: its extra pieces dropped),
      ``empty_words`` (words with no sub-token, given ``[UNK]``).
    """
    if long_sentences not in ("window", "truncate"):
        raise ValueError(f"long_sentences must be 'window' or 'truncate', got {long_sentences!r}")
    fields = batch_lib.TAGGING_FIELDS
    stats: collections.Counter = collections.Counter(sentences=len(sentences))
    budget = max_seq_length - 2
    all_words = [word for sentence in sentences for word in sentence.words]
    all_pieces = features.encode_texts(tokenizer, all_words)
    rows, windows = [], []
    cursor = 0
    for example_index, sentence in enumerate(sentences):
        pieces = all_pieces[cursor : cursor + len(sentence.words)]
        cursor += len(sentence.words)
        for i, word_pieces in enumerate(pieces):
            if len(word_pieces) == 0:
                stats["empty_words"] += 1
                pieces[i] = np.array([tokenizer.unk_id], np.int32)
            elif len(word_pieces) > budget:
                stats["truncated_words"] += 1
                pieces[i] = word_pieces[:budget]
        tag_ids = [features.label_index(tag, label_names, f"{sentence.guid} word {j}") for j, tag in enumerate(sentence.tags)]
        ranges = _split_words([len(p) for p in pieces], budget)
        if len(ranges) > 1:
            if long_sentences == "truncate":
                stats["truncated_sentences"] += 1
                stats["dropped_words"] += len(sentence.words) - ranges[0][1]
                ranges = ranges[:1]
            else:
                stats["split_sentences"] += 1
        for word_start, word_end in ranges:
            ids = np.concatenate(pieces[word_start:word_end]) if word_end > word_start else np.zeros((0,), np.int32)
            row = features.encoder_row(ids, None, max_seq_length, tokenizer)
            labels = np.zeros((max_seq_length,), np.int32)
            weights = np.zeros((max_seq_length,), np.int32)
            first_positions = 1 + np.cumsum([0] + [len(p) for p in pieces[word_start:word_end]])[:-1]
            labels[first_positions] = tag_ids[word_start:word_end]
            weights[first_positions] = 1
            row.update(labels=labels, label_weights=weights, example_index=example_index, window_index=len(rows))
            windows.append(TaggingWindow(example_index, len(rows), word_start, word_end))
            rows.append(row)
    stats["windows"] = len(rows)
    if stats["split_sentences"] or stats["truncated_sentences"]:
        logger.info(
            "%d sentences longer than %d tokens: %d split into windows, %d truncated (%d words dropped)",
            stats["split_sentences"] + stats["truncated_sentences"], max_seq_length,
            stats["split_sentences"], stats["truncated_sentences"], stats["dropped_words"],
        )
    return features.FeatureSet(features.stack_rows(rows, fields), fields, stats, windows)


def word_predictions(
    sentences: Sequence[TaggedSentence],
    feature_set: features.FeatureSet,
    predicted_ids: np.ndarray,
    label_names: Sequence[str] = NER_TAGS,
    fill_tag: str = "O",
) -> list[list[str]]:
    """One predicted tag per word, read from the first sub-token of each word.

    Args:
      sentences: the sentences that were featurised.
      feature_set: the result of :func:`featurize_tagging` on them.
      predicted_ids: int ``[num_rows, S]`` predicted tag indices (e.g. argmax of the logits).
      label_names: index -> tag.
      fill_tag: tag for words no row holds (dropped by ``long_sentences='truncate'``).

    Returns:
      Per sentence, a list of tags as long as its words (ready for ``bert_jax.metrics.entity_scores``).
    """
    predicted_ids = np.asarray(predicted_ids)
    weights = feature_set.arrays["label_weights"]
    if predicted_ids.shape != weights.shape:
        raise ValueError(f"predicted_ids {predicted_ids.shape} must match the features' {weights.shape}")
    tags = [[fill_tag] * len(sentence.words) for sentence in sentences]
    for window in feature_set.metadata:
        row_predictions = predicted_ids[window.window_index][weights[window.window_index] == 1]
        tags[window.example_index][window.word_start : window.word_end] = [label_names[i] for i in row_predictions]
    return tags
