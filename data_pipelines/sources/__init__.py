"""Pretraining document sources behind one dispatch: ``get_source(spec, split)``.

A *source spec* is a plain mapping (it lives in ``ml_collections`` configs):

============== ===================================================================================
``name``        ``'wikipedia_dump'`` | ``'books'`` | ``'tfds'`` | ``'synthetic'`` | ``'bbc_news'``
``weight``      mixture weight, read by the loader (ignored here; default 1.0)
``eval_fraction`` share of documents held out for ``split='eval'`` (default ``0.01``)
...             the source's own fields, listed in ``SOURCE_FIELDS`` (see each module)
============== ===================================================================================

Every source is a random-access, picklable ``DocumentSource`` (Grain worker processes unpickle it):
``len(source)`` documents, ``source[i]`` the ``i``-th document's text (lines = paragraphs or
sentences, joined by ``'\\n'``; see ``data_pipelines.text``).

The held-out split is by document and deterministic: document ``i`` of the prepared dataset is in
``eval`` iff a salted 64-bit mix of ``i`` falls below ``eval_fraction``. The record order of a
prepared TFDS dataset is fixed by hashing each example's key (the article id, the book path), so the
same documents are held out on every run and machine; ``train`` and ``eval`` are disjoint and
together are ``all``.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np

from data_pipelines.sources import bbc_news, books, synthetic, tfds_text, wikipedia_dump
from data_pipelines.sources.wikipedia_dump import demo_dump_path

__all__ = ["DocumentSource", "HeldOutSplit", "SOURCE_FIELDS", "SPLITS", "demo_dump_path",
           "get_source", "heldout_mask"]

SPLITS = ("train", "eval", "all")
DEFAULT_EVAL_FRACTION = 0.01
# Fields every spec may carry, whatever the source.
COMMON_FIELDS = frozenset({"name", "weight", "eval_fraction"})
# name -> (function(spec) -> DocumentSource for the whole prepared dataset, its allowed fields).
_OPENERS = {
    "wikipedia_dump": (wikipedia_dump.open_source, wikipedia_dump.SPEC_FIELDS),
    "books": (books.open_source, books.SPEC_FIELDS),
    "tfds": (tfds_text.open_source, tfds_text.SPEC_FIELDS),
    "synthetic": (synthetic.open_source, synthetic.SPEC_FIELDS),
    "bbc_news": (bbc_news.open_source, bbc_news.SPEC_FIELDS),
}
SOURCE_FIELDS: dict[str, frozenset[str]] = {
    name: COMMON_FIELDS | fields for name, (_, fields) in _OPENERS.items()
}
# Fixed salt of the held-out split (changing it reshuffles which documents are held out).
_HELDOUT_SALT = 0x5EED_BE27_0D0C_5A17


@runtime_checkable
class DocumentSource(Protocol):
    """Random access to documents; must pickle (it is sent to Grain worker processes)."""

    name: str

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> str: ...


def get_source(spec: Mapping, split: str = "train") -> DocumentSource:
    """Opens the documents a source spec names.

    Args:
      spec: ``{'name': ..., 'weight': float, 'eval_fraction': float, ...source fields...}``; the
        allowed fields per source are ``SOURCE_FIELDS[name]``. A file-backed source whose dataset is
        not prepared raises ``FileNotFoundError`` naming the ``python -m launch.prepare_data ...``
        command, unless the spec says ``'prepare': True`` (then it is built first).
      split: ``'train'`` | ``'eval'`` (the deterministic held-out documents) | ``'all'``.

    Returns:
      A ``DocumentSource`` whose ``name`` is ``spec['name']``.

    Raises:
      ValueError: unknown source name, unknown spec field, bad split or eval_fraction, or an empty
        split.
    """
    name = spec.get("name")
    if name not in _OPENERS:
        raise ValueError(f"source spec {dict(spec)!r}: 'name' must be one of {sorted(_OPENERS)}")
    unknown = set(spec) - SOURCE_FIELDS[name]
    if unknown:
        raise ValueError(
            f"source spec for {name!r} has unknown field(s) {sorted(unknown)}; "
            f"allowed: {sorted(SOURCE_FIELDS[name])}"
        )
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    eval_fraction = float(spec.get("eval_fraction", DEFAULT_EVAL_FRACTION))
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction of source {name!r} must be in [0, 1), got {eval_fraction}")
    opener, _ = _OPENERS[name]
    documents = opener(spec)
    if split == "all":
        return documents
    held_out = HeldOutSplit(documents, split, eval_fraction)
    if len(held_out) == 0:
        raise ValueError(
            f"the {split!r} split of source {name!r} is empty ({len(documents)} documents, "
            f"eval_fraction={eval_fraction}); raise eval_fraction or use a larger corpus"
        )
    return held_out


def heldout_mask(num_documents: int, eval_fraction: float) -> np.ndarray:
    """Which documents are held out: a salted splitmix64 of each index, compared to the fraction.

    Args:
      num_documents: ``N``, the number of documents.
      eval_fraction: the expected share of ``True`` values.

    Returns:
      ``bool[N]``: ``True`` for held-out (eval) documents. Deterministic: depends only on the index.
    """
    x = np.arange(num_documents, dtype=np.uint64) ^ np.uint64(_HELDOUT_SALT)
    x = x + np.uint64(0x9E3779B97F4A7C15)  # uint64 array arithmetic wraps modulo 2**64
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    uniform = (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return uniform < eval_fraction


class HeldOutSplit:
    """The train or eval documents of a source (see the module docstring for the rule).

    The index map is rebuilt lazily after unpickling, so a pickled split stays small.

    Attributes:
      name: the base source's name.
      base: the whole source.
      split: ``'train'`` or ``'eval'``.
      eval_fraction: the held-out share.
    """

    def __init__(self, base: DocumentSource, split: str, eval_fraction: float):
        if split not in ("train", "eval"):
            raise ValueError(f"HeldOutSplit split must be 'train' or 'eval', got {split!r}")
        self.name = base.name
        self.base = base
        self.split = split
        self.eval_fraction = eval_fraction
        self._indices: np.ndarray | None = None

    @property
    def indices(self) -> np.ndarray:
        """``int64[len(self)]``: the base-source index of each document of this split."""
        if self._indices is None:
            mask = heldout_mask(len(self.base), self.eval_fraction)
            self._indices = np.flatnonzero(mask if self.split == "eval" else ~mask)
        return self._indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> str:
        index = operator.index(index)
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name}/{self.split}: index {index} not in [0, {len(self)})")
        return self.base[int(self.indices[index])]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_indices": None}

    def __repr__(self) -> str:
        return f"HeldOutSplit({self.base!r}, split={self.split!r}, eval_fraction={self.eval_fraction})"
