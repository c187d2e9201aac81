"""Training instances from documents: NSP sentence pairs (original BERT) and packing segments.

Pure NumPy + the tokenizer; no jax, no Grain (the loader wires these into a Grain pipeline that runs
in worker processes). Every function is deterministic given its ``numpy.random.Generator``, and
documents are read by index, so a document's instances can be rebuilt from a seed derived from
``(seed, epoch, document index)`` and the indices of its document group (NotNext segments).

NSP instances follow ``create_instances_from_document`` of google-research/bert:
  * ``max_num_tokens = max_seq_length - 3``; with probability ``short_seq_prob`` the document's target
    length is a random integer in ``[2, max_num_tokens]`` (drawn once per document, as the original).
  * Sentences are accumulated into a chunk until the target length is reached or the document ends;
    segment A is the first ``a_end`` sentences of the chunk (``a_end`` uniform in
    ``[1, len(chunk) - 1]``).
  * Segment B is the rest of the chunk ("IsNext", label 0) or, with probability 0.5 (always when the
    chunk holds one sentence), a span from another document ("NotNext", label 1); the chunk's unused
    sentences are then put back and start the next chunk.
  * The pair is truncated to ``max_num_tokens``, one token at a time from the longer segment, at the
    front or the back at random. The removal counts per segment follow from the lengths alone, and
    each removal's side is a fair coin, so the split into front/back removals is drawn as a binomial
    (same distribution as the original's token-by-token loop, without the loop).
  * Rows are ``[CLS] A [SEP] B [SEP]`` padded to ``max_seq_length``; segment ids 0 for ``[CLS] A
    [SEP]``, 1 for ``B [SEP]``.

The random span of a "NotNext" pair starts at a uniformly random sentence of another document, as in
the original; the other document is drawn from the current document's group (see
:class:`DocumentInstanceMaker`) and is never the current document.

NSP modes (``nsp_mode``):
  * ``'paper'``: the original recipe above. A chunk of one sentence (a one-sentence document, the last
    sentence of a document left alone, one sentence longer than the target) cannot be split, so its
    pair is always NotNext: on short documents about 60% of the pairs are NotNext, not 50%.
  * ``'balanced'``: every pair's label is a fair coin. A chunk keeps taking sentences until it holds at
    least two (the target length is exceeded and truncation trims the pair); a single sentence left
    at the end of a document makes no pair (it is counted; it still serves as other documents'
    random next segments). NotNext segments still come from other documents only. By Wald's identity
    the expected NotNext share is exactly 1/2, whatever the document lengths.

Segments for packing (RoBERTa FULL-SENTENCES style, no NSP): a document's tokens cut into pieces of
at most ``max_seq_length - 2`` tokens, each wrapped as ``[CLS] piece [SEP]``; the loader packs the
segments of consecutive documents into rows, so a row can span documents (each keeps its own
``sequence_ids``). By default the cut falls every ``S - 2`` tokens, so rows fill to ~99%; with
``whole_sentences`` a segment holds only whole sentences (RoBERTa's exact rule), which at ``S = 128``
leaves ~13% of each row empty on Wikipedia.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from data_pipelines.rows import encoder_rows
from data_pipelines.text import split_sentences

logger = logging.getLogger(__name__)

_RANDOM_DOCUMENT_TRIES = 10
NSP_MODES = ("paper", "balanced")
# NSP labels (the convention of data_pipelines.batch).
IS_NEXT, NOT_NEXT = 0, 1


class Documents(Protocol):
    """Random access to document texts (a ``DocumentSource`` or a slice of one)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> str: ...


def tokenize_sentences(text: str, tokenizer, split: bool = True) -> list[np.ndarray]:
    """Splits a document into sentences and tokenizes them in one batch call.

    Args:
      text: the document (``'\\n'`` between paragraphs).
      tokenizer: a ``data_pipelines.tokenizer.Tokenizer``.
      split: False tokenizes whole lines instead of sentences (cheaper; the same tokens for WordPiece,
        whose pre-tokenizer splits at the whitespace between sentences anyway).

    Returns:
      One int32 ``[n_i]`` array per sentence (or line) that has at least one token.
    """
    pieces = split_sentences(text) if split else [line for line in text.split("\n") if line]
    if not pieces:
        return []
    return [ids for ids in tokenizer.encode_batch(pieces) if ids.size]


