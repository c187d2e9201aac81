"""Tokenizers behind one interface: BERT WordPiece (Hugging Face ``tokenizers``) here; SentencePiece
(:mod:`data_pipelines.sentencepiece_tokenizer`, :mod:`data_pipelines.deberta_spm`) and byte-level BPE
(:mod:`data_pipelines.bpe`) in their modules, all loaded by :func:`load_tokenizer`.

Every kind turns text into ``int32`` id arrays **without** special tokens, padding or truncation (the
instance builder adds ``[CLS]``/``[SEP]`` and pads). All are picklable, so a loaded :class:`Tokenizer`
can be shipped to Grain worker processes.

Special tokens and their ids:

* A BERT ``vocab.txt`` keeps its own ids (uncased BERT: ``[PAD]`` 0, ``[UNK]`` 100, ``[CLS]`` 101,
  ``[SEP]`` 102, ``[MASK]`` 103); they are looked up by name, so every BERT vocabulary works.
* A vocabulary trained here (either kind) puts the five specials first, in the order of
  :data:`SPECIAL_TOKENS`: ``[PAD]`` 0, ``[UNK]`` 1, ``[CLS]`` 2, ``[SEP]`` 3, ``[MASK]`` 4 (the order
  ``transformers.BertTokenizer`` uses for an empty vocabulary, and ALBERT's SentencePiece layout).
* SentencePiece models store ``[PAD]`` and ``[UNK]`` as SentencePiece's pad/unk pieces and
  ``[CLS]``, ``[SEP]``, ``[MASK]`` as user-defined symbols. Models from elsewhere (e.g. ALBERT's
  ``<pad>``/``<unk>``) work too: pad and unk come from the model, the other three are looked up by name.
* Literal special-token strings in the text (e.g. ``"Paris is the [MASK] of France"``) become their
  ids, exactly as ``BertTokenizerFast`` does; for SentencePiece, the text between them is encoded
  piece by piece, as transformers' SentencePiece tokenizers do (the same ids for the same model file).

The WordPiece path builds exactly what ``transformers.BertTokenizerFast`` builds (``BertNormalizer``,
``BertPreTokenizer``, ``WordPiece`` with words over 100 characters mapped to ``[UNK]``), so ids are
identical. :meth:`Tokenizer.encode_batch` goes through the Rust batch encoder; no Python runs per token.

Training a vocabulary lives in :mod:`data_pipelines.vocab_training` (``python -m launch.build_vocab``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tokenizers
from tokenizers import decoders, normalizers, pre_tokenizers, processors

logger = logging.getLogger(__name__)

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
# The special tokens, in the id order of a vocabulary trained here (ids 0..4).
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, CLS, SEP, MASK)

WORDPIECE_VOCAB_FILE = "vocab.txt"
# Written next to vocab.txt in the layout transformers reads, so the directory also loads with
# ``transformers.AutoTokenizer`` and remembers its casing.
WORDPIECE_CONFIG_FILE = "tokenizer_config.json"
# The single file transformers 5 saves for a BERT tokenizer (no vocab.txt): its WordPiece vocabulary
# and normalizer options in the ``tokenizers`` JSON format.
HF_TOKENIZER_FILE = "tokenizer.json"
SENTENCEPIECE_MODEL_FILE = "spm.model"
WORDPIECE_CONTINUATION_PREFIX = "##"
SENTENCEPIECE_WORD_START = "\u2581"  # '▁'
# Words longer than this become [UNK] (BERT's and transformers' limit).
MAX_WORDPIECE_CHARS_PER_WORD = 100

# BERT's normaliser options and their defaults (as transformers' BertTokenizer): lowercase, strip
# accents (None: exactly when lowercasing), spaces around CJK ideographs. ``clean_text`` is always on.
NORMALIZER_DEFAULTS: dict[str, bool | None] = {"lowercase": True, "strip_accents": None, "tokenize_chinese_chars": True}
# Their names in a transformers tokenizer_config.json, and in a tokenizer.json's BertNormalizer.
_CONFIG_NAMES = {"lowercase": "do_lower_case", "strip_accents": "strip_accents",
                 "tokenize_chinese_chars": "tokenize_chinese_chars"}
_NORMALIZER_NAMES = {"lowercase": "lowercase", "strip_accents": "strip_accents",
                     "tokenize_chinese_chars": "handle_chinese_chars"}

KINDS = ("wordpiece", "sentencepiece", "bpe")  # "bpe": byte-level BPE (RoBERTa), data_pipelines/bpe.py
SENTENCEPIECE_MODEL_TYPES = ("unigram", "bpe")
# A SentencePiece spec's "convention": "bert" (SentencePieceTokenizer, the default) or "deberta"
# (DeBERTa-v2/v3's, as transformers' DebertaV2Tokenizer: data_pipelines/deberta_spm.py).
SENTENCEPIECE_CONVENTIONS = ("bert", "deberta")
_LOAD_KEYS = {
    "wordpiece": {"kind", "vocab_file", "lowercase", "strip_accents", "tokenize_chinese_chars"},
    "sentencepiece": {"kind", "model_file", "convention", "split_by_punct"},
    "bpe": {"kind", "vocab_file", "lowercase"},
}
# Keys only training reads; a spec that carries them can still be used for loading.
_TRAIN_KEYS = {
    "wordpiece": {"vocab_size", "min_frequency", "limit_alphabet"},
    "sentencepiece": {
        "vocab_size",
        "lowercase",
        "model_type",
        "character_coverage",
        "input_sentence_size",
        "max_sentence_length",
        "num_threads",
    },
    "bpe": {"vocab_size", "min_frequency"},
}


def _build_vocab_command(kind: str, out_dir: str) -> str:
    return (
        f"python -m launch.build_vocab --source=<source name> --kind={kind} --vocab_size=<size> "
        f"--out_dir={out_dir}"
    )


def _require_file(path: str, kind: str, what: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{kind} {what} not found: {path!r}. Build one with "
            f"`{_build_vocab_command(kind, os.path.dirname(path) or '.')}`"
            + (" or point 'vocab_file' at a BERT vocab.txt." if kind == "wordpiece" else ".")
        )


def bert_normalizer(lowercase: bool, strip_accents: bool | None,
                    tokenize_chinese_chars: bool) -> normalizers.BertNormalizer:
    """BERT's normaliser with these options (the one ``BertTokenizerFast`` builds); see :class:`WordPieceTokenizer`."""
    return normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=tokenize_chinese_chars,
                                      strip_accents=strip_accents, lowercase=lowercase)


