"""Writing run outputs to local or remote directories through ``etils.epath``.

Workdirs may be local paths or object-store URIs (``gs://bucket/run``; remote paths need ``gcsfs``, the
fsspec backend ``etils.epath`` uses when TensorFlow is absent). Object stores have no append and no
directories: files are written whole, and ``mkdir`` is a no-op there.
"""

from __future__ import annotations

import json
import os
from typing import Any

from etils import epath


def is_remote(path: str | epath.Path) -> bool:
    """Whether ``path`` is an object-store URI (``gs://``, ``s3://``, ...) rather than a local path."""
    return "://" in str(path)


def absolute(path: str | os.PathLike) -> epath.Path:
    """``path`` as an absolute ``epath.Path`` (relative local paths against the working directory; URIs
    as they are). Orbax refuses relative checkpoint paths."""
    return epath.Path(path if is_remote(path) else os.path.abspath(path))


def write_text(path: str | epath.Path, text: str) -> str:
    """Writes ``text`` (UTF-8) to ``path``, creating its parent directory; returns the path."""
    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


def write_json(path: str | epath.Path, content: Any, *, ensure_ascii: bool = True) -> str:
    """Writes ``content`` as indented JSON (non-JSON values through ``str``); returns the path."""
    return write_text(path, json.dumps(content, indent=2, default=str, ensure_ascii=ensure_ascii))


def read_json(path: str | epath.Path) -> Any:
    """Reads a JSON file from a local or remote ``path``."""
    return json.loads(epath.Path(path).read_text(encoding="utf-8"))
