"""What a prepared dataset was built from: a fingerprint stored with it and checked on every open.

A dataset this repository builds (books folder, Wikipedia dump) lives under a name derived from its
source (the folder's or the dump's file name), so two different sources can map to one name: a
second folder called ``corpus``, files added to the folder, or a re-downloaded
``enwiki-latest-pages-articles.xml.bz2``. The builder therefore records, in the dataset's
``metadata.json`` (key :data:`METADATA_KEY`), a fingerprint of what it read:

* the source's absolute path, and for each file read its size and modification time (ns);
* for a dump, also a SHA-256 of its first and last MiB, so a dump replaced in place by another
  one is told apart even when its size and modification time were preserved (``cp -p``);
* the options that change the text (books ``format`` and ``max_line_bytes``; the wikitext cleaning
  version) and the builder's version.

:func:`check_prepared` compares it with the fingerprint of the source the spec names now. On a
mismatch the dataset is rebuilt when the spec says ``prepare`` and refused otherwise, with one line
naming both sources. When the source is not on this machine (reading a copied dataset, which needs
only the name), nothing can be compared and the stored dataset is used.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping

from etils import epath

METADATA_KEY = "source_fingerprint"
_EDGE_BYTES = 1 << 20  # bytes hashed at each end of a large file

log = logging.getLogger(__name__)


class StaleDatasetError(ValueError):
    """A prepared dataset was built from another source than the one the spec names."""


def file_state(path: str | os.PathLike) -> dict:
    """``{'size': bytes, 'mtime_ns': int}`` of one file (local or any ``epath`` file system)."""
    if "://" in str(path):
        stat = epath.Path(path).stat()
        return {"size": int(stat.length), "mtime_ns": int(stat.mtime) * 10**9}
    stat = os.stat(path)
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def edge_digest(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's first and last MiB (the whole file when it is smaller than 2 MiB)."""
    digest = hashlib.sha256()
    with epath.Path(path).open("rb") as stream:
        head = stream.read(_EDGE_BYTES)
        digest.update(head)
        if len(head) == _EDGE_BYTES:
            stream.seek(0, os.SEEK_END)
            end = stream.tell()
            stream.seek(max(_EDGE_BYTES, end - _EDGE_BYTES))
            digest.update(stream.read())
    return digest.hexdigest()


def make_fingerprint(
    *, kind: str, location: str, files: Mapping[str, Mapping], options: Mapping, description: str
) -> dict:
    """The fingerprint of one source (JSON-serialisable).

    Args:
      kind: the builder, with its version (``'books 1.0.0'``).
      location: the source's absolute path.
      files: file path (relative to ``location``, ``''`` for the source file itself) -> its state.
      options: everything else that changes the built text.
      description: how the source is named in messages (path, file count, size, newest mtime).

    Returns:
      ``{'digest': sha256 hex of everything but the description, 'source': description}``.
    """
    payload = {"kind": kind, "location": location, "files": files, "options": options}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
    return {"digest": digest, "source": description}


def describe_files(location: str, states: Iterable[Mapping], noun: str) -> str:
    """``"<location> (3 .txt files, 1,234 bytes, newest modified 2026-12-02T07:10:27Z)"``."""
    states = list(states)
    newest = max((state["mtime_ns"] for state in states), default=0) / 1e9
    stamp = datetime.datetime.fromtimestamp(newest, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    count = f"{len(states)} {noun}{'s' if len(states) != 1 else ''}, " if noun else ""
    return (f"{location} ({count}{sum(state['size'] for state in states):,} bytes, "
            f"newest modified {stamp})")


def check_prepared(builder, current: Mapping | None, *, prepare: bool, prepare_command: str) -> bool:
    """Whether a prepared dataset must be rebuilt because it was built from another source.

    Args:
      builder: a prepared TFDS builder (its ``info.metadata`` was read from disk).
      current: the fingerprint of the source the spec names now; None when it cannot be read here.
      prepare: the spec's ``prepare``: True allows a rebuild.
      prepare_command: the command that rebuilds it, quoted in the error.

    Returns:
      True when the stored fingerprint differs and ``prepare`` is on (the caller rebuilds).

    Raises:
      StaleDatasetError: it differs and ``prepare`` is off (one line naming both sources).
    """
    if current is None:
        log.info("dataset %s: its source is not on this machine; using the prepared copy unverified",
                 builder.info.full_name)
        return False
    stored = builder.info.metadata.get(METADATA_KEY)
    if stored is not None and stored.get("digest") == current["digest"]:
        return False
    built_from = stored["source"] if stored else "an unrecorded source (no fingerprint: an older build)"
    message = (f"dataset {builder.info.full_name} in {builder.data_dir} was built from {built_from}, "
               f"but the source spec names {current['source']}")
    if not prepare:
        raise StaleDatasetError(f"{message}; rebuild it with `{prepare_command}` or set 'prepare': True")
    log.warning("%s; rebuilding it", message)
    return True