class Tokenizer:
    """The interface every tokenizer offers; subclasses add the encoding backend.

    Attributes:
      kind: ``'wordpiece'`` or ``'sentencepiece'``.
      vocab_size: number of ids; every id in ``[0, vocab_size)`` is a token.
      pad_id, unk_id, cls_id, sep_id, mask_id: ids of the special tokens.
      spec: the mapping :func:`load_tokenizer` takes to load this tokenizer again.
      pair_separator_length: how many ``[SEP]`` stand between the two texts of a pair row (BERT's
        ``[CLS] a [SEP] b [SEP]``: 1); a kind whose transformers tokenizer writes more sets its own.
    """

    kind: str
    pair_separator_length: int = 1

    def __init__(self, vocab: Sequence[str], special_ids: Mapping[str, int], word_starts: np.ndarray, spec: dict):
        """Sets the shared tables.

        Args:
          vocab: token string of every id, in id order.
          special_ids: ``{'[PAD]': id, '[UNK]': id, '[CLS]': id, '[SEP]': id, '[MASK]': id}``.
          word_starts: bool ``[vocab_size]``, True where a token begins a word.
          spec: the mapping that loads this tokenizer again.
        """
        self._vocab = list(vocab)
        self._token_ids = {token: i for i, token in enumerate(self._vocab)}
        self.vocab_size = len(self._vocab)
        self.pad_id = int(special_ids[PAD])
        self.unk_id = int(special_ids[UNK])
        self.cls_id = int(special_ids[CLS])
        self.sep_id = int(special_ids[SEP])
        self.mask_id = int(special_ids[MASK])
        self.spec = dict(spec)
        # [UNK] is never a masking target either: predicting it teaches nothing (transformers'
        # special-tokens mask also excludes it).
        self._special_ids = np.array(
            sorted({self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id}), dtype=np.int32
        )
        word_starts = np.asarray(word_starts, dtype=bool).copy()
        word_starts[self._special_ids] = True  # each special token is a word of its own
        self._word_starts = word_starts

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, spec={self.spec})"

    def encode(self, text: str) -> np.ndarray:
        """Tokenizes one text.

        Returns:
          int32 ``[num_tokens]``, no special tokens added, no truncation.
        """
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Tokenizes many texts in one call to the native batch encoder.

        Returns:
          One int32 ``[num_tokens_i]`` array per text, no special tokens, no truncation.
        """
        raise NotImplementedError

    def encode_batch_with_offsets(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Tokenizes texts and reports where each token came from (for SQuAD spans and NER labels).

        Returns:
          Per text: ids int32 ``[n]`` (as :meth:`encode_batch`) and offsets int32 ``[n, 2]``, the
          ``[start, end)`` character positions of each token in the original text, whitespace
          excluded (an empty span for a SentencePiece ``▁`` piece that covers only whitespace).
        """
        raise NotImplementedError

    def decode(self, ids: Sequence[int] | np.ndarray, skip_special_tokens: bool = False) -> str:
        """Turns ids back into text (lowercased/normalized as the tokenizer normalizes)."""
        raise NotImplementedError

    def save(self, out_dir: str) -> None:
        """Writes the files :func:`load_tokenizer` reads into ``out_dir`` (created if missing)."""
        raise NotImplementedError

    def id_to_token(self, i: int) -> str:
        """The token string of id ``i``; IndexError outside ``[0, vocab_size)``."""
        if not 0 <= int(i) < self.vocab_size:
            raise IndexError(f"token id {i} outside the vocabulary [0, {self.vocab_size})")
        return self._vocab[int(i)]

    def token_to_id(self, token: str) -> int:
        """The id of ``token``; KeyError when the vocabulary lacks it."""
        try:
            return self._token_ids[token]
        except KeyError:
            raise KeyError(f"token {token!r} is not in the {self.kind} vocabulary ({self.vocab_size} tokens)") from None

    @property
    def pair_separator(self) -> tuple[int, ...]:
        """The ids between the two texts of a pair row: ``[SEP]`` (RoBERTa's BPE: ``</s> </s>``)."""
        return (self.sep_id,) * self.pair_separator_length

    def special_ids(self) -> np.ndarray:
        """int32 ids never chosen for masking: ``[PAD]``, ``[UNK]``, ``[CLS]``, ``[SEP]``, ``[MASK]``, sorted."""
        return self._special_ids.copy()

    def word_start_mask(self) -> np.ndarray:
        """bool ``[vocab_size]``: True where a token begins a word (for whole-word masking).

        WordPiece: tokens not starting with ``##``. SentencePiece: pieces starting with ``▁``.
        Special tokens are True (each is a word of its own).
        """
        return self._word_starts.copy()


