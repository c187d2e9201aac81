r"""Prepares a pretraining source as an ArrayRecord TFDS dataset (run once per corpus).

Examples:
  python -m launch.prepare_data      # the demo corpus (gensim's Wikipedia excerpt) into ./data
  python -m launch.prepare_data --source=wikipedia_dump \
      --dump_path=/data/enwiki-20240601-pages-articles-multistream.xml.bz2 --data_dir=/data/tfds
  python -m launch.prepare_data --source=books --books_dir=/data/bookcorpus --books_format=bert \
      --data_dir=/data/tfds

Prints the source spec to put into a config (``config.data.sources``). The source flags are those of
``launch.build_vocab`` (``launch/source_flags.py``).
"""

import json

from absl import logging

from bert_jax import entry
from data_pipelines.sources import get_source
from launch import source_flags


@entry.main()
def main(argv):
    entry.no_arguments(argv)
    spec = source_flags.source_spec()
    documents = get_source({**spec, "prepare": True}, split="all")
    logging.info("%s: %d documents ready in %s", spec["name"], len(documents), spec.get("data_dir", "-"))
    spec.pop("num_workers", None)
    print(json.dumps(spec))


if __name__ == "__main__":
    main.run()
