r"""Throughput of the Wikipedia dump builder, in uncompressed XML MB per second.

Runs the real builder (stream + parse + clean + write ArrayRecord) end to end into a fresh temporary
data_dir, and, for reference, the XML streaming alone (bz2 + iterparse, no cleaning).

Examples:
  python -m bench.bench_dump_builder                      # the demo excerpt, one process
  python -m bench.bench_dump_builder --num_workers=4 --dump_path=/data/enwiki-...-pages-articles1.xml.bz2
"""

import bz2
import shlex
import sys
import tempfile
import time

from absl import app, flags

from data_pipelines.sources import demo_dump_path, get_source
from data_pipelines.sources.wikipedia_dump import iter_dump_pages

_DUMP_PATH = flags.DEFINE_string("dump_path", None, "Dump to build (default: the demo excerpt).")
_NUM_WORKERS = flags.DEFINE_integer("num_workers", 1, "Wikitext-cleaning processes (0 = all cores).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Builds to time; the best is reported.")


def _uncompressed_megabytes(dump_path: str) -> float:
    opener = bz2.open if dump_path.endswith(".bz2") else open
    size = 0
    with opener(dump_path, "rb") as stream:
        while chunk := stream.read(1 << 22):
            size += len(chunk)
    return size / 1e6


def _best_seconds(function, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv):
    del argv
    dump_path = _DUMP_PATH.value or demo_dump_path()
    megabytes = _uncompressed_megabytes(dump_path)

    def build():
        with tempfile.TemporaryDirectory() as data_dir:
            spec = {"name": "wikipedia_dump", "dump_path": dump_path, "data_dir": data_dir,
                    "num_workers": _NUM_WORKERS.value, "prepare": True}
            return len(get_source(spec, split="all"))

    def stream_only():
        return sum(1 for _ in iter_dump_pages(dump_path))

    build_seconds = _best_seconds(build, _REPEATS.value)
    stream_seconds = _best_seconds(stream_only, _REPEATS.value)
    command = "python -m bench.bench_dump_builder " + shlex.join(sys.argv[1:])
    print(f"command: {command.strip()}")
    print(f"dump: {dump_path} ({megabytes:.1f} MB uncompressed XML)")
    print(f"builder (parse + clean + write), num_workers={_NUM_WORKERS.value}: "
          f"{megabytes / build_seconds:.2f} MB/s ({build_seconds:.2f} s, best of {_REPEATS.value})")
    print(f"XML streaming alone (bz2 + iterparse): {megabytes / stream_seconds:.1f} MB/s")


if __name__ == "__main__":
    app.run(main)
