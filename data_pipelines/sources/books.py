"""A TFDS builder for BooksCorpus-style local text, and its source.

Spec (``name: 'books'``):

================= ===============================================================================
``books_dir``      folder searched recursively for ``*.txt`` files (other files are ignored, counted)
``format``         ``'book_per_file'`` (default): each file is one book, each non-blank line a
                   paragraph. ``'bert'``: the original BERT input format -- one sentence per line,
                   a blank line between documents (one file may hold millions of documents)
``config``         optional dataset config name (default: ``<folder name>-<format>``; the dataset
                   records the folder's fingerprint, so another folder of the same name, or files
                   added, changed or removed, rebuild it or are refused: see ``fingerprint``)
``data_dir``       where the ArrayRecord dataset lives (default ``./data``)
``prepare``        ``True``: build it when missing (default ``False``: raise naming the command)
``max_line_bytes`` lines longer than this are skipped and counted (default 1 MiB)
================= ===============================================================================

Files are streamed line by line with a bounded ``readline``, so neither a 4 GB file nor a 50 MB
single line is ever held in memory. Bad input is never lost silently; the builder logs and stores in
``metadata.json`` a summary with these counts:

* ``binary_files``: files whose first 8 KiB contain a NUL byte (skipped whole);
  ``binary_lines``: later lines containing NUL (skipped).
* ``invalid_utf8_lines``: lines that are not valid UTF-8. They are *kept*, each bad byte replaced
  by U+FFFD: one stray Latin-1 byte should not cost a whole book.
* ``overlong_lines``: lines over ``max_line_bytes`` (not prose: minified data, a lost newline).
* ``empty_documents``: documents with no text left (empty or whitespace-only book files, files
  without a single non-blank line, BERT-format documents whose every line was skipped).
* ``other_files``: non-``.txt`` files ignored; ``txt_files``: files read; ``kept``: documents written.

Each example has features ``id`` (the file path relative to ``books_dir``, plus ``#n`` for the
n-th document of a BERT-format file), ``title`` (the relative path) and ``text``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

import tensorflow_datasets as tfds
from etils import epath

from data_pipelines.sources import fingerprint
from data_pipelines.sources.tfds_text import (
    DEFAULT_DATA_DIR, TfdsTextSource, open_built_source, safe_config_name,
)
from data_pipelines.text import normalize_document

SPEC_FIELDS = frozenset({"books_dir", "format", "config", "data_dir", "prepare", "max_line_bytes"})
FORMATS = ("book_per_file", "bert")
DEFAULT_MAX_LINE_BYTES = 1 << 20
_BINARY_SNIFF_BYTES = 8192

log = logging.getLogger(__name__)


@dataclasses.dataclass
class BooksSummary:
    """Counts of what the builder read, skipped and kept (see the module docstring)."""

    txt_files: int = 0
    other_files: int = 0
    binary_files: int = 0
    binary_lines: int = 0
    invalid_utf8_lines: int = 0
    overlong_lines: int = 0
    empty_documents: int = 0
    kept: int = 0


def bounded_lines(stream: BinaryIO, max_line_bytes: int) -> Iterator[bytes | None]:
    """Yields the lines of a binary stream without their line break, never holding a long line.

    Args:
      stream: opened in binary mode.
      max_line_bytes: longest line (without its ``\\n``) that is returned.

    Yields:
      Each line's bytes; ``None`` in place of a longer line (consumed in bounded chunks).
    """
    while chunk := stream.readline(max_line_bytes + 1):
        if len(chunk) > max_line_bytes and not chunk.endswith(b"\n"):
            while (rest := stream.readline(max_line_bytes + 1)) and not rest.endswith(b"\n"):
                pass
            yield None
        else:
            yield chunk.rstrip(b"\r\n")


def _decoded_lines(path: Path, summary: BooksSummary, max_line_bytes: int) -> Iterator[str]:
    """The text lines of one file (blank lines included as ``''``), counting what is skipped."""
    with path.open("rb") as stream:
        first = True
        for raw in bounded_lines(stream, max_line_bytes):
            if raw is None:
                summary.overlong_lines += 1
                continue
            if b"\x00" in raw:
                summary.binary_lines += 1
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                summary.invalid_utf8_lines += 1
                line = raw.decode("utf-8", errors="replace")
            if first:
                line, first = line.removeprefix("\ufeff"), False  # byte-order mark
            yield line


def _is_binary(path: Path) -> bool:
    with path.open("rb") as stream:
        return b"\x00" in stream.read(_BINARY_SNIFF_BYTES)


def iter_book_documents(
    books_dir: str | os.PathLike, book_format: str, summary: BooksSummary,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Iterator[tuple[str, str, str]]:
    """Streams ``(id, title, text)`` for every non-empty document under ``books_dir``.

    Args:
      books_dir: folder of ``.txt`` files (searched recursively, in sorted path order).
      book_format: ``'book_per_file'`` or ``'bert'`` (see the module docstring).
      summary: counts updated in place (complete once the iterator is exhausted).
      max_line_bytes: longer lines are skipped and counted.

    Raises:
      FileNotFoundError: ``books_dir`` is missing or holds no ``.txt`` file.
      ValueError: unknown ``book_format``.
    """
    if book_format not in FORMATS:
        raise ValueError(f"books format must be one of {FORMATS}, got {book_format!r}")
    root = epath.Path(books_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f"books_dir {str(root)!r} is not a folder; expected a folder of .txt files "
            f"(format {book_format!r})"
        )
    txt_paths, num_other = _txt_files(root)
    summary.other_files += num_other
    if not txt_paths:
        raise FileNotFoundError(f"books_dir {str(root)!r} contains no .txt files")
    for path in txt_paths:
        summary.txt_files += 1
        if _is_binary(path):
            summary.binary_files += 1
            continue
        title = path.relative_to(root).as_posix()
        lines = _decoded_lines(path, summary, max_line_bytes)
        if book_format == "book_per_file":
            documents = [(title, "\n".join(lines))]
        else:
            documents = ((f"{title}#{n}", text) for n, text in enumerate(_bert_documents(lines)))
        produced = False
        for key, text in documents:
            produced = True
            text = normalize_document(text)
            if text:
                summary.kept += 1
                yield key, title, text
            else:
                summary.empty_documents += 1
        if not produced:
            summary.empty_documents += 1


def _txt_files(root: epath.Path) -> tuple[list[epath.Path], int]:
    """The ``.txt`` files under ``root`` (recursively, sorted by path) and the number of other files."""
    paths = sorted(epath.Path(folder) / name for folder, _, names in root.walk() for name in names)
    txt_paths = [path for path in paths if path.suffix.lower() == ".txt"]
    return txt_paths, len(paths) - len(txt_paths)


def books_fingerprint(books_dir: str, book_format: str, max_line_bytes: int, version: str) -> dict | None:
    """What a books dataset is built from: every ``.txt`` file's size and mtime, and the options.

    Returns:
      A ``data_pipelines.sources.fingerprint.make_fingerprint`` dict; None when ``books_dir`` is
      not a folder here (nothing to compare).
    """
    root = epath.Path(books_dir)
    if not books_dir or not root.is_dir():
        return None
    location = str(root if "://" in books_dir else root.resolve())
    txt_paths, _ = _txt_files(root)
    files = {path.relative_to(root).as_posix(): fingerprint.file_state(path) for path in txt_paths}
    return fingerprint.make_fingerprint(
        kind=f"books {version}", location=location, files=files,
        options={"format": book_format, "max_line_bytes": max_line_bytes},
        description=f"books folder {fingerprint.describe_files(location, files.values(), '.txt file')}",
    )


def _bert_documents(lines: Iterator[str]) -> Iterator[str]:
    """Groups sentence lines into documents at blank lines; yields each document's text."""
    block: list[str] = []
    for line in lines:
        if line.strip():
            block.append(line)
        elif block:
            yield "\n".join(block)
            block = []
    if block:
        yield "\n".join(block)


