"""DeBERTa-v2/v3's SentencePiece conventions: spec ``{"kind": "sentencepiece", "convention": "deberta", ...}``.

The ids are exactly those of transformers' ``DebertaV2Tokenizer`` (transformers 5: a ``tokenizers``
backend; ``DebertaV2TokenizerFast`` is the same class) for the same ``spm.model``, because the pipeline
built here is the one that class builds from the model's pieces and scores:

* a Unigram model over the pieces (their ids and log-probabilities; ``[UNK]`` at the model's unk id);
* normaliser: optional lower-casing (``lowercase`` = transformers' ``do_lower_case``), runs of whitespace
  and each tab/newline to one space, NFC, trailing whitespace stripped. The model's own SentencePiece
  normalisation rule (its precompiled character map) is **not** applied, as transformers does not;
* pre-tokenizer: optional punctuation split (``split_by_punct``), then ``▁`` for spaces with one
  prepended to every segment (``Metaspace``, ``prepend_scheme="always"``);
* special tokens matched whole in the raw text (``[CLS]``, ``[SEP]``, ``[PAD]``, ``[UNK]``, ``[MASK]``,
  the model's control pieces; its user-defined pieces likewise, as plain added tokens).

Special tokens are looked up by name. DeBERTa-v3's layout, which :func:`train_deberta_spm` writes: the
SentencePiece model holds ``[PAD]`` 0 (pad), ``[CLS]`` 1 (bos), ``[SEP]`` 2 (eos), ``[UNK]`` 3 (unk) and no
``[MASK]``; ``[MASK]`` is appended after the last piece (id ``len(pieces)``, 128,000 in DeBERTa-v3), as
transformers adds it. Rows are ``[CLS] A [SEP] B [SEP]`` (``data_pipelines.rows``). Whole words start
at the pieces beginning with ``▁``.

The model's pieces, scores and piece types are read from the model file with the ``sentencepiece``
package's own protobuf module; encoding runs in the ``tokenizers`` Rust batch encoder. The
``tokenizer.json`` transformers 5 saves for a ``DebertaV2Tokenizer`` (no ``spm.model``) loads too, as it is.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import sentencepiece
import tokenizers
from tokenizers import Regex, decoders, normalizers, pre_tokenizers

from data_pipelines import tokenizer as tokenizer_lib
from data_pipelines import vocab_training
from data_pipelines.tokenizer import CLS, MASK, PAD, SENTENCEPIECE_WORD_START, SEP, UNK

CONVENTION = "deberta"
# The transformers class that reads such a directory (``tokenizer_config.json``'s ``tokenizer_class``).
HF_CLASS = "DebertaV2Tokenizer"
HF_CLASSES = (HF_CLASS, "DebertaV2TokenizerFast")
# DeBERTa-v3's SentencePiece layout: these four at ids 0..3 ([MASK] comes after the pieces).
MODEL_SPECIALS = (PAD, CLS, SEP, UNK)
# SentencePiece piece types (sentencepiece_model.proto: ModelProto.SentencePiece.Type).
_CONTROL, _USER_DEFINED = 3, 4


def read_model(model_file: str) -> tuple[bytes, Any]:
    """The bytes of a SentencePiece model file and its parsed ``ModelProto``.

    Raises:
      FileNotFoundError: naming the path and the command that builds a model.
      ValueError: the file is not a SentencePiece model.
    """
    from sentencepiece import sentencepiece_model_pb2  # pylint: disable=import-outside-toplevel

    tokenizer_lib._require_file(model_file, "sentencepiece", "model file")  # pylint: disable=protected-access
    proto = sentencepiece_model_pb2.ModelProto()
    with open(model_file, "rb") as f:
        raw = f.read()
    try:
        proto.ParseFromString(raw)
    except Exception as error:  # pylint: disable=broad-except  (protobuf's DecodeError)
        raise ValueError(f"{model_file}: not a SentencePiece model ({error})") from None
    if not proto.pieces:
        raise ValueError(f"{model_file}: not a SentencePiece model (no pieces)")
    return raw, proto


def deberta_backend(proto: Any, lowercase: bool, split_by_punct: bool) -> tokenizers.Tokenizer:
    """The ``tokenizers`` pipeline ``transformers.DebertaV2Tokenizer`` builds from a SentencePiece model.

    Args:
      proto: the model's ``ModelProto`` (:func:`read_model`).
      lowercase: ``do_lower_case``.
      split_by_punct: ``split_by_punct`` (punctuation isolated before the ``▁`` split).

    Returns:
      The backend, special tokens added (``[MASK]`` appended when the model lacks it); no post-processor
      (rows are laid out by ``data_pipelines.rows``).
    """
    vocab = [(p.piece, p.score) for p in proto.pieces]
    backend = tokenizers.Tokenizer(tokenizers.models.Unigram(vocab, unk_id=proto.trainer_spec.unk_id,
                                                             byte_fallback=False))
    steps = [normalizers.Lowercase()] if lowercase else []
    steps += [normalizers.Replace(Regex(r"\s{2,}|[\n\r\t]"), " "), normalizers.NFC(),
              normalizers.Strip(left=False, right=True)]
    backend.normalizer = normalizers.Sequence(steps)
    splits = [pre_tokenizers.Punctuation(behavior="isolated")] if split_by_punct else []
    splits.append(pre_tokenizers.Metaspace(replacement=SENTENCEPIECE_WORD_START, prepend_scheme="always"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(splits)
    backend.decoder = decoders.Metaspace(replacement=SENTENCEPIECE_WORD_START, prepend_scheme="always")
    # transformers' order: the model's control and user-defined pieces, then its special-token roles.
    backend.add_special_tokens([tokenizers.AddedToken(p.piece, normalized=False, special=True)
                                for p in proto.pieces if p.type == _CONTROL])
    backend.add_tokens([tokenizers.AddedToken(p.piece, normalized=False, special=False)
                        for p in proto.pieces if p.type == _USER_DEFINED])
    backend.add_special_tokens([tokenizers.AddedToken(t, normalized=False, special=True)
                                for t in (CLS, SEP, UNK, PAD, MASK)])
    return backend


class DebertaSentencePieceTokenizer(tokenizer_lib.Tokenizer):
    """A SentencePiece model with DeBERTa-v2/v3's conventions (module docstring), as ``DebertaV2Tokenizer``."""

    kind = "sentencepiece"

    def __init__(self, model_file: str, lowercase: bool = False, split_by_punct: bool = False):
        """Loads a SentencePiece ``.model`` file (e.g. DeBERTa-v3's ``spm.model``), or the ``tokenizer.json``
        that transformers saves for a ``DebertaV2Tokenizer`` (a Unigram model; used as it is, so its
        normaliser decides casing and ``lowercase`` / ``split_by_punct`` only record what it does).

        Args:
          model_file: the model.
          lowercase: lowercase the text first (transformers' ``do_lower_case``; DeBERTa-v3: False).
          split_by_punct: split punctuation off before the pieces (``split_by_punct``; DeBERTa-v3: False).

        Raises:
          FileNotFoundError: naming the path and the command that builds a model.
          ValueError: a file that is not a SentencePiece model (or a Unigram tokenizer.json), or one that
            lacks ``[PAD]``, ``[CLS]``, ``[SEP]`` or ``[UNK]`` (a tokenizer.json also ``[MASK]``).
        """
        self.lowercase, self.split_by_punct = bool(lowercase), bool(split_by_punct)
        if model_file.endswith(".json"):
            self._model_bytes, self._backend = _read_tokenizer_json(model_file)
            self.model_file_name = tokenizer_lib.HF_TOKENIZER_FILE
            pieces = list(self._backend.get_vocab(with_added_tokens=True))
            missing = [t for t in (*MODEL_SPECIALS, MASK) if t not in pieces]
        else:
            self._model_bytes, proto = read_model(model_file)
            self.model_file_name = tokenizer_lib.SENTENCEPIECE_MODEL_FILE
            pieces = [p.piece for p in proto.pieces]
            missing = [t for t in MODEL_SPECIALS if t not in pieces]
            if not missing and pieces[proto.trainer_spec.unk_id] != UNK:
                missing = [f"{UNK} as its unk piece"]
            self._backend = deberta_backend(proto, self.lowercase, self.split_by_punct)
        if missing:
            raise ValueError(f"{model_file}: a DeBERTa SentencePiece model needs the pieces {list(MODEL_SPECIALS)} "
                             f"(unk = [UNK]); it lacks {missing}. Train one with "
                             "data_pipelines.deberta_spm.train_deberta_spm")
        token_ids = self._backend.get_vocab(with_added_tokens=True)
        vocab = [""] * len(token_ids)
        for token, i in token_ids.items():
            vocab[i] = token
        word_starts = np.char.startswith(np.array(vocab, dtype=str), SENTENCEPIECE_WORD_START)
        spec = {"kind": self.kind, "model_file": model_file, "convention": CONVENTION,
                "lowercase": self.lowercase, "split_by_punct": self.split_by_punct}
        super().__init__(vocab, {t: token_ids[t] for t in tokenizer_lib.SPECIAL_TOKENS}, word_starts, spec)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        encodings = self._backend.encode_batch_fast(list(texts), add_special_tokens=False)
        return [np.array(e.ids, dtype=np.int32) for e in encodings]

    def encode_batch_with_offsets(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        texts = list(texts)
        results = []
        for text, e in zip(texts, self._backend.encode_batch(texts, add_special_tokens=False)):
            offsets = np.array(e.offsets, dtype=np.int32).reshape(-1, 2)
            for row, token in enumerate(e.tokens):  # leave the whitespace a "▁" stands for out of the span
                start, end = offsets[row]
                while start < end and text[start].isspace():
                    start += 1
                offsets[row] = (start, start) if token == SENTENCEPIECE_WORD_START else (start, end)
            results.append((np.array(e.ids, dtype=np.int32), offsets))
        return results

    def decode(self, ids: Sequence[int] | np.ndarray, skip_special_tokens: bool = False) -> str:
        return self._backend.decode(np.asarray(ids, dtype=np.int64).tolist(), skip_special_tokens=skip_special_tokens)

    def save(self, out_dir: str) -> None:
        """Writes the model file as read (``spm.model`` or ``tokenizer.json``: :attr:`model_file_name`) and
        transformers' ``tokenizer_config.json``."""
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, self.model_file_name), "wb") as f:
            f.write(self._model_bytes)
        with open(os.path.join(out_dir, tokenizer_lib.WORDPIECE_CONFIG_FILE), "w", encoding="utf-8") as f:
            json.dump(self.hf_config(), f, indent=2)

    def hf_config(self) -> dict[str, Any]:
        """The transformers ``tokenizer_config.json`` fields (``DebertaV2Tokenizer``, its options and specials)."""
        return {"tokenizer_class": HF_CLASS, "vocab_type": "spm", "do_lower_case": self.lowercase,
                "split_by_punct": self.split_by_punct, "bos_token": CLS, "eos_token": SEP, "unk_token": UNK,
                "sep_token": SEP, "pad_token": PAD, "cls_token": CLS, "mask_token": MASK}


