"""The data-source flags of ``launch.prepare_data`` and ``launch.build_vocab``: one definition for both.

``source_spec()`` turns them into a source spec (``data_pipelines.sources``): only the fields given, plus
the demo excerpt as the default dump and ``./data`` as the default TFDS directory of file-backed sources.
"""

from __future__ import annotations

import json

from absl import flags

from data_pipelines import sources
from data_pipelines.sources import tfds_text

SOURCE = flags.DEFINE_enum("source", "wikipedia_dump", sorted(sources.SOURCE_FIELDS), "Data source.")
DUMP_PATH = flags.DEFINE_string("dump_path", None, "wikipedia_dump: XML dump (.xml/.xml.bz2); default: the demo excerpt.")
BOOKS_DIR = flags.DEFINE_string("books_dir", None, "books: folder of .txt files.")
BOOKS_FORMAT = flags.DEFINE_enum("books_format", None, ["book_per_file", "bert"],
                                 "books: one book per file (default), or bert: a sentence a line, blank line between documents.")
DATASET = flags.DEFINE_string("dataset", None, "tfds: TFDS dataset name, e.g. wikipedia/20230601.en.")
DATA_DIR = flags.DEFINE_string("data_dir", None, f"Where the TFDS dataset is (or is written); default {tfds_text.DEFAULT_DATA_DIR}.")
NUM_WORKERS = flags.DEFINE_integer("num_workers", 0, "wikipedia_dump: wikitext-cleaning processes when building (0 = all cores).")
SOURCE_SPEC = flags.DEFINE_string("source_spec", None, "JSON object of further source fields (merged last).")


def source_spec() -> dict:
    """The source spec the flags describe.

    Raises:
      ValueError: ``--source_spec`` is not a JSON object.
    """
    name, allowed = SOURCE.value, sources.SOURCE_FIELDS[SOURCE.value]
    given = {"dump_path": DUMP_PATH.value, "books_dir": BOOKS_DIR.value, "format": BOOKS_FORMAT.value,
             "dataset": DATASET.value, "data_dir": DATA_DIR.value}
    spec = {"name": name, **{key: value for key, value in given.items() if value is not None}}
    if name == "wikipedia_dump":
        spec.setdefault("dump_path", sources.demo_dump_path())
        spec["num_workers"] = NUM_WORKERS.value
    if "data_dir" in allowed and name != "tfds":  # tfds: its own default directory
        spec.setdefault("data_dir", tfds_text.DEFAULT_DATA_DIR)
    try:
        extra = json.loads(SOURCE_SPEC.value or "{}")
    except json.JSONDecodeError as error:
        raise ValueError(f"--source_spec={SOURCE_SPEC.value!r} is not JSON: {error}") from error
    if not isinstance(extra, dict):
        raise ValueError(f"--source_spec={SOURCE_SPEC.value!r}: expected a JSON object")
    return spec | extra