class WordPieceTokenizer(Tokenizer):
    """BERT WordPiece through Hugging Face ``tokenizers``, identical to ``BertTokenizerFast``."""

    kind = "wordpiece"

    def __init__(
        self,
        vocab_file: str,
        lowercase: bool | None = None,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool | None = None,
    ):
        """Loads a BERT ``vocab.txt`` (one token a line, the line number is the id).

        Each normaliser option left None takes what the files record, as transformers reads them: the
        ``tokenizer_config.json`` in the file's directory (``do_lower_case``, ``strip_accents``,
        ``tokenize_chinese_chars``), else the ``BertNormalizer`` of a ``tokenizer.json`` there, else
        BERT's default. An explicit value that differs from a recorded one wins, with a warning.

        Args:
          vocab_file: path of the vocab.txt, or of a transformers 5 ``tokenizer.json`` (a WordPiece model).
          lowercase: lowercase the text (uncased models); default True.
          strip_accents: remove combining marks after NFD (``é`` -> ``e``; Hangul syllables fall apart
            into their jamo). None (the default): strip exactly when lowercasing, as in BERT.
          tokenize_chinese_chars: put spaces around CJK ideographs, so each is a word of its own
            (default True). Hangul and kana are not CJK ideographs and are never split this way.

        Raises:
          FileNotFoundError: naming the path and the command that builds a vocabulary.
          ValueError: when the vocabulary has duplicate lines or lacks a special token.
        """
        _require_file(vocab_file, self.kind, "vocabulary file")
        vocab, recorded = _read_wordpiece_vocab(vocab_file)
        token_ids: dict[str, int] = {}
        for i, token in enumerate(vocab):
            if token in token_ids:
                raise ValueError(
                    f"{vocab_file}:{i + 1}: duplicate token {token!r} (first on line {token_ids[token] + 1}); "
                    "each line must be unique"
                )
            token_ids[token] = i
        missing = [t for t in SPECIAL_TOKENS if t not in token_ids]
        if missing:
            raise ValueError(f"{vocab_file}: the vocabulary lacks the special tokens {missing}")
        given = {"lowercase": lowercase, "strip_accents": strip_accents,
                 "tokenize_chinese_chars": tokenize_chinese_chars}
        options = dict(NORMALIZER_DEFAULTS)
        for name, value in given.items():
            if name in recorded:
                options[name] = recorded[name]
            if value is not None:
                if name in recorded and recorded[name] != value:
                    logger.warning("%s=%s overrides the %s recorded with %s", name, value, recorded[name], vocab_file)
                options[name] = value
        self.lowercase = bool(options["lowercase"])
        self.strip_accents = None if options["strip_accents"] is None else bool(options["strip_accents"])
        self.tokenize_chinese_chars = bool(options["tokenize_chinese_chars"])
        strip_accents = self.strip_accents

        backend = tokenizers.Tokenizer(
            tokenizers.models.WordPiece(
                token_ids,
                unk_token=UNK,
                continuing_subword_prefix=WORDPIECE_CONTINUATION_PREFIX,
                max_input_chars_per_word=MAX_WORDPIECE_CHARS_PER_WORD,
            )
        )
        backend.normalizer = bert_normalizer(self.lowercase, strip_accents, self.tokenize_chinese_chars)
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece(prefix=WORDPIECE_CONTINUATION_PREFIX)
        backend.add_special_tokens(list(SPECIAL_TOKENS))  # matched whole in text, never split or lowercased
        self._backend = backend

        spec = {
            "kind": self.kind,
            "vocab_file": vocab_file,
            "lowercase": self.lowercase,
            "strip_accents": strip_accents,
            "tokenize_chinese_chars": self.tokenize_chinese_chars,
        }
        word_starts = ~np.char.startswith(np.array(vocab, dtype=str), WORDPIECE_CONTINUATION_PREFIX)
        super().__init__(vocab, {t: token_ids[t] for t in SPECIAL_TOKENS}, word_starts, spec)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        encodings = self._backend.encode_batch_fast(list(texts), add_special_tokens=False)
        return [np.array(encoding.ids, dtype=np.int32) for encoding in encodings]

    def encode_batch_with_offsets(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        encodings = self._backend.encode_batch(list(texts), add_special_tokens=False)
        return [
            (np.array(e.ids, dtype=np.int32), np.array(e.offsets, dtype=np.int32).reshape(-1, 2)) for e in encodings
        ]

    def decode(self, ids: Sequence[int] | np.ndarray, skip_special_tokens: bool = False) -> str:
        return self._backend.decode(np.asarray(ids, dtype=np.int64).tolist(), skip_special_tokens=skip_special_tokens)

    def save(self, out_dir: str) -> None:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, WORDPIECE_VOCAB_FILE), "w", encoding="utf-8") as f:
            f.writelines(token + "\n" for token in self._vocab)
        with open(os.path.join(out_dir, WORDPIECE_CONFIG_FILE), "w", encoding="utf-8") as f:
            json.dump(self.hf_config(), f, indent=2)

    def hf_config(self) -> dict[str, Any]:
        """The transformers ``tokenizer_config.json`` fields: class, normaliser options, special tokens."""
        return {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": self.lowercase,
            "strip_accents": self.strip_accents,
            "tokenize_chinese_chars": self.tokenize_chinese_chars,
            "unk_token": UNK,
            "sep_token": SEP,
            "pad_token": PAD,
            "cls_token": CLS,
            "mask_token": MASK,
        }

    def to_tokenizer_json(self) -> str:
        """This tokenizer as a ``tokenizers`` JSON (``tokenizer.json``), with BERT's ``[CLS] A [SEP] B [SEP]``
        post-processor, so ``tokenizers.Tokenizer.from_file`` alone encodes as ``BertTokenizerFast`` does."""
        backend = tokenizers.Tokenizer.from_str(self._backend.to_str())
        backend.post_processor = processors.TemplateProcessing(
            single=f"{CLS}:0 $A:0 {SEP}:0", pair=f"{CLS}:0 $A:0 {SEP}:0 $B:1 {SEP}:1",
            special_tokens=[(CLS, self.cls_id), (SEP, self.sep_id)])
        return backend.to_str()