def _read_tokenizer_json(path: str) -> tuple[bytes, tokenizers.Tokenizer]:
    """The bytes and the backend of a transformers ``tokenizer.json`` holding a Unigram model."""
    tokenizer_lib._require_file(path, "sentencepiece", "model file")  # pylint: disable=protected-access
    data = tokenizer_lib._read_json(path)  # pylint: disable=protected-access
    if (data.get("model") or {}).get("type") != "Unigram":
        raise ValueError(f"{path}: model.type is {(data.get('model') or {}).get('type')!r}; a DeBERTa tokenizer.json "
                         "holds a Unigram model")
    backend = tokenizers.Tokenizer.from_str(json.dumps(data))
    backend.no_truncation()  # ids of the whole text, as every tokenizer here; rows are laid out elsewhere
    backend.no_padding()
    with open(path, "rb") as f:
        return f.read(), backend


def is_deberta_config(tokenizer_config: dict[str, Any], model_type: str | None) -> bool:
    """Whether a Hugging Face directory's tokenizer is DeBERTa-v2/v3's: its ``tokenizer_config.json`` names
    ``DebertaV2Tokenizer(Fast)``, or names no class in a ``model_type="deberta-v2"`` directory (as
    Microsoft's DeBERTa-v3 repositories do)."""
    name = tokenizer_config.get("tokenizer_class")
    return name in HF_CLASSES or (name is None and model_type == "deberta-v2")


