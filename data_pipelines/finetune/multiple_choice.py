"""Multiple choice (SWAG style): a context, an optional question stem, and C candidate endings.

Each choice becomes one row ``[CLS] context [SEP] stem ending [SEP]`` (longest-first truncation), so
an example is ``[C, S]`` and a batch ``[B, C, S]`` (``MULTIPLE_CHOICE_FIELDS``); ``label`` is the
index of the correct ending, -1 when unknown (test files).

Files:

* SWAG CSV (``train.csv``, ``val.csv``, ``test.csv``): a header with ``sent1`` (the context),
  ``sent2`` (the stem), ``ending0`` ... ``ending3`` and ``label`` (absent in ``test.csv``); other
  columns (``video-id``, ``startphrase``, ``gold-source``, ...) are ignored.
* JSONL: one object a line, ``{"id": ..., "context": str, "question": str (optional),
  "endings": [str, ...], "label": int (optional)}``.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import os
from collections.abc import Sequence

import numpy as np

from data_pipelines import batch as batch_lib
from data_pipelines.finetune import features

SWAG_NUM_ENDINGS = 4
SPLIT_FILES: dict[str, str] = {"train": "train.csv", "validation": "val.csv", "test": "test.csv"}


@dataclasses.dataclass(frozen=True)
class MultipleChoiceExample:
    """One question with its candidate endings.

    Attributes:
      guid: where it came from (``file:line``).
      context: the first segment (SWAG ``sent1``).
      question: the stem each ending continues (SWAG ``sent2``); may be empty.
      endings: the candidates.
      label: index of the correct ending, or None.
    """

    guid: str
    context: str
    question: str
    endings: tuple[str, ...]
    label: int | None


def _check_label(label: int | None, num_endings: int, where: str) -> int | None:
    if label is not None and not 0 <= label < num_endings:
        raise ValueError(f"{where}: label {label} is not an ending index in [0, {num_endings})")
    return label


def read_swag_csv(path: str, num_endings: int = SWAG_NUM_ENDINGS) -> list[MultipleChoiceExample]:
    """Reads a SWAG CSV file (see the module docstring).

    Raises:
      ValueError: naming the file when columns are missing, or ``file:line`` for a row with the
        wrong number of fields or a bad label.
    """
    ending_columns = [f"ending{i}" for i in range(num_endings)]
    examples = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in ("sent1", "sent2", *ending_columns) if c not in header]
        if missing:
            raise ValueError(f"{path}:1: header lacks the SWAG columns {missing}; found {header}")
        has_label = "label" in header
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if None in row or None in row.values():
                raise ValueError(f"{where}: expected {len(header)} comma-separated fields like the header")
            label = None
            if has_label and row["label"] != "":
                try:
                    label = int(row["label"])
                except ValueError:
                    raise ValueError(f"{where}: label {row['label']!r} is not an integer") from None
            examples.append(
                MultipleChoiceExample(
                    guid=where,
                    context=row["sent1"],
                    question=row["sent2"],
                    endings=tuple(row[c] for c in ending_columns),
                    label=_check_label(label, num_endings, where),
                )
            )
    return examples


def read_multiple_choice_jsonl(path: str) -> list[MultipleChoiceExample]:
    """Reads the JSONL form (see the module docstring).

    Raises:
      ValueError: naming ``file:line`` for bad JSON, a missing/ill-typed field or a bad label.
    """
    examples = []
    for where, record in features.read_jsonl(path):
        endings = record.get("endings")
        if not isinstance(record.get("context"), str) or not isinstance(endings, list) or not endings:
            raise ValueError(f"{where}: needs 'context' (string) and 'endings' (non-empty list of strings)")
        if not all(isinstance(e, str) for e in endings):
            raise ValueError(f"{where}: 'endings' must all be strings")
        label = record.get("label")
        if label is not None and (not isinstance(label, int) or isinstance(label, bool)):
            raise ValueError(f"{where}: 'label' must be an integer ending index, got {label!r}")
        examples.append(
            MultipleChoiceExample(
                guid=str(record.get("id", where)),
                context=record["context"],
                question=str(record.get("question", "")),
                endings=tuple(endings),
                label=_check_label(label, len(endings), where),
            )
        )
    return examples


def read_swag_split(data_dir: str, split: str) -> list[MultipleChoiceExample]:
    """``train.csv`` / ``val.csv`` / ``test.csv`` of ``data_dir``, or ``<split>.jsonl`` if present."""
    jsonl = os.path.join(data_dir, f"{split}.jsonl")
    if os.path.isfile(jsonl):
        return read_multiple_choice_jsonl(jsonl)
    if split not in SPLIT_FILES:
        raise ValueError(f"SWAG split must be one of {list(SPLIT_FILES)}, got {split!r}")
    path = os.path.join(data_dir, SPLIT_FILES[split])
    if not os.path.isfile(path):
        raise FileNotFoundError(f"SWAG {split} file not found: looked for {path} and {jsonl}")
    return read_swag_csv(path)


def featurize_multiple_choice(
    examples: Sequence[MultipleChoiceExample], tokenizer: features.TokenizerLike, max_seq_length: int
) -> features.FeatureSet:
    """Featurises examples to ``[N, C, S]`` rows (see the module docstring).

    Raises:
      ValueError: when examples have different numbers of endings (naming the first that differs).
    """
    fields = batch_lib.MULTIPLE_CHOICE_FIELDS
    stats: collections.Counter = collections.Counter(examples=len(examples))
    if examples:
        num_choices = len(examples[0].endings)
        for example in examples:
            if len(example.endings) != num_choices:
                raise ValueError(f"{example.guid}: {len(example.endings)} endings, but the first example has {num_choices}")
    contexts = features.encode_texts(tokenizer, [example.context for example in examples])
    choice_texts = [f"{example.question} {ending}".strip() for example in examples for ending in example.endings]
    choices = features.encode_texts(tokenizer, choice_texts)
    rows, cursor = [], 0
    for example, context in zip(examples, contexts):
        choice_rows = []
        for choice in choices[cursor : cursor + len(example.endings)]:
            choice_rows.append(features.pair_row(context, choice, max_seq_length, tokenizer, stats))
        cursor += len(example.endings)
        row = {name: np.stack([r[name] for r in choice_rows]) for name in batch_lib.ENCODER_FIELDS}
        row["label"] = -1 if example.label is None else example.label
        rows.append(row)
    return features.FeatureSet(features.stack_rows(rows, fields), fields, stats)
