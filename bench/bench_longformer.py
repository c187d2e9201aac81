"""Longformer vs full attention at long rows: step time and peak memory, JAX and PyTorch, through ``bench_step``.

For each ``--seq_lens`` length, ``bench.bench_step`` (its runners: the JAX train step of the trainer and
transformers' class, alternating timed steps) trains ``--arch=longformer`` (``--window``) and the full-attention
baseline (``--baseline``, default ``roberta``: Longformer's own layout, BERT's full attention, MLM only like
it; ``bert`` adds NSP) at the same size, batch and number of predictions (15% of the row, the Longformer
recipe's). Dropout is off in both (``--dropout=0``), so the JAX full-attention step runs its fused attention.
No second step implementation: every number comes from ``bench_step.main``.

Memory: each framework's peak (device ``peak_bytes_in_use`` / ``torch.cuda.max_memory_allocated`` on a GPU;
on a CPU the worker process's peak RSS, runtime included) and, for JAX, XLA's compiled temporary bytes
(``memory_analysis().temp_size_in_bytes``: what the step needs beside parameters, optimizer state and inputs).

    python -m bench.bench_longformer --size=mini --seq_lens=2048,4096 --window=512 --steps=2 \
        --out=bench/results/longformer.jsonl
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench import bench_step  # noqa: E402

PREDICTED_SHARE = 0.15  # configs/pretrain.set_longformer: 15% of the tokens predicted


def step_command(arch: str, args: argparse.Namespace, seq_len: int) -> list[str]:
    """The ``bench_step`` arguments of one architecture at one row length."""
    command = [f"--arch={arch}", f"--size={args.size}", f"--seq_len={seq_len}", f"--batch_size={args.batch_size}",
               f"--max_predictions={round(PREDICTED_SHARE * seq_len)}", f"--steps={args.steps}",
               f"--warmup={args.warmup}", "--dropout=0.0", f"--framework={args.framework}", f"--dtype={args.dtype}",
               f"--torch_device={args.torch_device}"]
    if arch == "longformer":
        command.append(f"--attention_window={args.window}")
    if args.out:
        command.append(f"--out={args.out}")
    return command


def summary_rows(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (record, framework): length, architecture, median step, peak and XLA temporary MiB."""
    rows = []
    for record in records:
        for name, result in record["results"].items():
            temp = result.get("xla_temp_bytes")
            rows.append({"seq_len": record["seq_len"], "arch": record["arch"], "window": record["attention_window"],
                         "framework": name, "step_ms": round(result["step_time_median_s"] * 1e3, 1),
                         "peak_mib": round(result["peak_memory_bytes"] / 2**20),
                         "peak_source": result["peak_memory_source"],
                         "xla_temp_mib": None if temp is None else round(temp / 2**20, 1),
                         "load": round(result["load_average_before"][0], 1)})
    return rows


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="mini")
    parser.add_argument("--seq_lens", default="2048,4096")
    parser.add_argument("--window", type=int, default=512, help="Longformer attention_window (two-sided)")
    parser.add_argument("--baseline", default="roberta", choices=("roberta", "bert"),
                        help="the full-attention architecture")
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--framework", default="jax,torch")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--torch_device", default="auto")
    parser.add_argument("--out", default=None, help="append bench_step's JSON lines to this file")
    args = parser.parse_args(argv)
    records = []
    for seq_len in (int(s) for s in args.seq_lens.split(",")):
        for arch in (args.baseline, "longformer"):
            records.append(bench_step.main(step_command(arch, args, seq_len)))
    rows = summary_rows(records)
    print(f"{'S':>5} {'arch':>10} {'framework':>9} {'step ms':>9} {'peak MiB':>9} {'XLA temp MiB':>12}  load")
    for row in rows:
        temp = "-" if row["xla_temp_mib"] is None else f"{row['xla_temp_mib']:.1f}"
        print(f"{row['seq_len']:>5} {row['arch']:>10} {row['framework']:>9} {row['step_ms']:>9.1f} "
              f"{row['peak_mib']:>9} {temp:>12}  {row['load']}")
    return rows


if __name__ == "__main__":
    main()