def find_wordpiece_file(directory: str | os.PathLike) -> str | None:
    """The WordPiece vocabulary of a Hugging Face directory: its vocab.txt, else its tokenizer.json."""
    for name in (WORDPIECE_VOCAB_FILE, HF_TOKENIZER_FILE):
        if os.path.isfile(os.path.join(directory, name)):
            return os.path.join(directory, name)
    return None


def _read_wordpiece_vocab(vocab_file: str) -> tuple[list[str], dict[str, Any]]:
    """The tokens of a vocabulary file in id order, and the normaliser options recorded with them.

    ``vocab.txt``: one token a line. ``tokenizer.json``: the ``model.vocab`` of its WordPiece model.
    Options (keys of :data:`NORMALIZER_DEFAULTS`, only those recorded) come from the directory's
    ``tokenizer_config.json`` first (transformers' BertTokenizer builds its normaliser from it), then
    from the ``BertNormalizer`` of the ``tokenizer.json`` (the file itself, or one beside a vocab.txt).

    Raises:
      ValueError: naming the file and what is wrong (not JSON, not WordPiece, ids not 0..n-1, an
        option that is not true/false/null).
    """
    directory = os.path.dirname(vocab_file)
    tokenizer_json = vocab_file if vocab_file.endswith(".json") else os.path.join(directory, HF_TOKENIZER_FILE)
    data = _read_json(tokenizer_json) if os.path.isfile(tokenizer_json) else {}
    if vocab_file.endswith(".json"):
        vocab = _tokenizer_json_vocab(vocab_file, data)
    else:
        vocab = _read_vocab_lines(vocab_file)
    normalizer = data.get("normalizer") or {}
    recorded = {}
    if normalizer.get("type") == "BertNormalizer":
        recorded.update(_recorded_options(normalizer, _NORMALIZER_NAMES, tokenizer_json))
    config_path = os.path.join(directory, WORDPIECE_CONFIG_FILE)
    if os.path.isfile(config_path):
        recorded.update(_recorded_options(_read_json(config_path), _CONFIG_NAMES, config_path))
    return vocab, recorded