def truncation_counts(length_a: int, length_b: int, max_num_tokens: int) -> tuple[int, int]:
    """How many tokens the original ``truncate_seq_pair`` removes from A and from B.

    It removes one token at a time from the longer segment (from B on ties) until the pair fits.

    Returns:
      ``(removed_from_a, removed_from_b)``.
    """
    excess = length_a + length_b - max_num_tokens
    if excess <= 0:
        return 0, 0
    gap = abs(length_a - length_b)
    if gap >= excess:
        return (excess, 0) if length_a > length_b else (0, excess)
    # Equalise first, then alternate starting with B (the tie goes to B).
    rest = excess - gap
    from_a, from_b = rest // 2, rest - rest // 2
    if length_a > length_b:
        from_a += gap
    else:
        from_b += gap
    return from_a, from_b


def _trim(tokens: np.ndarray, removed: int, rng: np.random.Generator) -> np.ndarray:
    """Removes ``removed`` tokens, each from the front or the back with probability 1/2."""
    if removed == 0:
        return tokens
    from_front = int(rng.binomial(removed, 0.5))
    return tokens[from_front : tokens.size - (removed - from_front)]


def truncate_pair(
    tokens_a: np.ndarray, tokens_b: np.ndarray, max_num_tokens: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Truncates a segment pair to ``max_num_tokens`` in total, as the original recipe does."""
    from_a, from_b = truncation_counts(tokens_a.size, tokens_b.size, max_num_tokens)
    return _trim(tokens_a, from_a, rng), _trim(tokens_b, from_b, rng)


def pair_rows(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    labels: Sequence[int],
    *,
    max_seq_length: int,
    cls_id: int,
    sep_id: int,
    pad_id: int,
) -> dict[str, np.ndarray]:
    """Lays out ``[CLS] A [SEP] B [SEP]`` rows.

    Args:
      pairs: ``(tokens_a, tokens_b)`` int arrays with ``len(a) + len(b) <= max_seq_length - 3``.
      labels: NSP label per pair (:data:`IS_NEXT` / :data:`NOT_NEXT`).
      max_seq_length: ``S``.
      cls_id, sep_id, pad_id: special ids.

    Returns:
      ``input_ids``, ``segment_ids``, ``input_mask`` int32 ``[n, S]`` and ``next_sentence_label``
      int32 ``[n]``.
    """
    n = len(pairs)
    rows = encoder_rows([a for a, _ in pairs], [b for _, b in pairs], length=max_seq_length, cls_id=cls_id,
                        sep_id=sep_id, pad_id=pad_id)
    rows["next_sentence_label"] = np.asarray(labels, dtype=np.int32).reshape(n)
    return rows


def create_nsp_pairs(
    sentences: Sequence[np.ndarray],
    rng: np.random.Generator,
    *,
    max_seq_length: int,
    short_seq_prob: float,
    random_span: Callable[[np.random.Generator, int], np.ndarray | None],
    mode: str = "paper",
    unpaired: list[int] | None = None,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[int], int]:
    """The original recipe's sentence pairs from one document (see the module docstring).

    Args:
      sentences: the document's tokenized sentences, each non-empty.
      rng: the random source.
      max_seq_length: ``S``; pairs hold at most ``S - 3`` tokens.
      short_seq_prob: probability of a shorter target length for this document.
      random_span: ``(rng, target_length) -> tokens`` from another document, or None if no other
        document has tokens.
      mode: ``'paper'`` (the original) or ``'balanced'`` (every label a fair coin; see the module
        docstring).
      unpaired: balanced mode: the index of each final lone sentence that made no pair is appended.

    Returns:
      ``(pairs, labels, num_failed)``: truncated ``(tokens_a, tokens_b)`` pairs, their NSP labels, and
      how many random-next pairs were dropped because ``random_span`` found nothing.
    """
    if mode not in NSP_MODES:
        raise ValueError(f"nsp_mode must be one of {NSP_MODES}, got {mode!r}")
    balanced = mode == "balanced"
    max_num_tokens = max_seq_length - 3
    if max_num_tokens < 2:
        raise ValueError(f"max_seq_length must be at least 5 for sentence pairs, got {max_seq_length}")
    target_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_length = int(rng.integers(2, max_num_tokens + 1))
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    labels: list[int] = []
    num_failed = 0
    chunk: list[np.ndarray] = []
    chunk_length = 0
    i = 0
    while i < len(sentences):
        chunk.append(sentences[i])
        chunk_length += sentences[i].size
        last = i == len(sentences) - 1
        if last or (chunk_length >= target_length and (len(chunk) >= 2 or not balanced)):
            if balanced and len(chunk) == 1:  # a lone final sentence: no IsNext possible, no pair
                if unpaired is not None:
                    unpaired.append(i)
                break
            a_end = int(rng.integers(1, len(chunk))) if len(chunk) >= 2 else 1
            tokens_a = np.concatenate(chunk[:a_end])
            if len(chunk) == 1 or rng.random() < 0.5:
                label = NOT_NEXT
                tokens_b = random_span(rng, max(1, target_length - tokens_a.size))
                i -= len(chunk) - a_end  # put the unused sentences back
            else:
                label = IS_NEXT
                tokens_b = np.concatenate(chunk[a_end:])
            if tokens_b is None or tokens_b.size == 0:
                num_failed += 1
            else:
                pairs.append(truncate_pair(tokens_a, tokens_b, max_num_tokens, rng))
                labels.append(label)
            chunk, chunk_length = [], 0
        i += 1
    return pairs, labels, num_failed


def create_segments(
    sentences: Sequence[np.ndarray], max_seq_length: int, whole_sentences: bool = False
) -> list[np.ndarray]:
    """Cuts a document's tokens into segments of at most ``max_seq_length - 2`` tokens.

    Args:
      sentences: the document's tokenized sentences, each non-empty.
      max_seq_length: ``S``; each segment leaves room for ``[CLS]`` and ``[SEP]``.
      whole_sentences: False: the document's tokens are cut every ``S - 2`` tokens (only the last
        segment is shorter, so packed rows fill up). True: each segment holds as many consecutive
        whole sentences as fit (RoBERTa's FULL-SENTENCES inputs; a sentence longer than ``S - 2`` is
        still cut), which leaves part of a sentence's room unused per segment.

    Returns:
      int32 token arrays (no special tokens), in document order.
    """
    limit = max_seq_length - 2
    if limit < 1:
        raise ValueError(f"max_seq_length must be at least 3 for segments, got {max_seq_length}")
    if not sentences:
        return []
    if not whole_sentences:
        tokens = np.concatenate(sentences).astype(np.int32, copy=False)
        return [tokens[k : k + limit] for k in range(0, tokens.size, limit)]
    segments: list[np.ndarray] = []
    current: list[np.ndarray] = []
    current_length = 0
    for sentence in sentences:
        if current and current_length + sentence.size > limit:
            segments.append(np.concatenate(current))
            current, current_length = [], 0
        if sentence.size > limit:
            pieces = [sentence[k : k + limit] for k in range(0, sentence.size, limit)]
            segments.extend(pieces[:-1])
            sentence = pieces[-1]
        current.append(sentence)
        current_length += sentence.size
    if current:
        segments.append(np.concatenate(current))
    return [segment.astype(np.int32, copy=False) for segment in segments]


def wrap_segments(segments: Sequence[np.ndarray], cls_id: int, sep_id: int) -> list[np.ndarray]:
    """``[CLS] segment [SEP]`` for each segment (int32, variable length)."""
    out = []
    for segment in segments:
        row = np.empty(segment.size + 2, dtype=np.int32)
        row[0], row[1:-1], row[-1] = cls_id, segment, sep_id
        out.append(row)
    return out


class SkipLog:
    """Counts documents that yield nothing, by reason, and logs them without flooding the log.

    Each process (the main one or a loader worker) holds its own counts.
    """

    def __init__(self, source_name: str, log_every: int = 1000):
        self.source_name = source_name
        self.log_every = log_every
        self.num_documents = 0
        self.skipped: collections.Counter[str] = collections.Counter()

    def record(self, index: int, reason: str) -> None:
        """Counts a skipped document; logs the first ten and then every ``log_every``-th."""
        self.skipped[reason] += 1
        total = sum(self.skipped.values())
        if total <= 10 or total % self.log_every == 0:
            logger.warning(
                "source %s: skipped document %d (%s); %d of %d documents skipped so far (%s)",
                self.source_name, index, reason, total, self.num_documents, dict(self.skipped),
            )


class DocumentInstanceMaker:
    """Turns a group of document indices into their training rows (NSP pairs or segments).

    Documents come in small groups (the loader passes consecutive documents of the shuffled order,
    so a group is a random set of documents). NSP random next segments are taken from the other
    documents of the group, which are in memory and tokenized already: a random span costs a slice
    instead of reading and tokenizing a whole other document (a book, say) per instance. Only when no
    other document of the group has tokens is a random document of the shard read instead.

    Picklable: holds the documents, the tokenizer and plain settings, so Grain can ship it to
    worker processes.

    Attributes:
      skip_log: this process's count of skipped documents.
    """

    def __init__(
        self,
        documents: Documents,
        tokenizer,
        *,
        max_seq_length: int,
        nsp: bool,
        short_seq_prob: float = 0.1,
        min_document_tokens: int = 2,
        whole_sentences: bool = False,
        source_name: str = "documents",
        nsp_mode: str = "paper",
    ):
        """Stores the settings.

        Args:
          documents: the documents this maker reads (random access): one process's shard.
          tokenizer: a ``data_pipelines.tokenizer.Tokenizer``.
          max_seq_length: ``S``.
          nsp: True for NSP sentence pairs, False for segments.
          short_seq_prob: NSP only: probability of a shorter target length.
          min_document_tokens: documents with fewer tokens are skipped (counted and logged).
          whole_sentences: segments only: see :func:`create_segments`.
          source_name: for log messages.
          nsp_mode: NSP only: ``'paper'`` or ``'balanced'`` (see the module docstring).

        Raises:
          ValueError: NSP over fewer than two documents (no other document for random spans), or an
            unknown ``nsp_mode``.
        """
        if nsp_mode not in NSP_MODES:
            raise ValueError(f"source {source_name!r}: nsp_mode must be one of {NSP_MODES}, got {nsp_mode!r}")
        if nsp and len(documents) < 2:
            raise ValueError(
                f"source {source_name!r}: NSP needs at least 2 documents per process shard to draw "
                f"random next segments, got {len(documents)}"
            )
        self.documents = documents
        self.tokenizer = tokenizer
        self.max_seq_length = int(max_seq_length)
        self.nsp = bool(nsp)
        self.short_seq_prob = float(short_seq_prob)
        self.min_document_tokens = int(min_document_tokens)
        self.whole_sentences = bool(whole_sentences)
        self.nsp_mode = nsp_mode
        self.skip_log = SkipLog(source_name)

    def document_sentences(self, index: int) -> list[np.ndarray] | None:
        """The tokenized sentences of document ``index``, or None (counted) when it is too short."""
        self.skip_log.num_documents += 1
        # Sentence boundaries matter only for NSP pairs and whole-sentence segments.
        split = self.nsp or self.whole_sentences
        sentences = tokenize_sentences(self.documents[index], self.tokenizer, split=split)
        num_tokens = sum(s.size for s in sentences)
        if num_tokens == 0:
            self.skip_log.record(index, "empty after tokenization")
            return None
        if num_tokens < self.min_document_tokens:
            self.skip_log.record(index, f"fewer than {self.min_document_tokens} tokens")
            return None
        return sentences

    def rows(self, indices: Sequence[int], rngs: Sequence[np.random.Generator]) -> list:
        """The rows of a group of documents.

        Args:
          indices: document indices (distinct).
          rngs: one random source per document (so a document's rows depend on its own seed).

        Returns:
          One entry per document, in order: NSP: a :func:`pair_rows` block; segments: a list of
          ``[CLS] ... [SEP]`` int32 arrays (each at most ``S`` long); None for a skipped document.
        """
        group = [self.document_sentences(int(index)) for index in indices]
        out: list = []
        for position, (index, sentences, rng) in enumerate(zip(indices, group, rngs)):
            if sentences is None:
                out.append(None)
                continue
            if not self.nsp:
                segments = create_segments(sentences, self.max_seq_length, self.whole_sentences)
                out.append(wrap_segments(segments, self.tokenizer.cls_id, self.tokenizer.sep_id))
                continue
            others = [other for k, other in enumerate(group) if other is not None and k != position]
            if not others:  # every other document of the group is empty: read one from the shard
                other = self._random_shard_document(rng, int(index))
                others = [] if other is None else [other]
            unpaired: list[int] = []
            pairs, labels, num_failed = create_nsp_pairs(
                sentences,
                rng,
                max_seq_length=self.max_seq_length,
                short_seq_prob=self.short_seq_prob,
                random_span=lambda r, target, o=others: (
                    random_span(o[int(r.integers(0, len(o)))], r, target) if o else None
                ),
                mode=self.nsp_mode,
                unpaired=unpaired,
            )
            if unpaired and not pairs:  # a one-sentence document (balanced mode): nothing to learn NSP on
                self.skip_log.record(int(index), "a single sentence: no balanced NSP pair")
            if num_failed:
                self.skip_log.record(int(index), f"{num_failed} pairs without a random next segment")
            tokenizer = self.tokenizer
            out.append(
                pair_rows(pairs, labels, max_seq_length=self.max_seq_length, cls_id=tokenizer.cls_id,
                          sep_id=tokenizer.sep_id, pad_id=tokenizer.pad_id)
                if pairs else None
            )
        return out

    def _random_shard_document(self, rng: np.random.Generator, exclude: int) -> list[np.ndarray] | None:
        """The tokenized sentences of a random shard document other than ``exclude`` (None: none found)."""
        for _ in range(_RANDOM_DOCUMENT_TRIES):
            other = int(rng.integers(0, len(self.documents) - 1))
            other += other >= exclude  # uniform over the other documents, never ``exclude``
            sentences = tokenize_sentences(self.documents[other], self.tokenizer)
            if sentences:
                return sentences
        return None


def random_span(sentences: Sequence[np.ndarray], rng: np.random.Generator, target_length: int) -> np.ndarray:
    """Whole sentences from a uniformly random start sentence until ``target_length`` tokens are reached.

    Args:
      sentences: a document's tokenized sentences, non-empty list of non-empty arrays.
      rng: the random source.
      target_length: stop once at least this many tokens are collected (or the document ends).

    Returns:
      int32 tokens, at least one sentence.
    """
    start = int(rng.integers(0, len(sentences)))
    lengths = np.cumsum([s.size for s in sentences[start:]])
    stop = start + 1 + int(np.searchsorted(lengths, target_length))  # first prefix reaching the target
    return np.concatenate(sentences[start:stop]).astype(np.int32, copy=False)


def pad_rows(sequences: Sequence[np.ndarray], length: int, pad_value: int) -> np.ndarray:
    """Stacks variable-length int sequences into an int32 ``[n, length]`` block, right-padded."""
    block = np.full((len(sequences), length), pad_value, dtype=np.int32)
    for row, sequence in enumerate(sequences):
        block[row, : sequence.size] = sequence
    return block
