"""Training a WordPiece vocabulary or a SentencePiece model on text or on a configured data source.

:func:`train_tokenizer` writes the files and returns the loaded :class:`~data_pipelines.tokenizer.Tokenizer`
(the five special tokens get ids 0..4); :func:`build_vocab_from_source` reads a source first
(``python -m launch.build_vocab``; ``tokenizer.build_if_missing`` in a run config).
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import sentencepiece
import tokenizers
from tokenizers import pre_tokenizers, trainers

from data_pipelines.sentencepiece_tokenizer import SentencePieceTokenizer
from data_pipelines.tokenizer import (
    CLS,
    HF_TOKENIZER_FILE,
    NORMALIZER_DEFAULTS,
    MASK,
    MAX_WORDPIECE_CHARS_PER_WORD,
    PAD,
    SENTENCEPIECE_MODEL_TYPES,
    SEP,
    SENTENCEPIECE_MODEL_FILE,
    SPECIAL_TOKENS,
    UNK,
    WORDPIECE_CONTINUATION_PREFIX,
    WORDPIECE_CONFIG_FILE,
    WORDPIECE_VOCAB_FILE,
    Tokenizer,
    WordPieceTokenizer,
    _spec_dict,
    bert_normalizer,
)

logger = logging.getLogger(__name__)

# WordPiece alphabet cap: at most this many distinct characters become tokens (the most frequent; the
# rest encode as [UNK]). Covers the 2,350 common Hangul syllables, the 3,500 common Chinese characters,
# or the 2,136 joyo kanji plus kana, with Latin, Cyrillic, Greek and punctuation besides; a corpus
# only spends slots on the characters it has.
DEFAULT_LIMIT_ALPHABET = 8000


class _CountingTexts:
    """Iterates over texts, skipping empty ones, and counts what it yields."""

    def __init__(self, texts: Iterable[str]):
        self._texts = texts
        self.num_texts = 0
        self.num_empty = 0

    def __iter__(self) -> Iterator[str]:
        for text in self._texts:
            if not text or text.isspace():
                self.num_empty += 1
                continue
            self.num_texts += 1
            yield text

    def lines(self) -> Iterator[str]:
        """Non-empty lines of every text (SentencePiece trains on sentences, not documents)."""
        for text in self:
            for line in text.splitlines():
                if line and not line.isspace():
                    yield line


def train_tokenizer(texts: Iterable[str], spec: Mapping[str, Any], out_dir: str) -> Tokenizer:
    """Trains a new vocabulary on ``texts``, writes it to ``out_dir`` and loads it.

    The five special tokens get ids 0..4 in the order of :data:`SPECIAL_TOKENS`.

    Args:
      texts: documents (any length; SentencePiece trains on their non-empty lines). Empty texts are
        skipped and counted.
      spec: ``kind`` and ``vocab_size`` (required); ``lowercase`` (default True). WordPiece:
        ``min_frequency`` (2), ``limit_alphabet`` (None: :data:`DEFAULT_LIMIT_ALPHABET`),
        ``strip_accents`` (None: follows ``lowercase``; False keeps Hangul syllables whole when
        lowercasing), ``tokenize_chinese_chars`` (True); the normaliser options are recorded in
        ``tokenizer_config.json``, so loading the vocab.txt applies them again. SentencePiece:
        ``model_type`` ('unigram' or 'bpe', default 'unigram'),
        ``character_coverage`` (0.9995), ``input_sentence_size`` (sentences sampled, 1,000,000),
        ``max_sentence_length`` (bytes; longer lines are skipped by the trainer, 16384),
        ``num_threads`` (os.cpu_count()); ``convention='deberta'`` trains DeBERTa-v3's layout
        (``data_pipelines.deberta_spm``: ``vocab_size - 1`` pieces, then ``[MASK]``; cased by default).
      out_dir: where ``vocab.txt`` + ``tokenizer_config.json`` or ``spm.model`` go.

    Returns:
      The trained tokenizer, loaded from ``out_dir``; its ``spec`` loads it again.

    Raises:
      ValueError: a bad spec, or no non-empty text.
    """
    spec = _spec_dict(spec)
    kind = spec["kind"]
    vocab_size = spec.get("vocab_size")
    if not isinstance(vocab_size, int) or vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"train_tokenizer needs an integer 'vocab_size' > {len(SPECIAL_TOKENS)}, got {vocab_size!r}")
    lowercase = bool(spec.get("lowercase", True))
    counted = _CountingTexts(texts)
    os.makedirs(out_dir, exist_ok=True)
    if kind == "wordpiece":
        tokenizer = _train_wordpiece(counted, spec, vocab_size, lowercase, out_dir)
    elif kind == "bpe":  # byte-level BPE, RoBERTa's specials first (data_pipelines/bpe.py); cased by default
        from data_pipelines import bpe  # pylint: disable=import-outside-toplevel

        tokenizer = bpe.train_bpe(counted, vocab_size, out_dir, min_frequency=int(spec.get("min_frequency", 2)),
                                  lowercase=bool(spec.get("lowercase", False)))
        if counted.num_texts == 0:
            raise _no_text_error(counted)
    elif spec.get("convention") == "deberta":  # DeBERTa-v3's layout; [MASK] is the id after the pieces
        from data_pipelines import deberta_spm  # pylint: disable=import-outside-toplevel  (builds on this module)

        tokenizer = deberta_spm.train_deberta_spm(
            counted, vocab_size - 1, out_dir, lowercase=bool(spec.get("lowercase", False)),
            character_coverage=float(spec.get("character_coverage", 0.9995)),
            input_sentence_size=int(spec.get("input_sentence_size", 1_000_000)),
            max_sentence_length=int(spec.get("max_sentence_length", 16384)), num_threads=spec.get("num_threads"))
    else:
        tokenizer = _train_sentencepiece(counted, spec, vocab_size, lowercase, out_dir)
    logger.info(
        "trained a %s vocabulary of %d tokens on %d texts (%d empty skipped) -> %s",
        kind, tokenizer.vocab_size, counted.num_texts, counted.num_empty, out_dir,
    )
    if tokenizer.vocab_size < vocab_size:
        logger.warning(
            "the corpus only supports %d of the %d requested %s tokens", tokenizer.vocab_size, vocab_size, kind
        )
    return tokenizer


def _canonical_order(vocab_file: str) -> None:
    """Rewrites a trained vocab.txt in an order that depends only on its tokens.

    The ``tokenizers`` WordPiece trainer orders the alphabet, and merges of equal count, by Rust hash-map
    iteration, which is seeded randomly per process: the same corpus gives (nearly) the same tokens in a
    different order each time, so different ids for the same pieces. Sorted instead: the special tokens
    first (ids 0..4), then the single characters, then the longer pieces, each by code point. Which
    tokens take the last slots can still differ between builds (equal-count merges at the cut-off).
    """
    with open(vocab_file, encoding="utf-8") as f:
        tokens = [line.rstrip("\n") for line in f]
    special = [t for t in SPECIAL_TOKENS if t in tokens]
    rest = [t for t in tokens if t not in SPECIAL_TOKENS]
    piece_length = lambda t: len(t.removeprefix(WORDPIECE_CONTINUATION_PREFIX))  # noqa: E731
    ordered = special + sorted(rest, key=lambda t: (piece_length(t) > 1, t))
    with open(vocab_file, "w", encoding="utf-8") as f:
        f.writelines(token + "\n" for token in ordered)


def _no_text_error(counted: _CountingTexts) -> ValueError:
    return ValueError(f"no text to train a tokenizer on ({counted.num_empty} empty texts, 0 non-empty)")


def _train_wordpiece(
    counted: _CountingTexts, spec: dict, vocab_size: int, lowercase: bool, out_dir: str
) -> WordPieceTokenizer:
    strip_accents = spec.get("strip_accents")
    chinese_chars = spec.get("tokenize_chinese_chars")
    chinese_chars = NORMALIZER_DEFAULTS["tokenize_chinese_chars"] if chinese_chars is None else bool(chinese_chars)
    limit_alphabet = spec.get("limit_alphabet")
    limit_alphabet = DEFAULT_LIMIT_ALPHABET if limit_alphabet is None else int(limit_alphabet)
    backend = tokenizers.Tokenizer(
        tokenizers.models.WordPiece(
            unk_token=UNK,
            continuing_subword_prefix=WORDPIECE_CONTINUATION_PREFIX,
            max_input_chars_per_word=MAX_WORDPIECE_CHARS_PER_WORD,
        )
    )
    backend.normalizer = bert_normalizer(lowercase, strip_accents, chinese_chars)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=int(spec.get("min_frequency", 2)),
        limit_alphabet=limit_alphabet,
        special_tokens=list(SPECIAL_TOKENS),
        continuing_subword_prefix=WORDPIECE_CONTINUATION_PREFIX,
        show_progress=False,
    )
    backend.train_from_iterator(iter(counted), trainer=trainer)
    if counted.num_texts == 0:
        raise _no_text_error(counted)
    backend.model.save(out_dir)  # writes vocab.txt in id order
    vocab_file = os.path.join(out_dir, WORDPIECE_VOCAB_FILE)
    _canonical_order(vocab_file)
    for stale in (HF_TOKENIZER_FILE, WORDPIECE_CONFIG_FILE):  # an earlier build's options would be read back
        if os.path.exists(os.path.join(out_dir, stale)):
            os.remove(os.path.join(out_dir, stale))
    tokenizer = WordPieceTokenizer(vocab_file, lowercase=lowercase, strip_accents=strip_accents,
                                   tokenize_chinese_chars=chinese_chars)
    tokenizer.save(out_dir)  # adds tokenizer_config.json (the normaliser options) next to vocab.txt
    return tokenizer


def _train_sentencepiece(
    counted: _CountingTexts, spec: dict, vocab_size: int, lowercase: bool, out_dir: str
) -> SentencePieceTokenizer:
    model_type = spec.get("model_type", "unigram")
    if model_type not in SENTENCEPIECE_MODEL_TYPES:
        raise ValueError(f"sentencepiece 'model_type' must be one of {SENTENCEPIECE_MODEL_TYPES}, got {model_type!r}")
    model = io.BytesIO()
    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=counted.lines(),
            model_writer=model,
            model_type=model_type,
            vocab_size=vocab_size,
            character_coverage=float(spec.get("character_coverage", 0.9995)),
            input_sentence_size=int(spec.get("input_sentence_size", 1_000_000)),
            shuffle_input_sentence=True,
            max_sentence_length=int(spec.get("max_sentence_length", 16384)),
            num_threads=int(spec.get("num_threads", os.cpu_count() or 1)),
            # nmt_nfkc_cf = NFKC + case folding: lowercasing lives in the model itself.
            normalization_rule_name="nmt_nfkc_cf" if lowercase else "nmt_nfkc",
            pad_id=0,
            pad_piece=PAD,
            unk_id=1,
            unk_piece=UNK,
            bos_id=-1,
            eos_id=-1,
            user_defined_symbols=[CLS, SEP, MASK],  # ids 2, 3, 4
            minloglevel=2,
        )
    except RuntimeError:
        if counted.num_texts == 0:
            raise _no_text_error(counted) from None
        raise
    model_file = os.path.join(out_dir, SENTENCEPIECE_MODEL_FILE)
    with open(model_file, "wb") as f:
        f.write(model.getvalue())
    return SentencePieceTokenizer(model_file)


def build_vocab_from_source(
    source_spec: Mapping[str, Any],
    tokenizer_spec: Mapping[str, Any],
    out_dir: str,
    split: str = "train",
    max_documents: int | None = None,
) -> Tokenizer:
    """Trains a vocabulary on the documents of a configured data source (``launch/build_vocab.py``).

    Args:
      source_spec: what ``data_pipelines.sources.get_source`` takes.
      tokenizer_spec: what :func:`train_tokenizer` takes.
      out_dir: where the vocabulary goes.
      split: the source split to read.
      max_documents: read at most this many documents (None: all).

    Returns:
      The trained tokenizer; ``tokenizer.spec`` is the spec that loads it.
    """
    from data_pipelines import sources  # here, so tokenization works without the source modules

    source = sources.get_source(source_spec, split)
    num_documents = len(source) if max_documents is None else min(len(source), int(max_documents))
    logger.info("building a %s vocabulary from %d documents of %s", tokenizer_spec.get("kind"), num_documents, source_spec)
    return train_tokenizer((source[i] for i in range(num_documents)), tokenizer_spec, out_dir)