def _recorded_options(fields: Mapping[str, Any], names: Mapping[str, str], path: str) -> dict[str, bool | None]:
    """The normaliser options ``fields`` records under ``names`` (ours -> theirs), checked."""
    options = {}
    for ours, theirs in names.items():
        if theirs in fields:
            value = fields[theirs]
            if not (value is None or isinstance(value, bool)):
                raise ValueError(f"{path}: {theirs!r} must be true, false or null, got {value!r}")
            if value is None and ours != "strip_accents":
                continue  # null lowercase / chinese-chars: the default
            options[ours] = value
    return options


def _tokenizer_json_vocab(path: str, data: Mapping[str, Any]) -> list[str]:
    model = data.get("model") or {}
    if model.get("type") != "WordPiece" or not isinstance(model.get("vocab"), dict):
        raise ValueError(f"{path}: model.type is {model.get('type')!r}; a BERT tokenizer.json holds a "
                         "WordPiece model with a token -> id 'vocab'")
    vocab: list[str | None] = [None] * len(model["vocab"])
    for token, index in model["vocab"].items():
        if not (isinstance(index, int) and 0 <= index < len(vocab)) or vocab[index] is not None:
            raise ValueError(f"{path}: model.vocab ids must be 0..{len(vocab) - 1}, each once; "
                             f"{token!r} has {index!r}")
        vocab[index] = token
    return vocab


def _read_json(path: str) -> Any:
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(_not_utf8_message(path, raw, e, "a tokenizer.json: UTF-8 JSON")) from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from e


