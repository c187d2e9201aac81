"""The SentencePiece tokenizer (unigram or BPE models) behind :class:`data_pipelines.tokenizer.Tokenizer`.

``[PAD]`` and ``[UNK]`` are SentencePiece's pad/unk pieces, ``[CLS]``, ``[SEP]``, ``[MASK]`` are looked up
by name; literal special-token strings in the text become their ids and the text between them is encoded
piece by piece, as transformers' SentencePiece tokenizers do. DeBERTa-v2/v3's convention is
:mod:`data_pipelines.deberta_spm`; :func:`data_pipelines.tokenizer.load_tokenizer` picks either from a spec.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import sentencepiece

from data_pipelines.tokenizer import (CLS, MASK, PAD, SENTENCEPIECE_MODEL_FILE, SENTENCEPIECE_WORD_START, SEP, UNK,
                                      Tokenizer, _build_vocab_command, _require_file)


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model (unigram or BPE) through the ``sentencepiece`` package."""

    kind = "sentencepiece"

    def __init__(self, model_file: str):
        """Loads a SentencePiece ``.model`` file.

        Raises:
          FileNotFoundError: naming the path and the command that builds a model.
          ValueError: when the model lacks a pad piece or one of ``[CLS]``, ``[SEP]``, ``[MASK]``.
        """
        _require_file(model_file, self.kind, "model file")
        # The processor pickles itself (it serializes its model proto), so workers get a copy.
        self._processor = sentencepiece.SentencePieceProcessor(model_file=model_file)
        processor = self._processor
        vocab = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
        special_ids = {PAD: processor.pad_id(), UNK: processor.unk_id()}
        for token in (CLS, SEP, MASK):
            special_ids[token] = vocab.index(token) if token in vocab else -1
        missing = [t for t, i in special_ids.items() if i < 0]
        if missing:
            raise ValueError(
                f"{model_file}: the SentencePiece model lacks {missing}; train it with pad_id >= 0 and "
                f"[CLS], [SEP], [MASK] as user-defined or control symbols (`{_build_vocab_command(self.kind, '...')}`)"
            )
        word_starts = np.char.startswith(np.array(vocab, dtype=str), SENTENCEPIECE_WORD_START)
        super().__init__(vocab, special_ids, word_starts, {"kind": self.kind, "model_file": model_file})
        # Special-token strings in the text become their ids, and the text between them is encoded
        # piece by piece (each with SentencePiece's leading "▁"), as transformers' SentencePiece
        # tokenizers split on their special tokens: "대한민국의 [MASK] 이다" gives no stray "▁" before [MASK].
        specials = sorted({vocab[i] for i in self._special_ids}, key=len, reverse=True)
        self._special_text = re.compile("|".join(map(re.escape, specials)))

    def _segments(self, text: str) -> list[tuple[int, int, int | None]]:
        """``(start, end, special id or None)`` of the special tokens and the text between them."""
        segments, start = [], 0
        for match in self._special_text.finditer(text):
            segments.append((start, match.start(), None))
            segments.append((match.start(), match.end(), self._token_ids[match.group()]))
            start = match.end()
        segments.append((start, len(text), None))
        return [s for s in segments if s[2] is not None or text[s[0]:s[1]].strip()]

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        texts = list(texts)
        if not any(self._special_text.search(text) for text in texts):  # the common case: one call
            return [np.array(ids, dtype=np.int32) for ids in self._processor.encode(texts, out_type=int)]
        return [ids for ids, _ in self.encode_batch_with_offsets(texts)]

    def encode_batch_with_offsets(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        texts = list(texts)
        segments = [self._segments(text) for text in texts]
        plain = [text[start:end] for text, segs in zip(texts, segments) for start, end, special in segs
                 if special is None]
        encoded = iter(zip(plain, self._processor.encode(plain, return_type="proto")))
        results = []
        for segs in segments:
            ids, offsets = [np.zeros(0, np.int32)], [np.zeros((0, 2), np.int32)]
            for start, end, special in segs:
                if special is not None:
                    ids.append(np.array([special], np.int32))
                    offsets.append(np.array([[start, end]], np.int32))
                    continue
                segment_ids, segment_offsets = _piece_offsets(*next(encoded))
                ids.append(segment_ids)
                offsets.append(segment_offsets + start)
            results.append((np.concatenate(ids), np.concatenate(offsets).astype(np.int32)))
        return results

    def decode(self, ids: Sequence[int] | np.ndarray, skip_special_tokens: bool = False) -> str:
        ids = np.asarray(ids, dtype=np.int64)
        if skip_special_tokens:
            ids = ids[~np.isin(ids, self._special_ids)]
        return self._processor.decode(ids.tolist())

    def save(self, out_dir: str) -> None:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, SENTENCEPIECE_MODEL_FILE), "wb") as f:
            f.write(self._processor.serialized_model_proto())


def _piece_offsets(text: str, proto: Any) -> tuple[np.ndarray, np.ndarray]:
    """Ids int32 ``[n]`` and character offsets int32 ``[n, 2]`` of a SentencePiece encoding of ``text``.

    SentencePiece reports UTF-8 byte offsets; every byte position (and the end) is mapped to a
    character, and the leading whitespace of a piece is left out of its span.
    """
    utf8 = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    char_of_byte = np.append(np.cumsum((utf8 & 0xC0) != 0x80) - 1, len(text))
    pieces = proto.pieces
    ids = np.array([p.id for p in pieces], dtype=np.int32)
    begins = np.array([p.begin for p in pieces], dtype=np.int64)
    ends = np.array([p.end for p in pieces], dtype=np.int64)
    leading_spaces = np.array([len(p.surface) - len(p.surface.lstrip()) for p in pieces], dtype=np.int64)
    starts = char_of_byte[begins] + leading_spaces
    return ids, np.stack([starts, char_of_byte[ends]], axis=-1).astype(np.int32).reshape(-1, 2)