def train_deberta_spm(texts: Iterable[str], vocab_size: int, out_dir: str, *, lowercase: bool = False,
                      character_coverage: float = 0.9995, input_sentence_size: int = 1_000_000,
                      max_sentence_length: int = 16384, num_threads: int | None = None
                      ) -> DebertaSentencePieceTokenizer:
    """Trains a unigram SentencePiece model in DeBERTa-v3's layout and loads it.

    Args:
      texts: documents (SentencePiece trains on their non-empty lines).
      vocab_size: pieces in the model, ``[PAD]`` 0, ``[CLS]`` 1, ``[SEP]`` 2, ``[UNK]`` 3 included; the
        tokenizer has one id more (``[MASK]`` = ``vocab_size``).
      out_dir: where ``spm.model`` and ``tokenizer_config.json`` go.
      lowercase: lowercase the training text (NFKC + case folding) and the tokenizer's input
        (``do_lower_case``).
      character_coverage, input_sentence_size, max_sentence_length, num_threads: SentencePiece's
        trainer options (``vocab_training.train_tokenizer``'s defaults).

    Returns:
      The tokenizer, its ``spec`` naming ``out_dir/spm.model``.

    Raises:
      ValueError: no non-empty text.
    """
    counted = vocab_training._CountingTexts(texts)  # pylint: disable=protected-access
    model = io.BytesIO()
    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=counted.lines(), model_writer=model, model_type="unigram", vocab_size=vocab_size,
            character_coverage=float(character_coverage), input_sentence_size=int(input_sentence_size),
            shuffle_input_sentence=True, max_sentence_length=int(max_sentence_length),
            num_threads=int(num_threads or os.cpu_count() or 1),
            normalization_rule_name="nmt_nfkc_cf" if lowercase else "nmt_nfkc",
            pad_id=0, pad_piece=PAD, bos_id=1, bos_piece=CLS, eos_id=2, eos_piece=SEP, unk_id=3, unk_piece=UNK,
            minloglevel=2)
    except RuntimeError:
        if counted.num_texts == 0:
            raise vocab_training._no_text_error(counted) from None  # pylint: disable=protected-access
        raise
    os.makedirs(out_dir, exist_ok=True)
    model_file = os.path.join(out_dir, tokenizer_lib.SENTENCEPIECE_MODEL_FILE)
    with open(model_file, "wb") as f:
        f.write(model.getvalue())
    tokenizer = DebertaSentencePieceTokenizer(model_file, lowercase=lowercase)
    tokenizer.save(out_dir)
    return tokenizer
