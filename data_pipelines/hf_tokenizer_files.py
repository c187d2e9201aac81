"""Our tokenizers as Hugging Face tokenizer files, and back: what ``transformers`` 5 loads with ``AutoTokenizer``.

* WordPiece: ``vocab.txt``, ``tokenizer.json`` (vocabulary, ``BertNormalizer`` options, BERT's
  post-processor), ``tokenizer_config.json`` (``BertTokenizer`` with ``do_lower_case``,
  ``strip_accents``, ``tokenize_chinese_chars``, ``model_max_length``) and ``special_tokens_map.json``.
  transformers 5 builds ``BertTokenizer``'s normaliser from ``tokenizer_config.json``, so that file
  carries the options; ``tokenizer.json`` repeats them for readers of the ``tokenizers`` format.
* Byte-level BPE (RoBERTa): ``tokenizer.json``, ``vocab.json``, ``merges.txt`` and a
  ``tokenizer_config.json`` naming ``RobertaTokenizer`` (``data_pipelines.bpe``).
* SentencePiece with DeBERTa-v2/v3's conventions (``convention="deberta"``, ``data_pipelines.deberta_spm``): the
  model as ``spm.model`` and a ``tokenizer_config.json`` naming ``DebertaV2Tokenizer`` (``do_lower_case``,
  ``split_by_punct``), which builds the same pipeline, so ids are equal. A directory with an ``spm.model``
  whose ``tokenizer_config.json`` names that class (or none, in a ``model_type="deberta-v2"`` directory,
  as Microsoft's DeBERTa-v3) reads back as that convention.
* SentencePiece: the model as ``spiece.model`` (lower-casing and Unicode normalisation live inside it),
  ``tokenizer_config.json`` naming ``BertGenerationTokenizer`` (transformers' plain SentencePiece
  wrapper: the ``sentencepiece`` library itself encodes, so ids are ours) and ``special_tokens_map.json``.

:func:`find_hf_tokenizer_spec` reads either layout back into a :func:`~data_pipelines.tokenizer.load_tokenizer` spec.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from data_pipelines import deberta_spm
from data_pipelines import tokenizer as tokenizer_lib

SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
# The SentencePiece file name transformers' SentencePiece tokenizers read.
HF_SENTENCEPIECE_MODEL_FILE = "spiece.model"
HF_SENTENCEPIECE_CLASS = "BertGenerationTokenizer"


def _write_json(path: str, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")


def write_hf_tokenizer_files(spec: Mapping[str, Any], out_dir: str, *, model_max_length: int) -> list[str]:
    """Writes the tokenizer of ``spec`` into ``out_dir`` in the layout transformers 5 loads.

    Args:
      spec: a :func:`~data_pipelines.tokenizer.load_tokenizer` spec (WordPiece or SentencePiece).
      out_dir: the Hugging Face model directory (created if missing).
      model_max_length: the longest input in tokens (the model's ``max_position_embeddings``).

    Returns:
      The names of the files written, in ``out_dir``.

    Raises:
      ValueError / FileNotFoundError: as :func:`~data_pipelines.tokenizer.load_tokenizer`.
    """
    tokenizer = tokenizer_lib.load_tokenizer(spec)
    os.makedirs(out_dir, exist_ok=True)
    specials = {name: tokenizer.id_to_token(i) for name, i in (
        ("unk_token", tokenizer.unk_id), ("sep_token", tokenizer.sep_id), ("pad_token", tokenizer.pad_id),
        ("cls_token", tokenizer.cls_id), ("mask_token", tokenizer.mask_id))}
    if tokenizer.kind == "bpe":  # tokenizer.json, vocab.json, merges.txt; RobertaTokenizer's config
        tokenizer.save(out_dir)
        config = tokenizer.hf_config()
        specials.update(bos_token=config["bos_token"], eos_token=config["eos_token"])
        files = [tokenizer_lib.HF_TOKENIZER_FILE] + [
            name for name in ("vocab.json", "merges.txt") if os.path.isfile(os.path.join(out_dir, name))]
    elif isinstance(tokenizer, deberta_spm.DebertaSentencePieceTokenizer):  # spm.model, DebertaV2Tokenizer's config
        tokenizer.save(out_dir)
        config = tokenizer.hf_config()
        specials.update(bos_token=config["bos_token"], eos_token=config["eos_token"])
        files = [tokenizer.model_file_name]
    elif isinstance(tokenizer, tokenizer_lib.WordPieceTokenizer):
        tokenizer.save(out_dir)  # vocab.txt, tokenizer_config.json
        with open(os.path.join(out_dir, tokenizer_lib.HF_TOKENIZER_FILE), "w", encoding="utf-8") as f:
            f.write(tokenizer.to_tokenizer_json())
        config = tokenizer.hf_config()
        files = [tokenizer_lib.WORDPIECE_VOCAB_FILE, tokenizer_lib.HF_TOKENIZER_FILE]
    else:
        tokenizer.save(out_dir)
        os.replace(os.path.join(out_dir, tokenizer_lib.SENTENCEPIECE_MODEL_FILE),
                   os.path.join(out_dir, HF_SENTENCEPIECE_MODEL_FILE))
        # No bos/eos: BERT inputs are [CLS] ... [SEP], which the instance builder adds.
        config = {"tokenizer_class": HF_SENTENCEPIECE_CLASS, **specials, "bos_token": None, "eos_token": None}
        files = [HF_SENTENCEPIECE_MODEL_FILE]
    _write_json(os.path.join(out_dir, tokenizer_lib.WORDPIECE_CONFIG_FILE),
                {**config, "model_max_length": int(model_max_length)})
    _write_json(os.path.join(out_dir, SPECIAL_TOKENS_MAP_FILE), specials)
    return files + [tokenizer_lib.WORDPIECE_CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE]


def find_hf_tokenizer_spec(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The tokenizer spec of a Hugging Face directory, or None when it holds no tokenizer we read.

    DeBERTa-v2/v3's SentencePiece (:func:`deberta_spec`), else byte-level BPE (a ``tokenizer.json`` with a
    BPE model, or ``vocab.json`` + ``merges.txt``), else
    WordPiece (``vocab.txt``, else ``tokenizer.json``; the normaliser options then come from the
    directory's ``tokenizer_config.json`` / ``tokenizer.json``, see
    :class:`~data_pipelines.tokenizer.WordPieceTokenizer`), else a SentencePiece ``spiece.model`` /
    ``spm.model``.
    """
    from data_pipelines import bpe  # pylint: disable=import-outside-toplevel

    spec = deberta_spec(directory)
    if spec:
        return spec
    vocab = bpe.find_bpe_file(directory)
    if vocab:
        return {"kind": "bpe", "vocab_file": vocab}
    vocab = tokenizer_lib.find_wordpiece_file(directory)
    if vocab:
        return {"kind": "wordpiece", "vocab_file": vocab}
    for name in (HF_SENTENCEPIECE_MODEL_FILE, tokenizer_lib.SENTENCEPIECE_MODEL_FILE):
        if os.path.isfile(os.path.join(directory, name)):
            return {"kind": "sentencepiece", "model_file": os.path.join(str(directory), name)}
    return None


def deberta_spec(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The ``convention="deberta"`` spec of a directory whose files say DeBERTa-v2/v3
    (``deberta_spm.is_deberta_config``): its ``spm.model``, else the ``tokenizer.json`` transformers 5 saves
    for a ``DebertaV2Tokenizer``, with ``do_lower_case`` / ``split_by_punct`` from its
    ``tokenizer_config.json``; None otherwise.

    Raises:
      ValueError: an option there that is not true/false (naming the file).
    """
    directory = str(directory)
    fields = {}
    for name in (tokenizer_lib.WORDPIECE_CONFIG_FILE, "config.json"):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            fields[name] = tokenizer_lib._read_json(path)  # pylint: disable=protected-access
    config = fields.get(tokenizer_lib.WORDPIECE_CONFIG_FILE, {})
    if not deberta_spm.is_deberta_config(config, fields.get("config.json", {}).get("model_type")):
        return None
    model_file = next((os.path.join(directory, name) for name in (tokenizer_lib.SENTENCEPIECE_MODEL_FILE,
                                                                   tokenizer_lib.HF_TOKENIZER_FILE)
                       if os.path.isfile(os.path.join(directory, name))), None)
    read_json = tokenizer_lib._read_json  # pylint: disable=protected-access
    if model_file is None or (model_file.endswith(".json")
                              and (read_json(model_file).get("model") or {}).get("type") != "Unigram"):
        return None  # e.g. a DeBERTa model with a WordPiece tokenizer
    options = {}
    for ours, theirs in (("lowercase", "do_lower_case"), ("split_by_punct", "split_by_punct")):
        value = config.get(theirs, False)
        if not isinstance(value, bool):
            raise ValueError(f"{os.path.join(directory, tokenizer_lib.WORDPIECE_CONFIG_FILE)}: {theirs!r} must "
                             f"be true or false, got {value!r}")
        options[ours] = value
    return {"kind": "sentencepiece", "model_file": model_file, "convention": deberta_spm.CONVENTION, **options}