@dataclasses.dataclass
class BooksConfig(tfds.core.BuilderConfig):
    """Which folder to build and how to read it."""

    books_dir: str = ""
    book_format: str = "book_per_file"
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES


class Books(tfds.core.GeneratorBasedBuilder):
    """One example per book (or BERT-format document) of a local folder of ``.txt`` files."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Plain-text books; bad input skipped and counted."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                f"Books from the local folder {self.builder_config.books_dir or '?'} "
                f"(format {self.builder_config.book_format})."
            ),
            features=tfds.features.FeaturesDict({
                "id": tfds.features.Text(),
                "title": tfds.features.Text(),
                "text": tfds.features.Text(),
            }),
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def source_fingerprint(self) -> dict | None:
        """What this config's folder holds now (see ``data_pipelines.sources.fingerprint``)."""
        config = self.builder_config
        return books_fingerprint(config.books_dir, config.book_format, config.max_line_bytes,
                                 str(self.VERSION))

    def _generate_examples(self):
        config = self.builder_config
        summary = BooksSummary()
        # Taken before reading: a file changed during the build makes the next open rebuild.
        self.info.metadata[fingerprint.METADATA_KEY] = self.source_fingerprint()
        for key, title, text in iter_book_documents(
            config.books_dir, config.book_format, summary, config.max_line_bytes
        ):
            yield key, {"id": key, "title": title, "text": text}
        self.info.metadata["summary"] = dataclasses.asdict(summary)
        log.info("Books %s (%s): %s", config.books_dir, config.book_format, summary)
        if not summary.kept:
            raise ValueError(f"no documents in books_dir {config.books_dir!r}: {summary}")


def builder_for(spec: Mapping) -> Books:
    """The builder a ``books`` spec names (not built yet)."""
    books_dir = spec.get("books_dir")
    book_format = spec.get("format", "book_per_file")
    if book_format not in FORMATS:
        raise ValueError(f"books source: 'format' must be one of {FORMATS}, got {book_format!r}")
    config_name = spec.get("config")
    if not config_name:
        if not books_dir:
            raise ValueError(f"books source spec {dict(spec)!r} needs 'books_dir' (or 'config')")
        directory = epath.Path(books_dir)
        folder = safe_config_name((directory if "://" in str(books_dir) else directory.resolve()).name) or "books"
        config_name = f"{folder}-{book_format}"
    config = BooksConfig(
        name=config_name, books_dir=str(books_dir or ""), book_format=book_format,
        max_line_bytes=int(spec.get("max_line_bytes", DEFAULT_MAX_LINE_BYTES)),
    )
    return Books(config=config, data_dir=spec.get("data_dir", DEFAULT_DATA_DIR))


def prepare_command(spec: Mapping) -> str:
    """The shell command that builds the dataset a ``books`` spec names."""
    books_dir = spec.get("books_dir") or "<folder/of/txt/files>"
    return (
        f"python -m launch.prepare_data --source=books --books_dir={books_dir} "
        f"--books_format={spec.get('format', 'book_per_file')} "
        f"--data_dir={spec.get('data_dir', DEFAULT_DATA_DIR)}"
    )


def open_source(spec: Mapping) -> TfdsTextSource:
    """All documents of the prepared books dataset a spec names (built first if ``prepare``)."""
    return open_built_source(builder_for, spec, "books", prepare_command(spec))
