"""Text classification from plain local files, and deterministic k-fold splits.

Formats (chosen by extension, or ``file_format=``):

* ``tsv``: a header line naming the columns ``text``, optional ``text_b``, ``label`` (other columns
  ignored); tab-separated, no quoting; every row has the header's column count.
* ``jsonl``: one object a line, ``{"text": str, "text_b": str (optional), "label": str|int}``.
* ``fasttext`` (``.txt``, ``.cor``, ``.ft``): ``__label__<name> <text>`` a line, e.g. gensim's
  ``pang_lee_polarity.cor``. One label per line (multi-label lines are an error).

Labels are names (JSON integers become their decimal string). The label set is given, or inferred
from the training file (sorted). A label outside the set is an error naming ``file:line``, or with
``on_unknown_label='skip'`` a counted, logged skip. Malformed rows (wrong column count, bad JSON,
a line without a label where labels are required) are errors naming ``file:line``; blank lines are
ignored.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
from collections.abc import Sequence

import numpy as np

from data_pipelines.finetune import features

logger = logging.getLogger(__name__)

FORMATS = ("tsv", "jsonl", "fasttext")
_EXTENSION_FORMATS = {".tsv": "tsv", ".jsonl": "jsonl", ".txt": "fasttext", ".cor": "fasttext", ".ft": "fasttext"}
FASTTEXT_LABEL_PREFIX = "__label__"


@dataclasses.dataclass(frozen=True)
class LabelledText:
    """A raw row: ``guid`` is ``file:line``; ``label`` is the label name or None (no label)."""

    guid: str
    text: str
    text_b: str | None
    label: str | None


def detect_file_format(path: str) -> str:
    """The format of ``path`` from its extension (see :data:`FORMATS`)."""
    extension = os.path.splitext(path)[1].lower()
    if extension not in _EXTENSION_FORMATS:
        raise ValueError(f"{path}: cannot tell the format from {extension!r}; pass file_format= one of {FORMATS}")
    return _EXTENSION_FORMATS[extension]


def _read_tsv(path: str, encoding: str) -> list[LabelledText]:
    lines = features.read_lines(path, encoding)
    header_line = next(lines, None)
    if header_line is None:
        raise ValueError(f"{path}: empty file; expected a header line with 'text' and 'label' columns")
    header = header_line[1].split("\t")
    if "text" not in header:
        raise ValueError(f"{path}:1: header {header} lacks the 'text' column")
    text_col, text_b_col = header.index("text"), header.index("text_b") if "text_b" in header else None
    label_col = header.index("label") if "label" in header else None
    records = []
    for line_number, line in lines:
        if not line.strip():
            continue
        row = line.split("\t")
        if len(row) != len(header):
            raise ValueError(f"{path}:{line_number}: expected {len(header)} tab-separated columns {header}, got {len(row)}")
        records.append(
            LabelledText(
                f"{path}:{line_number}",
                row[text_col],
                None if text_b_col is None else row[text_b_col],
                None if label_col is None else row[label_col],
            )
        )
    return records


def _read_jsonl(path: str, encoding: str) -> list[LabelledText]:
    records = []
    for where, record in features.read_jsonl(path, encoding):
        if not isinstance(record.get("text"), str):
            raise ValueError(f"{where}: expected a string 'text', got {record.get('text')!r}")
        text_b = record.get("text_b")
        if text_b is not None and not isinstance(text_b, str):
            raise ValueError(f"{where}: 'text_b' must be a string, got {text_b!r}")
        label = record.get("label")
        if label is not None and (isinstance(label, bool) or not isinstance(label, (str, int))):
            raise ValueError(f"{where}: 'label' must be a string or an integer, got {label!r}")
        records.append(LabelledText(where, record["text"], text_b, None if label is None else str(label)))
    return records


def _read_fasttext(path: str, encoding: str) -> list[LabelledText]:
    records = []
    for line_number, line in features.read_lines(path, encoding):
        words = line.split()
        if not words:
            continue
        labels = []
        while words and words[0].startswith(FASTTEXT_LABEL_PREFIX):
            labels.append(words.pop(0)[len(FASTTEXT_LABEL_PREFIX) :])
        where = f"{path}:{line_number}"
        if len(labels) > 1:
            raise ValueError(f"{where}: {len(labels)} labels {labels}; only single-label classification is supported")
        if not words:
            raise ValueError(f"{where}: no text after the label")
        records.append(LabelledText(where, " ".join(words), None, labels[0] if labels else None))
    return records


def read_labelled_texts(
    path: str, *, file_format: str | None = None, encoding: str = "utf-8", require_labels: bool = True
) -> list[LabelledText]:
    """Reads raw rows of a TSV, JSONL or fastText file (see the module docstring).

    Args:
      path: the file.
      file_format: one of :data:`FORMATS`; None: from the extension.
      encoding: text encoding (``pang_lee_polarity.cor`` is ``cp1252``).
      require_labels: every row must have a label (False for unlabelled prediction files).

    Raises:
      ValueError: naming ``file:line`` for malformed rows, undecodable bytes or a missing label.
    """
    file_format = file_format or detect_file_format(path)
    readers = {"tsv": _read_tsv, "jsonl": _read_jsonl, "fasttext": _read_fasttext}
    if file_format not in readers:
        raise ValueError(f"file_format must be one of {FORMATS}, got {file_format!r}")
    records = readers[file_format](path, encoding)
    if require_labels:
        unlabelled = next((r for r in records if r.label is None), None)
        if unlabelled is not None:
            raise ValueError(f"{unlabelled.guid}: row has no label (pass require_labels=False for unlabelled files)")
    return records


def infer_label_names(records: Sequence[LabelledText]) -> tuple[str, ...]:
    """The sorted distinct labels of ``records`` (the label set of a training file)."""
    names = sorted({r.label for r in records if r.label is not None})
    if not names:
        raise ValueError("no labelled rows to infer a label set from")
    return tuple(names)


def to_examples(
    records: Sequence[LabelledText],
    label_names: Sequence[str],
    *,
    on_unknown_label: str = "error",
    stats: collections.Counter | None = None,
) -> list[features.TextPairExample]:
    """Maps label names to indices.

    Args:
      records: raw rows.
      label_names: the label set, index order.
      on_unknown_label: ``'error'`` or ``'skip'`` (logged, counted in ``stats['unknown_label_rows']``).
      stats: optional counter.

    Raises:
      ValueError: naming ``file:line`` for a label outside ``label_names`` (with ``'error'``).
    """
    if on_unknown_label not in ("error", "skip"):
        raise ValueError(f"on_unknown_label must be 'error' or 'skip', got {on_unknown_label!r}")
    stats = stats if stats is not None else collections.Counter()
    label_ids = {name: i for i, name in enumerate(label_names)}
    examples = []
    for index, record in enumerate(records):
        label = None
        if record.label is not None:
            if record.label not in label_ids:
                if on_unknown_label == "error":
                    raise ValueError(f"{record.guid}: label {record.label!r} is not one of {list(label_names)}")
                stats["unknown_label_rows"] += 1
                logger.warning("%s: skipping row with label %r outside %s", record.guid, record.label, list(label_names))
                continue
            label = label_ids[record.label]
        examples.append(features.TextPairExample(record.guid, index, record.text, record.text_b, label))
    return examples


def split_path(data_dir: str, split: str) -> str:
    """``<data_dir>/<split>.{tsv,jsonl,txt,cor,ft}`` (the first that exists)."""
    candidates = [os.path.join(data_dir, f"{split}{extension}") for extension in _EXTENSION_FORMATS]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"no {split} file in {data_dir}; looked for {candidates}")


def read_local_split(
    data_dir: str,
    split: str,
    *,
    label_names: Sequence[str] | None = None,
    encoding: str = "utf-8",
    on_unknown_label: str = "error",
) -> list[features.TextPairExample]:
    """Reads ``split`` from ``data_dir``; the label set is ``label_names`` or inferred from ``train``."""
    if label_names is None:
        label_names = infer_label_names(read_labelled_texts(split_path(data_dir, "train"), encoding=encoding))
    records = read_labelled_texts(split_path(data_dir, split), encoding=encoding, require_labels=split == "train")
    return to_examples(records, label_names, on_unknown_label=on_unknown_label)


def kfold_indices(
    num_examples: int, num_folds: int, seed: int, labels: Sequence | np.ndarray | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Deterministic k-fold cross-validation splits.

    Args:
      num_examples: N.
      num_folds: k (>= 2).
      seed: the shuffle seed; the same seed gives the same folds.
      labels: optional ``[N]`` labels to stratify by (each fold keeps the class proportions).

    Returns:
      k pairs ``(train_indices, eval_indices)`` (sorted int64 arrays); the eval parts partition
      ``range(N)``.
    """
    from sklearn import model_selection  # local: only cross-validation needs it

    if labels is None:
        splitter = model_selection.KFold(n_splits=num_folds, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros((num_examples, 1)))
    else:
        labels = np.asarray(labels)
        if len(labels) != num_examples:
            raise ValueError(f"{len(labels)} labels for {num_examples} examples")
        splitter = model_selection.StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros((num_examples, 1)), labels)
    return [(np.sort(train).astype(np.int64), np.sort(held_out).astype(np.int64)) for train, held_out in splits]
