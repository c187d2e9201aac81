"""Deterministic generated documents for tests and benchmarks: no files, any size, random access.

Spec (``name: 'synthetic'``):

======================== ======================================================================
``num_documents``         how many documents (default 1000)
``seed``                  document ``i`` depends only on ``(seed, i)`` (default 0)
``vocab_size``            size of the pseudo-word lexicon, drawn with Zipf(1) frequencies (2000)
``sentences_per_document`` ``(min, max)`` inclusive (default ``(2, 16)``)
``words_per_sentence``    ``(min, max)`` inclusive (default ``(4, 24)``)
======================== ======================================================================

Words are pronounceable syllable strings (``"tavo"``, ``"kelumi"``), so WordPiece/SentencePiece
split them into realistic sub-words. Sentences start upper-case and end with ``.`` (or ``?``);
each line (paragraph) holds 1-4 sentences, so ``split_sentences`` recovers them exactly.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping

import numpy as np

SPEC_FIELDS = frozenset({
    "num_documents", "seed", "vocab_size", "sentences_per_document", "words_per_sentence",
})
_ONSETS = ("", "b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "st", "tr")
_VOWELS = ("a", "e", "i", "o", "u")
_LEXICON_SEED = 20181011  # the lexicon is the same for every spec seed


def _pseudo_words(vocab_size: int) -> list[str]:
    """``vocab_size`` distinct pronounceable words of 1-4 syllables (frequent words shorter).

    Words have at least 3 letters, so none reads as an initial (``u.``) or abbreviation (``no.``).
    """
    rng = np.random.default_rng(_LEXICON_SEED)
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < vocab_size:
        rank = len(words)
        syllables = 1 + min(3, int(rng.integers(0, 2 + rank // 200)))
        word = "".join(
            _ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))]
            for _ in range(syllables)
        )
        if len(word) >= 3 and word not in seen:
            seen.add(word)
            words.append(word)
    return words


class SyntheticSource:
    """Seeded random documents; ``source[i]`` is recomputed on demand (nothing is stored)."""

    def __init__(
        self,
        num_documents: int = 1000,
        seed: int = 0,
        vocab_size: int = 2000,
        sentences_per_document: tuple[int, int] = (2, 16),
        words_per_sentence: tuple[int, int] = (4, 24),
    ):
        if num_documents < 0 or vocab_size < 1:
            raise ValueError(
                f"synthetic source needs num_documents >= 0 and vocab_size >= 1, got "
                f"{num_documents} and {vocab_size}"
            )
        for field, (low, high) in (("sentences_per_document", sentences_per_document),
                                   ("words_per_sentence", words_per_sentence)):
            if not 1 <= low <= high:
                raise ValueError(f"synthetic source: {field} must be (min, max) with 1 <= min <= max")
        self.name = "synthetic"
        self.num_documents = int(num_documents)
        self.seed = int(seed)
        self.sentences_per_document = tuple(sentences_per_document)
        self.words_per_sentence = tuple(words_per_sentence)
        self._lexicon = np.array(_pseudo_words(vocab_size), dtype=object)
        frequencies = 1.0 / np.arange(1, vocab_size + 1)
        self._cdf = np.cumsum(frequencies / frequencies.sum())

    def __len__(self) -> int:
        return self.num_documents

    def __getitem__(self, index: int) -> str:
        index = operator.index(index)
        if not 0 <= index < self.num_documents:
            raise IndexError(f"synthetic: index {index} not in [0, {self.num_documents})")
        rng = np.random.default_rng([self.seed, index])
        num_sentences = int(rng.integers(self.sentences_per_document[0],
                                         self.sentences_per_document[1] + 1))
        sentences = [self._sentence(rng) for _ in range(num_sentences)]
        lines, start = [], 0
        while start < num_sentences:
            stop = start + int(rng.integers(1, 5))
            lines.append(" ".join(sentences[start:stop]))
            start = stop
        return "\n".join(lines)

    def _sentence(self, rng: np.random.Generator) -> str:
        length = int(rng.integers(self.words_per_sentence[0], self.words_per_sentence[1] + 1))
        ranks = np.minimum(np.searchsorted(self._cdf, rng.random(length)), len(self._cdf) - 1)
        words = list(self._lexicon[ranks])
        words[0] = words[0].capitalize()
        return " ".join(words) + ("?" if rng.random() < 0.1 else ".")

    def __repr__(self) -> str:
        return f"SyntheticSource(num_documents={self.num_documents}, seed={self.seed})"


def open_source(spec: Mapping) -> SyntheticSource:
    """The synthetic source a spec describes (see the module docstring for the fields)."""
    kwargs = {key: spec[key] for key in SPEC_FIELDS if key in spec}
    return SyntheticSource(**kwargs)
