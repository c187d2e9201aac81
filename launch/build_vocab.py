r"""Builds a WordPiece vocabulary or SentencePiece model from a configured data source.

File-backed sources must be prepared first (``python -m launch.prepare_data``). Examples:
  python -m launch.build_vocab --source=wikipedia_dump --dump_path=/data/enwiki.xml.bz2 \
      --data_dir=/data/tfds --kind=wordpiece --vocab_size=30522 --out_dir=/data/vocab_wp
  python -m launch.build_vocab --source=books --books_dir=/data/bookcorpus --data_dir=/data/tfds \
      --kind=sentencepiece --model_type=unigram --vocab_size=30000 --out_dir=/data/vocab_spm
  python -m launch.build_vocab --source=books --books_dir=/data/korean --data_dir=/data/tfds \
      --kind=wordpiece --nolowercase --vocab_size=32000 --out_dir=/data/vocab_ko   # Korean: cased, Hangul whole
  python -m launch.build_vocab --source=synthetic --source_spec='{"num_documents": 500}' \
      --kind=wordpiece --vocab_size=2000 --out_dir=/tmp/vocab

Prints the tokenizer spec to put into a config (``config.tokenizer``).
"""

import json

from absl import app, flags, logging

from data_pipelines import tokenizer, vocab_training

_SOURCE = flags.DEFINE_string("source", None, "Data source name (see data_pipelines/sources).", required=True)
_DUMP_PATH = flags.DEFINE_string("dump_path", None, "Wikipedia XML dump (.xml or .xml.bz2), for dump sources.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Where the prepared TFDS dataset lives (source default: ./data).")
_BOOKS_DIR = flags.DEFINE_string("books_dir", None, "Folder of .txt files, for the books source.")
_BOOKS_FORMAT = flags.DEFINE_string("books_format", None, "books source: 'book_per_file' or 'bert'.")
_DATASET = flags.DEFINE_string("dataset", None, "TFDS dataset name, for the tfds source.")
_SOURCE_SPEC = flags.DEFINE_string("source_spec", None, "JSON object of further source fields (merged last).")
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
_MODEL_TYPE = flags.DEFINE_enum(
    "model_type", "unigram", list(tokenizer.SENTENCEPIECE_MODEL_TYPES), "SentencePiece model type."
)
_CHARACTER_COVERAGE = flags.DEFINE_float("character_coverage", 0.9995, "SentencePiece: share of characters covered.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where vocab.txt or spm.model is written.", required=True)


def main(argv):
    del argv
    source_spec = {"name": _SOURCE.value}
    path_flags = {"dump_path": _DUMP_PATH, "data_dir": _DATA_DIR, "books_dir": _BOOKS_DIR,
                  "format": _BOOKS_FORMAT, "dataset": _DATASET}
    source_spec.update({key: flag.value for key, flag in path_flags.items() if flag.value is not None})
    source_spec.update(json.loads(_SOURCE_SPEC.value or "{}"))
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
    trained = vocab_training.build_vocab_from_source(
        source_spec, tokenizer_spec, _OUT_DIR.value, split=_SPLIT.value, max_documents=_MAX_DOCUMENTS.value
    )
    logging.info("vocabulary of %d tokens written to %s", trained.vocab_size, _OUT_DIR.value)
    print(json.dumps(trained.spec))


if __name__ == "__main__":
    app.run(main)
