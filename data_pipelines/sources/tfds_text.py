"""Documents from any prepared TFDS dataset with a text feature, read through ``tfds.data_source``.

Spec (``name: 'tfds'``):

=============== =================================================================================
``dataset``      TFDS name, with config/version if needed: ``'wikipedia/20230601.en'``
``data_dir``     where it is prepared (default: TFDS's ``~/tensorflow_datasets``)
``text_field``   the top-level text feature holding the document (default ``'text'``)
``tfds_split``   the TFDS split to read (default ``'train'``); our train/eval split is carved from it
``prepare``      ``True``: run ``download_and_prepare`` when missing (default ``False``: raise)
=============== =================================================================================

The dataset must be in the ArrayRecord file format (random access; no TensorFlow needed to read).
See ``docs/data.md`` for how to prepare one, or point ``data_dir`` at an existing copy. ArrayRecord
files are opened with local file I/O: a ``gs://`` bucket must be copied down or mounted (gcsfuse).

``TfdsTextSource`` and ``open_built_source`` are also what the Wikipedia-dump and books sources use,
since both are TFDS builders: every source with files on disk is read the same way.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence

import tensorflow_datasets as tfds

from data_pipelines.sources import fingerprint
from data_pipelines.text import normalize_document

SPEC_FIELDS = frozenset({"dataset", "data_dir", "text_field", "tfds_split", "prepare"})
ARRAY_RECORD = "array_record"
DEFAULT_DATA_DIR = "./data"  # where this repository's own builders write by default


class TfdsTextSource:
    """One text feature of a TFDS random-access data source, as normalised ``str`` documents.

    Attributes:
      name: the source name reported to the loader (e.g. ``'wikipedia_dump'``).
      text_field: the feature read from each record.
    """

    def __init__(self, records: Sequence[Mapping], name: str, text_field: str = "text"):
        """Wraps ``records`` (e.g. ``builder.as_data_source('train')``; must pickle)."""
        self.name = name
        self.text_field = text_field
        self._records = records

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> str:
        index = operator.index(index)
        if not 0 <= index < len(self._records):
            raise IndexError(f"{self.name}: index {index} not in [0, {len(self._records)})")
        value = self._records[index][self.text_field]
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        return normalize_document(value)

    def record(self, index: int) -> Mapping:
        """The raw decoded record (all features, ``bytes`` for text) at ``index``."""
        return self._records[operator.index(index)]

    def __repr__(self) -> str:
        return f"TfdsTextSource(name={self.name!r}, documents={len(self)}, field={self.text_field!r})"


def open_prepared(
    builder: tfds.core.DatasetBuilder, *, prepare: bool, prepare_command: str
) -> tfds.core.DatasetBuilder:
    """Returns ``builder`` once its dataset exists on disk, building it first if asked to.

    Args:
      builder: a TFDS builder pointed at its ``data_dir``.
      prepare: build the dataset (ArrayRecord) when it is missing.
      prepare_command: the shell command that prepares it, quoted in the error.

    Raises:
      FileNotFoundError: the dataset is not prepared and ``prepare`` is false.
    """
    if not builder.is_prepared():
        if not prepare:
            raise FileNotFoundError(
                f"dataset {builder.info.full_name} is not prepared in {builder.data_dir} "
                f"(no {builder.data_path}). Prepare it with:\n  {prepare_command}\n"
                "or set 'prepare': True in the source spec."
            )
        builder.download_and_prepare(
            file_format=ARRAY_RECORD,
            download_config=tfds.download.DownloadConfig(try_download_gcs=False),
        )
    return builder


def open_built_source(
    builder_for: Callable[[Mapping], tfds.core.DatasetBuilder], spec: Mapping, name: str,
    prepare_command: str,
) -> TfdsTextSource:
    """The ``text`` of every example of one of this repository's builders (built if ``prepare``).

    A prepared dataset is reused only if it was built from the source the spec names (see
    ``data_pipelines.sources.fingerprint``): otherwise it is rebuilt (``prepare``) or refused.

    Args:
      builder_for: ``spec -> builder`` whose dataset has one ``train`` split with a ``text``
        feature, and whose ``source_fingerprint()`` describes the source it reads (None if absent).
      spec: the source spec (its ``prepare`` field is read).
      name: the source name reported to the loader.
      prepare_command: quoted in the errors when the dataset is missing or stale.

    Raises:
      FileNotFoundError: not prepared and ``prepare`` is off.
      fingerprint.StaleDatasetError: prepared from another source and ``prepare`` is off.
    """
    prepare = bool(spec.get("prepare", False))
    builder = builder_for(spec)
    if builder.is_prepared() and fingerprint.check_prepared(
        builder, builder.source_fingerprint(), prepare=prepare, prepare_command=prepare_command
    ):
        builder.data_path.rmtree()
        builder = builder_for(spec)  # a fresh builder: the old one holds the removed dataset's info
    open_prepared(builder, prepare=prepare, prepare_command=prepare_command)
    return TfdsTextSource(builder.as_data_source(split="train"), name, "text")


def safe_config_name(raw: str) -> str:
    """A TFDS config name (letters, digits, ``_ - . +``) made from a file or folder name."""
    return re.sub(r"[^\w\-.+]+", "_", raw).strip("_.")


def open_source(spec: Mapping) -> TfdsTextSource:
    """All documents of the ``tfds`` source a spec names (see the module docstring)."""
    dataset = spec.get("dataset")
    if not dataset:
        raise ValueError(f"tfds source spec {dict(spec)!r} needs 'dataset' (e.g. 'wikipedia/20230601.en')")
    data_dir = spec.get("data_dir")
    text_field = spec.get("text_field", "text")
    tfds_split = spec.get("tfds_split", "train")
    command = (
        f"tfds build {dataset} --file_format={ARRAY_RECORD}"
        + (f" --data_dir={data_dir}" if data_dir else "")
        + "   (see docs/data.md, 'TFDS datasets')"
    )
    try:
        builder = tfds.builder(dataset, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise FileNotFoundError(
            f"TFDS dataset {dataset!r} was found neither in the TFDS catalog nor prepared in "
            f"data_dir={data_dir!r}. Prepare it with:\n  {command}"
        ) from error
    open_prepared(builder, prepare=bool(spec.get("prepare", False)), prepare_command=command)
    if text_field not in builder.info.features:
        raise ValueError(
            f"TFDS dataset {dataset!r} has no feature {text_field!r}; set 'text_field' to one of "
            f"{sorted(builder.info.features)}"
        )
    if tfds_split not in builder.info.splits:
        raise ValueError(
            f"TFDS dataset {dataset!r} has no split {tfds_split!r}; set 'tfds_split' to one of "
            f"{sorted(builder.info.splits)}"
        )
    return TfdsTextSource(builder.as_data_source(split=tfds_split), "tfds", text_field)
