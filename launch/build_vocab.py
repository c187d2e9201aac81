r"""Builds a WordPiece vocabulary or SentencePiece model from a configured data source.

File-backed sources must be prepared first (``python -m launch.prepare_data``; same source flags,
``launch/source_flags.py``). Examples:
  python -m launch.build_vocab --source=wikipedia_dump --dump_path=/data/enwiki.xml.bz2 \
      --data_dir=/data/tfds --kind=wordpiece --vocab_size=30522 --out_dir=/data/vocab_wp
  python -m launch.build_vocab --source=books --books_dir=/data/korean --data_dir=/data/tfds \
      --kind=wordpiece --nolowercase --vocab_size=32000 --out_dir=/data/vocab_ko   # Korean: cased, Hangul whole

Prints the tokenizer spec to put into a config (``config.tokenizer``).
"""

import json

from absl import app, flags, logging

from bert_jax import entry
from data_pipelines import tokenizer, vocab_training
from launch import source_flags

_SPLIT = flags.DEFINE_string("split", "train", "Source split to read.")
_MAX_DOCUMENTS = flags.DEFINE_integer("max_documents", None, "Read at most this many documents.")
_KIND = flags.DEFINE_enum("kind", "wordpiece", list(tokenizer.KINDS), "Tokenizer kind.")
_VOCAB_SIZE = flags.DEFINE_integer("vocab_size", 30522, "Vocabulary size, special tokens included.")
_LOWERCASE = flags.DEFINE_boolean("lowercase", True, "Lowercase (uncased); WordPiece also strips accents then "
                                  "unless --nostrip_accents.")
_STRIP_ACCENTS = flags.DEFINE_boolean(
    "strip_accents", None, "WordPiece: remove accents (also splits Hangul into jamo); default: when lowercasing.")
_TOKENIZE_CHINESE_CHARS = flags.DEFINE_boolean(
    "tokenize_chinese_chars", None, "WordPiece: spaces around CJK ideographs; default: true (BERT).")
_LIMIT_ALPHABET = flags.DEFINE_integer(
    "limit_alphabet", None, f"WordPiece: most characters kept; default: {vocab_training.DEFAULT_LIMIT_ALPHABET}.")
_MIN_FREQUENCY = flags.DEFINE_integer("min_frequency", 2, "WordPiece: least count of a merged pair.")
_MODEL_TYPE = flags.DEFINE_enum("model_type", "unigram", list(tokenizer.SENTENCEPIECE_MODEL_TYPES),
                                "SentencePiece model type.")
_CHARACTER_COVERAGE = flags.DEFINE_float("character_coverage", 0.9995, "SentencePiece: share of characters covered.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where vocab.txt or spm.model is written.", required=True)


@entry.main()
def main(argv):
    entry.no_arguments(argv)
    tokenizer_spec = {"kind": _KIND.value, "vocab_size": _VOCAB_SIZE.value, "lowercase": _LOWERCASE.value}
    if _KIND.value == "wordpiece":
        tokenizer_spec["min_frequency"] = _MIN_FREQUENCY.value
        wordpiece_flags = {"strip_accents": _STRIP_ACCENTS, "tokenize_chinese_chars": _TOKENIZE_CHINESE_CHARS,
                           "limit_alphabet": _LIMIT_ALPHABET}
        tokenizer_spec.update({key: flag.value for key, flag in wordpiece_flags.items() if flag.value is not None})
    else:
        wordpiece_only = (_STRIP_ACCENTS, _TOKENIZE_CHINESE_CHARS, _LIMIT_ALPHABET)
        given = [f"--{f.name}" for f in wordpiece_only if f.value is not None]
        if given:
            raise app.UsageError(f"{', '.join(given)}: WordPiece only (SentencePiece normalises inside its model)")
        tokenizer_spec.update(model_type=_MODEL_TYPE.value, character_coverage=_CHARACTER_COVERAGE.value)
    trained = vocab_training.build_vocab_from_source(source_flags.source_spec(), tokenizer_spec, _OUT_DIR.value,
                                                     split=_SPLIT.value, max_documents=_MAX_DOCUMENTS.value)
    logging.info("vocabulary of %d tokens written to %s", trained.vocab_size, _OUT_DIR.value)
    print(json.dumps(trained.spec))


if __name__ == "__main__":
    main.run()
