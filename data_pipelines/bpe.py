"""Byte-level BPE (GPT-2 / RoBERTa) through Hugging Face ``tokenizers``: kind ``"bpe"``.

A spec ``{"kind": "bpe", "vocab_file": ...}`` names a ``tokenizers`` JSON (``tokenizer.json``, e.g.
RoBERTa's) or a ``vocab.json`` with its ``merges.txt`` beside it. The pipeline built from a
``vocab.json`` is the one ``transformers.RobertaTokenizerFast`` builds (BPE without dropout or
prefixes, byte-level pre-tokenizer without a prefix space, byte-level decoder, RoBERTa's
post-processor trimming offsets), so ids are equal; a ``tokenizer.json`` is used as it is.

Special tokens are RoBERTa's: ``<s>`` (our ``[CLS]`` role: rows are ``<s> ... </s>``), ``</s>``
(``[SEP]``), ``<pad>``, ``<unk>``, ``<mask>`` (which, as in RoBERTa's tokenizer, absorbs the space
before it). A pair row is RoBERTa's ``<s> a </s></s> b </s>`` (``Tokenizer.pair_separator``: two
``</s>``). A vocabulary trained here (:func:`train_bpe`, ``tokenizers.ByteLevelBPETokenizer``'s
trainer) puts them first as ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3, ``<mask>`` 4
(``roberta-base`` has the first four at those ids), so ``model.pad_token_id=1``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

from data_pipelines import tokenizer as tokenizer_lib

BOS, PAD, EOS, UNK, MASK = "<s>", "<pad>", "</s>", "<unk>", "<mask>"
# In the id order of a vocabulary trained here (ids 0..4).
SPECIAL_TOKENS: tuple[str, ...] = (BOS, PAD, EOS, UNK, MASK)
# Our special-token roles -> RoBERTa's tokens.
ROLES = {tokenizer_lib.CLS: BOS, tokenizer_lib.SEP: EOS, tokenizer_lib.PAD: PAD, tokenizer_lib.UNK: UNK,
         tokenizer_lib.MASK: MASK}
VOCAB_FILE, MERGES_FILE = "vocab.json", "merges.txt"
WORD_START = "\u0120"  # 'Ġ', the byte-level spelling of a leading space


def _added_tokens() -> list[tokenizers.AddedToken]:
    return [tokenizers.AddedToken(t, special=True, lstrip=t == MASK, normalized=False) for t in SPECIAL_TOKENS]


def roberta_backend(vocab_file: str, merges_file: str, lowercase: bool = False) -> tokenizers.Tokenizer:
    """The ``RobertaTokenizerFast`` pipeline over a ``vocab.json`` and ``merges.txt``."""
    backend = tokenizers.Tokenizer(models.BPE.from_file(
        vocab_file, merges_file, dropout=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    if lowercase:
        backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(_added_tokens())
    missing = [t for t in SPECIAL_TOKENS if backend.token_to_id(t) is None]
    if missing:
        raise ValueError(f"{vocab_file}: the vocabulary lacks the special tokens {missing}")
    backend.post_processor = processors.RobertaProcessing(
        (EOS, backend.token_to_id(EOS)), (BOS, backend.token_to_id(BOS)), trim_offsets=True, add_prefix_space=False)
    return backend


def _load_backend(vocab_file: str, lowercase: bool) -> tokenizers.Tokenizer:
    """The backend of a ``tokenizer.json`` (as stored) or of a ``vocab.json`` + sibling ``merges.txt``."""
    tokenizer_lib._require_file(vocab_file, "bpe", "vocabulary file")
    if not vocab_file.endswith(VOCAB_FILE):
        data = tokenizer_lib._read_json(vocab_file)
        model = data.get("model") or {}
        if model.get("type") != "BPE":
            raise ValueError(f"{vocab_file}: model.type is {model.get('type')!r}; a byte-level BPE tokenizer.json "
                             "holds a BPE model")
        backend = tokenizers.Tokenizer.from_str(json.dumps(data))
        if lowercase:
            raise ValueError(f"{vocab_file}: lowercase=True with a tokenizer.json; its normalizer decides casing")
        return backend
    merges = os.path.join(os.path.dirname(vocab_file), MERGES_FILE)
    if not os.path.isfile(merges):
        raise FileNotFoundError(f"{vocab_file}: no {MERGES_FILE} beside it (a byte-level BPE vocab.json needs one)")
    return roberta_backend(vocab_file, merges, lowercase)


class BPETokenizer(tokenizer_lib.Tokenizer):
    """Byte-level BPE (RoBERTa's tokenizer) behind the :class:`~data_pipelines.tokenizer.Tokenizer` interface."""

    kind = "bpe"
    pair_separator_length = 2  # <s> a </s></s> b </s>, as RobertaTokenizerFast builds a pair

    def __init__(self, vocab_file: str, lowercase: bool = False):
        """Loads a byte-level BPE tokenizer.

        Args:
          vocab_file: a ``tokenizer.json`` (BPE model) or a ``vocab.json`` with ``merges.txt`` beside it.
          lowercase: lowercase the text first (``vocab.json`` only; RoBERTa is cased).

        Raises:
          FileNotFoundError: naming the missing file.
          ValueError: a tokenizer.json that is not BPE, ids that are not ``0..n-1``, or missing specials.
        """
        backend = _load_backend(vocab_file, bool(lowercase))
        token_ids = backend.get_vocab(with_added_tokens=True)
        vocab: list[str | None] = [None] * len(token_ids)
        for token, i in token_ids.items():
            if not 0 <= i < len(vocab):
                raise ValueError(f"{vocab_file}: token ids must be 0..{len(vocab) - 1}; {token!r} has {i}")
            vocab[i] = token
        missing = [t for t in SPECIAL_TOKENS if t not in token_ids]
        if missing:
            raise ValueError(f"{vocab_file}: the vocabulary lacks the special tokens {missing}")
        self.lowercase = bool(lowercase)
        self._backend = backend
        word_starts = np.char.startswith(np.array(vocab, dtype=str), WORD_START)
        super().__init__(vocab, {role: token_ids[token] for role, token in ROLES.items()}, word_starts,
                         {"kind": self.kind, "vocab_file": vocab_file, "lowercase": self.lowercase})

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        encodings = self._backend.encode_batch_fast(list(texts), add_special_tokens=False)
        return [np.array(e.ids, dtype=np.int32) for e in encodings]

    def encode_batch_with_offsets(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        encodings = self._backend.encode_batch(list(texts), add_special_tokens=False)
        return [(np.array(e.ids, dtype=np.int32), np.array(e.offsets, dtype=np.int32).reshape(-1, 2))
                for e in encodings]

    def decode(self, ids: Sequence[int] | np.ndarray, skip_special_tokens: bool = False) -> str:
        return self._backend.decode(np.asarray(ids, dtype=np.int64).tolist(), skip_special_tokens=skip_special_tokens)

    def save(self, out_dir: str) -> None:
        """Writes ``tokenizer.json`` and, for a plain BPE model, ``vocab.json`` + ``merges.txt``."""
        os.makedirs(out_dir, exist_ok=True)
        self._backend.save(os.path.join(out_dir, tokenizer_lib.HF_TOKENIZER_FILE))
        self._backend.model.save(out_dir)

    def hf_config(self) -> dict[str, Any]:
        """The transformers ``tokenizer_config.json`` fields (``RobertaTokenizer``, its special tokens)."""
        return {"tokenizer_class": "RobertaTokenizer", "bos_token": BOS, "eos_token": EOS, "cls_token": BOS,
                "sep_token": EOS, "unk_token": UNK, "pad_token": PAD, "mask_token": MASK,
                "add_prefix_space": False, "trim_offsets": True, "errors": "replace"}


def train_bpe(texts: Iterable[str], vocab_size: int, out_dir: str, min_frequency: int = 2,
              lowercase: bool = False) -> BPETokenizer:
    """Trains a byte-level BPE vocabulary (``tokenizers.ByteLevelBPETokenizer``) and loads it.

    Args:
      texts: the training documents.
      vocab_size: tokens in all, the five specials (ids 0..4, :data:`SPECIAL_TOKENS`) and the 256
        byte symbols included.
      out_dir: where ``vocab.json``, ``merges.txt`` and ``tokenizer.json`` go.
      min_frequency: the fewest occurrences a merge needs.
      lowercase: lowercase the text first.

    Returns:
      The tokenizer, loaded from ``out_dir/vocab.json``.
    """
    trainer = tokenizers.ByteLevelBPETokenizer(add_prefix_space=False, lowercase=lowercase)
    trainer.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=min_frequency,
                                special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    os.makedirs(out_dir, exist_ok=True)
    trainer.save_model(out_dir)
    tokenizer = BPETokenizer(os.path.join(out_dir, VOCAB_FILE), lowercase=lowercase)
    tokenizer.save(out_dir)
    return tokenizer


def find_bpe_file(directory: str | os.PathLike) -> str | None:
    """A directory's byte-level BPE vocabulary: a ``tokenizer.json`` holding a BPE model, else a
    ``vocab.json`` with ``merges.txt`` beside it; None when it has neither."""
    path = os.path.join(directory, tokenizer_lib.HF_TOKENIZER_FILE)
    if os.path.isfile(path):
        try:
            if (tokenizer_lib._read_json(path).get("model") or {}).get("type") == "BPE":
                return path
        except ValueError:
            return None
    if all(os.path.isfile(os.path.join(directory, name)) for name in (VOCAB_FILE, MERGES_FILE)):
        return os.path.join(str(directory), VOCAB_FILE)
    return None
