"""GLUE: the nine tasks (plus the AX diagnostic), read from TFDS or the original TSV files.

Task names are the TFDS ``glue/<config>`` names: ``cola``, ``sst2``, ``mrpc``, ``stsb``, ``qqp``,
``mnli`` (with ``mnli_matched`` / ``mnli_mismatched``), ``qnli``, ``rte``, ``wnli``, ``ax``; the GLUE
display names (``CoLA``, ``SST-2``, ``STS-B``, ``MNLI-m``, ...) are accepted too
(:func:`canonical_task_name`).

Splits: ``train``, ``validation``, ``test``; MNLI has ``validation_matched``,
``validation_mismatched``, ``test_matched``, ``test_mismatched`` (as TFDS names them).

Labels are indices into :attr:`GlueTask.label_names` (the TFDS ``ClassLabel`` order); STS-B labels are
float scores in [0, 5]. Test sets have no labels (``label`` None).

TSV files (``download_glue_data.py`` layout, ``<glue_dir>/<CoLA|SST-2|...>/<train|dev|test>.tsv``):

=======  ===================================================  =========================  ==========
task     train/dev columns                                    test columns               labels
=======  ===================================================  =========================  ==========
CoLA     no header: source, label, original label, sentence   header: index, sentence    0 / 1
SST-2    header: sentence, label                              index, sentence            0 / 1
MRPC     Quality, #1 ID, #2 ID, #1 String, #2 String          index, #1 ID, ... #2 String 0 / 1
STS-B    index, genre, ..., sentence1, sentence2, score       (no score)                 float
QQP      id, qid1, qid2, question1, question2, is_duplicate   id, question1, question2   0 / 1
MNLI     index, ..., sentence1, sentence2, [label1..5], gold  index, ..., sentence2      names
QNLI     index, question, sentence, label                     index, question, sentence  names
RTE      index, sentence1, sentence2, label                   (no label)                 names
WNLI     index, sentence1, sentence2, label                   (no label)                 0 / 1
AX       --                                                   index, sentence1, sentence2  --
=======  ===================================================  =========================  ==========

MNLI dev/test files are ``dev_matched.tsv``, ``dev_mismatched.tsv``, ``test_matched.tsv``,
``test_mismatched.tsv``; AX is ``diagnostic/diagnostic.tsv``. Files are split on tabs with no quoting
(as the GLUE baselines read them). Columns are found by header name, so extra annotator columns
(MNLI ``label1``...) do not matter; a row whose column count differs from the header is an error
naming ``file:line`` (or a counted, logged skip with ``on_malformed='skip'``).

TFDS: ``tfds.data_source('glue/<task>', split=...)`` reads a dataset prepared in ArrayRecord format;
see docs/finetuning.md for preparing it. No TensorFlow is needed to read.
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

_MNLI_LABELS = ("entailment", "neutral", "contradiction")
_BINARY_FILE_LABELS = ("0", "1")
_NLI2_LABELS = ("entailment", "not_entailment")


@dataclasses.dataclass(frozen=True)
class GlueTask:
    """How one GLUE task is stored and scored.

    Attributes:
      name: TFDS config name (``cola``).
      display_name: GLUE's name (``CoLA``).
      directory: folder of the TSV files inside the GLUE data dir.
      text_columns: TSV header names of text a and text b (None for single-sentence tasks).
      label_column: TSV header name of the label (None: test-only task).
      tfds_text_features: the TFDS feature names of text a and text b.
      label_names: class names in index order (TFDS ``ClassLabel`` order); None for STS-B.
      file_labels: the label strings in the TSV files, same order; also what the GLUE server expects
        in submission files.
      split_files: split -> TSV file name.
      submission_files: test split -> submission file name (``MNLI-m.tsv``).
    """

    name: str
    display_name: str
    directory: str
    text_columns: tuple[str, str | None]
    label_column: str | None
    tfds_text_features: tuple[str, str | None]
    label_names: tuple[str, ...] | None
    file_labels: tuple[str, ...] | None
    split_files: dict[str, str]
    submission_files: dict[str, str]

    @property
    def is_regression(self) -> bool:
        return self.label_names is None

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.split_files)


def _standard_files(submission: str) -> dict[str, dict[str, str]]:
    return {
        "split_files": {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"},
        "submission_files": {"test": submission},
    }


def _mnli(name: str, matched: tuple[bool, ...]) -> GlueTask:
    split_files, submission_files = {}, {}
    if len(matched) == 2:
        split_files["train"] = "train.tsv"
    for is_matched in matched:
        kind = "matched" if is_matched else "mismatched"
        suffix = f"_{kind}" if len(matched) == 2 else ""
        split_files[f"validation{suffix}"] = f"dev_{kind}.tsv"
        split_files[f"test{suffix}"] = f"test_{kind}.tsv"
        submission_files[f"test{suffix}"] = "MNLI-m.tsv" if is_matched else "MNLI-mm.tsv"
    display = {"mnli": "MNLI", "mnli_matched": "MNLI-m", "mnli_mismatched": "MNLI-mm"}[name]
    return GlueTask(
        name, display, "MNLI", ("sentence1", "sentence2"), "gold_label", ("premise", "hypothesis"),
        _MNLI_LABELS, _MNLI_LABELS, split_files, submission_files,
    )


GLUE_TASKS: dict[str, GlueTask] = {
    task.name: task
    for task in (
        GlueTask(
            "cola", "CoLA", "CoLA", ("sentence", None), "label", ("sentence", None),
            ("unacceptable", "acceptable"), _BINARY_FILE_LABELS, **_standard_files("CoLA.tsv"),
        ),
        GlueTask(
            "sst2", "SST-2", "SST-2", ("sentence", None), "label", ("sentence", None),
            ("negative", "positive"), _BINARY_FILE_LABELS, **_standard_files("SST-2.tsv"),
        ),
        GlueTask(
            "mrpc", "MRPC", "MRPC", ("#1 String", "#2 String"), "Quality", ("sentence1", "sentence2"),
            ("not_equivalent", "equivalent"), _BINARY_FILE_LABELS, **_standard_files("MRPC.tsv"),
        ),
        GlueTask(
            "stsb", "STS-B", "STS-B", ("sentence1", "sentence2"), "score", ("sentence1", "sentence2"),
            None, None, **_standard_files("STS-B.tsv"),
        ),
        GlueTask(
            "qqp", "QQP", "QQP", ("question1", "question2"), "is_duplicate", ("question1", "question2"),
            ("not_duplicate", "duplicate"), _BINARY_FILE_LABELS, **_standard_files("QQP.tsv"),
        ),
        _mnli("mnli", (True, False)),
        _mnli("mnli_matched", (True,)),
        _mnli("mnli_mismatched", (False,)),
        GlueTask(
            "qnli", "QNLI", "QNLI", ("question", "sentence"), "label", ("question", "sentence"),
            _NLI2_LABELS, _NLI2_LABELS, **_standard_files("QNLI.tsv"),
        ),
        GlueTask(
            "rte", "RTE", "RTE", ("sentence1", "sentence2"), "label", ("sentence1", "sentence2"),
            _NLI2_LABELS, _NLI2_LABELS, **_standard_files("RTE.tsv"),
        ),
        GlueTask(
            "wnli", "WNLI", "WNLI", ("sentence1", "sentence2"), "label", ("sentence1", "sentence2"),
            ("not_entailment", "entailment"), _BINARY_FILE_LABELS, **_standard_files("WNLI.tsv"),
        ),
        GlueTask(
            "ax", "AX", "diagnostic", ("sentence1", "sentence2"), None, ("premise", "hypothesis"),
            _MNLI_LABELS, _MNLI_LABELS, {"test": "diagnostic.tsv"}, {"test": "AX.tsv"},
        ),
    )
}

_ALIASES = {task.display_name.lower(): task.name for task in GLUE_TASKS.values()}


def canonical_task_name(name: str) -> str:
    """``'glue/cola'``, ``'CoLA'``, ``'SST-2'``, ``'MNLI-mm'`` ... -> the TFDS config name.

    Raises:
      ValueError: naming the known tasks.
    """
    key = name.strip().lower().removeprefix("glue/")
    key = _ALIASES.get(key, key)
    if key not in GLUE_TASKS:
        raise ValueError(f"unknown GLUE task {name!r}; known: {sorted(GLUE_TASKS)} (or {sorted(_ALIASES)})")
    return key


def get_glue_task(name: str) -> GlueTask:
    """The :class:`GlueTask` for any accepted spelling of its name."""
    return GLUE_TASKS[canonical_task_name(name)]


def _check_split(task: GlueTask, split: str) -> None:
    if split not in task.split_files:
        raise ValueError(f"GLUE task {task.name!r} has no split {split!r}; its splits: {list(task.splits)}")


def glue_tsv_path(task_name: str, split: str, glue_dir: str) -> str:
    """Where the TSV file of ``split`` lives: ``<glue_dir>/<task dir>/<file>`` or ``<glue_dir>/<file>``.

    Raises:
      FileNotFoundError: naming both places looked at.
    """
    task = get_glue_task(task_name)
    _check_split(task, split)
    file_name = task.split_files[split]
    candidates = [os.path.join(glue_dir, task.directory, file_name), os.path.join(glue_dir, file_name)]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"GLUE {task.display_name} {split} file not found; looked for {candidates}. Get the files with "
        "the GLUE download script (download_glue_data.py) or use source='tfds'."
    )


# Gold STS-B similarity scores lie in [0, 5]; anything else (NaN included) is a malformed row.
STSB_SCORE_RANGE = (0.0, 5.0)


def _parse_label(task: GlueTask, raw: str, where: str) -> int | float:
    if task.is_regression:
        try:
            score = float(raw)
        except ValueError:
            raise ValueError(f"{where}: STS-B score {raw!r} is not a number") from None
        # NaN is the "unlabelled" marker downstream (the row would leave the loss unseen).
        if not STSB_SCORE_RANGE[0] <= score <= STSB_SCORE_RANGE[1]:
            raise ValueError(
                f"{where}: STS-B score {raw!r} is not a number in "
                f"[{STSB_SCORE_RANGE[0]:g}, {STSB_SCORE_RANGE[1]:g}]"
            )
        return score
    return features.label_index(raw, task.file_labels, where)


def read_glue_tsv(
    task_name: str,
    split: str,
    glue_dir: str,
    *,
    on_malformed: str = "error",
    stats: collections.Counter | None = None,
) -> list[features.TextPairExample]:
    """Reads one split of a GLUE task from the original TSV files.

    Args:
      task_name: any spelling :func:`canonical_task_name` accepts.
      split: one of the task's splits.
      glue_dir: the GLUE data folder (holding ``CoLA/``, ``MNLI/``, ...) or the task's own folder.
      on_malformed: ``'error'`` raises on a row whose column count differs from the header (or, for
        header-less CoLA, that has fewer than 4 columns) or whose label is unknown; ``'skip'`` skips
        it, logs a warning and counts it in ``stats['malformed_rows']``.
      stats: optional counter to add ``rows`` / ``malformed_rows`` to.

    Returns:
      The examples in file order; ``index`` is the file's ``index``/``id`` column for test files
      (what the submission lists) and the data row number (0-based, skipped rows included)
      otherwise.

    Raises:
      ValueError: naming ``file:line`` for a malformed row, a missing column, or an unknown label.
    """
    if on_malformed not in ("error", "skip"):
        raise ValueError(f"on_malformed must be 'error' or 'skip', got {on_malformed!r}")
    task = get_glue_task(task_name)
    path = glue_tsv_path(task.name, split, glue_dir)
    stats = stats if stats is not None else collections.Counter()
    is_test = split.startswith("test")
    headerless = task.name == "cola" and not is_test
    lines = features.read_lines(path)
    if headerless:  # CoLA train/dev: source, label, original label, sentence
        columns = {"label": 1, "sentence": 3}
        num_columns = None
    else:
        header_line = next(lines, None)
        if header_line is None:
            raise ValueError(f"{path}: empty file; expected a header line")
        header = header_line[1].split("\t")
        columns = {name: i for i, name in enumerate(header)}
        num_columns = len(header)
    text_a_col, text_b_col = task.text_columns
    wanted = [c for c in (text_a_col, text_b_col) if c is not None]
    label_col = None if (is_test or task.label_column is None) else ("label" if headerless else task.label_column)
    if label_col is not None:
        wanted.append(label_col)
    index_col = next((c for c in ("index", "id") if c in columns), None) if is_test else None
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise ValueError(f"{path}:1: header lacks the columns {missing}; found {sorted(columns)}")

    examples = []
    num_malformed = 0
    for data_row, (line_number, line) in enumerate(lines):
        where = f"{path}:{line_number}"
        row = line.split("\t")
        try:
            if (num_columns is not None and len(row) != num_columns) or (headerless and len(row) < 4):
                expected = num_columns if num_columns is not None else "at least 4"
                raise ValueError(f"{where}: expected {expected} tab-separated columns, got {len(row)}")
            label = None if label_col is None else _parse_label(task, row[columns[label_col]], where)
            index = data_row if index_col is None else int(row[columns[index_col]])
        except ValueError as e:
            if on_malformed == "error":
                raise
            num_malformed += 1
            logger.warning("skipping malformed GLUE row: %s", e)
            continue
        examples.append(
            features.TextPairExample(
                guid=where,
                index=index,
                text_a=row[columns[text_a_col]],
                text_b=None if text_b_col is None else row[columns[text_b_col]],
                label=label,
            )
        )
    stats["rows"] += len(examples)
    stats["malformed_rows"] += num_malformed
    if num_malformed:
        logger.warning("%s: skipped %d malformed rows", path, num_malformed)
    return examples


def read_glue_tfds(task_name: str, split: str, data_dir: str | None = None) -> list[features.TextPairExample]:
    """Reads one split of a GLUE task prepared for TFDS in ArrayRecord format (no TensorFlow).

    Args:
      task_name: any spelling :func:`canonical_task_name` accepts.
      split: a TFDS split of ``glue/<task>`` (slices such as ``'train[:1%]'`` work too).
      data_dir: the TFDS data dir (None: TFDS's default, ``~/tensorflow_datasets``).

    Returns:
      The examples; ``index`` is TFDS's ``idx`` and test labels (stored as -1) become None.
    """
    import tensorflow_datasets as tfds  # local: heavy, and only this path needs it
    import tensorflow_datasets.text.glue  # noqa: F401  registers the builder

    task = get_glue_task(task_name)
    source = tfds.data_source(f"glue/{task.name}", split=split, data_dir=data_dir)
    return glue_examples_from_records(task.name, split, (source[i] for i in range(len(source))))


def glue_examples_from_records(task_name: str, split: str, records) -> list[features.TextPairExample]:
    """Converts TFDS ``glue/<task>`` records (dicts) to examples; see :func:`read_glue_tfds`."""
    task = get_glue_task(task_name)
    feature_a, feature_b = task.tfds_text_features
    examples = []
    for record in records:
        index = int(record["idx"])
        raw_label = np.asarray(record["label"]).item()
        if task.is_regression:
            where = f"glue/{task.name}:{split}:{index}"
            label = None if split.startswith("test") else _parse_label(task, raw_label, where)
        else:
            label = None if raw_label < 0 else int(raw_label)
        examples.append(
            features.TextPairExample(
                guid=f"glue/{task.name}:{split}:{index}",
                index=index,
                text_a=features.as_text(record[feature_a]),
                text_b=None if feature_b is None else features.as_text(record[feature_b]),
                label=label,
            )
        )
    return examples


def write_glue_submission(
    task_name: str,
    split: str,
    indices: Sequence[int],
    predictions: Sequence[int | float] | np.ndarray,
    output_dir: str,
) -> str:
    """Writes a GLUE-server prediction file (``index<TAB>prediction`` with a header line).

    Classification predictions are class indices, written as the task's file labels (``0``/``1`` for
    CoLA, SST-2, MRPC, QQP, WNLI; names for MNLI, QNLI, RTE, AX); STS-B predictions are floats
    (written with 3 decimals, unclipped).

    Args:
      task_name: any spelling :func:`canonical_task_name` accepts.
      split: a test split of the task (``test``, ``test_matched``, ``test_mismatched``).
      indices: the examples' ``index`` values.
      predictions: one prediction per index.
      output_dir: created if missing.

    Returns:
      The path written, e.g. ``<output_dir>/MNLI-mm.tsv``.
    """
    task = get_glue_task(task_name)
    if split not in task.submission_files:
        raise ValueError(f"GLUE {task.display_name} has no submission for split {split!r}; use one of {list(task.submission_files)}")
    predictions = np.asarray(predictions)
    if len(indices) != len(predictions):
        raise ValueError(f"{len(indices)} indices but {len(predictions)} predictions")
    if task.is_regression:
        values = [f"{float(p):.3f}" for p in predictions]
    else:
        labels = task.file_labels
        bad = [int(p) for p in predictions if not 0 <= int(p) < len(labels)]
        if bad:
            raise ValueError(f"{task.display_name} predictions must be class indices in [0, {len(labels)}), got e.g. {bad[:5]}")
        values = [labels[int(p)] for p in predictions]
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, task.submission_files[split])
    with open(path, "w", encoding="utf-8") as f:
        f.write("index\tprediction\n")
        f.writelines(f"{int(i)}\t{v}\n" for i, v in zip(indices, values))
    return path