def _read_vocab_lines(vocab_file: str) -> list[str]:
    """The lines of a ``vocab.txt`` (universal newlines), refusing a file that is not UTF-8 text."""
    with open(vocab_file, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(_not_utf8_message(vocab_file, raw, e, "a vocab.txt: UTF-8 text, one token a line")) from None
    vocab = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if vocab and vocab[-1] == "":
        vocab.pop()  # the final line break
    return vocab


def _not_utf8_message(path: str, raw: bytes, error: UnicodeDecodeError, expected: str) -> str:
    """One line naming the file, the line and byte of the first invalid byte, and what was expected."""
    line = raw.count(b"\n", 0, error.start) + 1
    kind = " (a PNG image)" if raw.startswith(b"\x89PNG") else ""
    return (f"{path}:{line}: byte {error.start} ({raw[error.start]:#04x}) is not UTF-8{kind}; "
            f"expected {expected}")


def _spec_dict(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A plain dict from a Mapping or an ``ml_collections.ConfigDict``, with a checked ``kind``."""
    spec = spec.to_dict() if hasattr(spec, "to_dict") else dict(spec)
    kind = spec.get("kind")
    if kind not in KINDS:
        raise ValueError(f"tokenizer spec 'kind' must be one of {KINDS}, got {kind!r} in {spec}")
    unknown = sorted(set(spec) - _LOAD_KEYS[kind] - _TRAIN_KEYS[kind])
    if unknown:
        raise ValueError(
            f"unknown {kind} tokenizer spec keys {unknown}; known: {sorted(_LOAD_KEYS[kind] | _TRAIN_KEYS[kind])}"
        )
    return spec


def load_tokenizer(spec: Mapping[str, Any]) -> Tokenizer:
    """Loads a tokenizer from its spec.

    Args:
      spec: ``{'kind': 'wordpiece', 'vocab_file': '.../vocab.txt', 'lowercase': True}`` (optional
        ``lowercase``, ``strip_accents``, ``tokenize_chinese_chars``; see :class:`WordPieceTokenizer`)
        or ``{'kind': 'sentencepiece', 'model_file': '.../spm.model'}`` (``'convention': 'deberta'``: DeBERTa-v2/v3's,
        with ``lowercase`` and ``split_by_punct``; ``data_pipelines.deberta_spm``) or ``{'kind': 'bpe', 'vocab_file':
        '.../tokenizer.json' or '.../vocab.json'}`` (byte-level BPE, ``data_pipelines.bpe``). Training-only keys such as
        ``vocab_size`` are accepted and ignored, so one spec serves training and loading.

    Returns:
      The tokenizer.

    Raises:
      ValueError: unknown kind or key, or a missing file key.
      FileNotFoundError: the file is missing (the message names the build command).
    """
    spec = _spec_dict(spec)
    file_key = "model_file" if spec["kind"] == "sentencepiece" else "vocab_file"
    if not spec.get(file_key):
        raise ValueError(f"{spec['kind']} tokenizer spec needs {file_key!r}: {spec}")
    if spec["kind"] == "wordpiece":
        return WordPieceTokenizer(
            spec["vocab_file"],
            lowercase=spec.get("lowercase"),
            strip_accents=spec.get("strip_accents"),
            tokenize_chinese_chars=spec.get("tokenize_chinese_chars"),
        )
    if spec["kind"] == "bpe":
        from data_pipelines import bpe  # pylint: disable=import-outside-toplevel  (bpe builds on this module)

        return bpe.BPETokenizer(spec["vocab_file"], lowercase=bool(spec.get("lowercase", False)))
    convention = spec.get("convention", "bert")
    if convention not in SENTENCEPIECE_CONVENTIONS:
        raise ValueError(f"sentencepiece tokenizer spec 'convention' must be one of {SENTENCEPIECE_CONVENTIONS}, "
                         f"got {convention!r}")
    if convention == "deberta":
        from data_pipelines import deberta_spm  # pylint: disable=import-outside-toplevel  (builds on this module)

        return deberta_spm.DebertaSentencePieceTokenizer(
            spec["model_file"], lowercase=bool(spec.get("lowercase", False)),
            split_by_punct=bool(spec.get("split_by_punct", False)))
    from data_pipelines import sentencepiece_tokenizer  # pylint: disable=import-outside-toplevel  (builds on this module)

    return sentencepiece_tokenizer.SentencePieceTokenizer(spec["model_file"])
