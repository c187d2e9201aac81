r"""Prepares a pretraining source as an ArrayRecord TFDS dataset (run once per corpus).

Examples:
  python -m launch.prepare_data      # the demo corpus (gensim's Wikipedia excerpt) into ./data
  python -m launch.prepare_data --source=wikipedia_dump \
      --dump_path=/data/enwiki-20240601-pages-articles-multistream.xml.bz2 --data_dir=/data/tfds \
      --num_workers=0
  python -m launch.prepare_data --source=books --books_dir=/data/bookcorpus --books_format=bert \
      --data_dir=/data/tfds

Prints the source spec to put into a config (``config.data.sources``).
"""

import json

from absl import app, flags, logging

from data_pipelines.sources import demo_dump_path, get_source

_SOURCE = flags.DEFINE_enum("source", "wikipedia_dump", ["wikipedia_dump", "books"], "Source to prepare.")
_DUMP_PATH = flags.DEFINE_string("dump_path", None, "Wikipedia XML dump (.xml/.xml.bz2); default: the demo excerpt.")
_BOOKS_DIR = flags.DEFINE_string("books_dir", None, "Folder of .txt files (books source).")
_BOOKS_FORMAT = flags.DEFINE_enum(
    "books_format", "book_per_file", ["book_per_file", "bert"],
    "book_per_file: one book per file; bert: one sentence per line, blank line between documents.",
)
_DATA_DIR = flags.DEFINE_string("data_dir", "./data", "Where the TFDS dataset is written.")
_NUM_WORKERS = flags.DEFINE_integer("num_workers", 0, "Wikitext-cleaning processes (0 = all cores).")


def main(argv):
    del argv
    spec = {"name": _SOURCE.value, "data_dir": _DATA_DIR.value}
    if _SOURCE.value == "wikipedia_dump":
        spec.update(dump_path=_DUMP_PATH.value or demo_dump_path(), num_workers=_NUM_WORKERS.value)
    else:
        spec.update(books_dir=_BOOKS_DIR.value, format=_BOOKS_FORMAT.value)
    documents = get_source({**spec, "prepare": True}, split="all")
    logging.info("%s: %d documents ready in %s", spec["name"], len(documents), _DATA_DIR.value)
    spec.pop("num_workers", None)
    print(json.dumps(spec))


if __name__ == "__main__":
    app.run(main)
