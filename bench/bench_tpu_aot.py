"""Our train step against transformers 4.57's ``FlaxBertForPreTraining``, both compiled for a compile-only TPU
target (``libtpu``, no TPU): per-device memory, compiler FLOPs and bytes accessed per token, the roofline
bound, the largest batch per chip that fits, and compile times (cold and warm JAX compilation cache).

The steps are in ``bench/tpu_aot_steps.py``; every compilation runs in a worker process of its own
(``python -m bench.bench_tpu_aot --worker=JSON``), the peer's with ``--peer_path`` (a ``pip install --target``
directory holding transformers 4.57, huggingface_hub < 1.0 and tokenizers 0.22) on ``PYTHONPATH``.

How each figure is obtained (the per-layer cost of an unrolled step is the same for every layer):

* FLOPs, bytes and peak memory at the full depth ``L`` are extrapolated linearly from unrolled compiles
  of the same model at ``--depths`` layers (default 1 and 2): ``x(L) = x(1) + (L - 1) (x(2) - x(1))``.
  Full-depth unrolled compiles of the peer take minutes each on 2 CPU cores, and XLA's cost analysis counts
  a scanned layer once, so this is how both sides are measured alike. ``--check_full`` also compiles our
  step at full depth with ``scan_layers`` (the layout a TPU run uses) for its real peak memory.
* Roofline bound: ``model_FLOPs / max(FLOPs / peak, bytes / HBM bandwidth)`` as a fraction of the chip's
  peak, with ``model_FLOPs`` from ``ModelConfig.train_flops_per_token`` (docs/benchmarks.md) and the
  compiler's FLOPs (at least the model FLOPs: a Pallas kernel's FLOPs are not in XLA's count).
* Largest batch per chip: the memory of the depth-extrapolated step at two batch sizes is linear in
  the batch; the largest batch with ``peak <= HBM`` is solved from that line (``--fit``) and, for ours,
  bisected on real full-depth ``scan_layers`` compiles (``--bisect``).
* Compile time: lower + compile of the full-depth step (ours with ``scan_layers``), first with an empty
  persistent cache directory (cold), then again in a new process with the cache it filled (warm).

Usage::

    python -m bench.bench_tpu_aot --target=v5e-8 --size=base --seq_len=128 --per_chip_batch=32 \
        --frameworks=ours,peer --peer_path=/work/peer457 --fit --check_full --out=tpu_aot.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Chip peaks: dense bf16 FLOP/s and HBM bytes/s (Cloud TPU's published figures).
CHIPS = {"v5e": (197e12, 819e9), "v5litepod": (197e12, 819e9), "v5p": (459e12, 2765e9), "v4": (275e12, 1228e9),
         "v6e": (918e12, 1640e9)}
EXTENSIVE = ("flops", "bytes_accessed", "peak_bytes", "temp_bytes", "argument_bytes", "compile_s")


def run_worker_process(request: dict[str, Any], peer_path: str | None, timeout: float) -> dict[str, Any]:
    """One compilation in a fresh process; returns its result record (raises on failure)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TPU_SKIP_MDS_QUERY": "1"}
    env.pop("XLA_FLAGS", None)
    paths = [ROOT] + ([peer_path] if request["framework"] == "peer" and peer_path else [])
    env["PYTHONPATH"] = os.pathsep.join(paths[::-1] + [env.get("PYTHONPATH", "")])
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bench.bench_tpu_aot", f"--worker={json.dumps(request)}"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise RuntimeError(f"worker {request} failed ({done.returncode}): {done.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    result["process_s"] = time.perf_counter() - start
    print(f"    {request['framework']} L={result.get('num_layers')} B={request['batch_size']}: "
          f"compile {result['compile_s']:.1f} s, peak {result['peak_bytes'] / 2**30:.2f} GiB, "
          f"{result['flops'] / 1e12:.3f} TFLOP, {result['bytes_accessed'] / 1e9:.2f} GB "
          f"(load {result['load_average'][0]:.1f})", flush=True)
    return result


def extrapolate(shallow: list[dict[str, Any]], depth: int) -> dict[str, float]:
    """Linear extrapolation of the extensive figures from two depths to ``depth`` layers."""
    (a, b) = sorted(shallow, key=lambda r: r["num_layers"])
    la, lb = a["num_layers"], b["num_layers"]
    return {key: a[key] + (depth - la) * (b[key] - a[key]) / (lb - la) for key in EXTENSIVE}


def _full_depth(size: str) -> int:
    from bert_jax.config import ModelConfig

    return ModelConfig.from_size(size).num_layers


def measure(args: argparse.Namespace, framework: str) -> dict[str, Any]:
    """Every figure of one framework at the args' target, size, sequence length and batch."""
    from bert_jax.config import ModelConfig

    from bench.tpu_aot_steps import roofline

    target_chips = _chips(args.target)
    depth = _full_depth(args.size)
    batch = args.per_chip_batch * target_chips
    common = {"framework": framework, "target": args.target, "size": args.size, "seq_len": args.seq_len,
              "attention_dropout": args.attention_dropout, "attention_impl": args.attention_impl}
    print(f"  {framework}:", flush=True)
    shallow = [run_worker_process({**common, "batch_size": batch, "num_layers": d}, args.peer_path, args.timeout)
               for d in args.depths]
    full = extrapolate(shallow, depth)
    peak_flops, bandwidth = CHIPS[args.target.split("-")[0].split(":")[-1]]
    max_predictions = 20 if args.seq_len <= 128 else 80
    model = ModelConfig.from_size(args.size)
    tokens = batch * args.seq_len / target_chips
    model_flops = model.train_flops_per_token(args.seq_len, max_predictions) * tokens
    record: dict[str, Any] = {
        **common, "batch_size": batch, "per_chip_batch": args.per_chip_batch, "num_layers": depth,
        "device_kind": shallow[0]["device_kind"], "hbm_bytes": shallow[0]["hbm_bytes"],
        "depths_compiled": args.depths, "shallow": shallow, "extrapolated": full,
        "flops_per_token": full["flops"] / tokens, "bytes_per_token": full["bytes_accessed"] / tokens,
        "model_flops_per_token": model_flops / tokens, "peak_bytes": full["peak_bytes"],
        "roofline_bound": roofline(max(full["flops"], model_flops), full["bytes_accessed"], model_flops, peak_flops,
                                   bandwidth),
        "attention": shallow[0].get("attention"), "transformers_version": shallow[0].get("transformers_version"),
    }
    if args.fit:
        doubled = [run_worker_process({**common, "batch_size": 2 * batch, "num_layers": d}, args.peer_path,
                                      args.timeout) for d in args.depths]
        peak_2 = extrapolate(doubled, depth)["peak_bytes"]
        per_row = (peak_2 - full["peak_bytes"]) / batch  # bytes per global row
        fixed = full["peak_bytes"] - per_row * batch
        rows = (shallow[0]["hbm_bytes"] - fixed) / per_row if per_row > 0 else float("inf")
        record.update(fit_per_chip_batch=int(rows // target_chips), fit_doubled=doubled,
                      fit_fixed_bytes=fixed, fit_bytes_per_row=per_row)
    if framework == "ours" and (args.check_full or args.compile_times):
        cache_dir = tempfile.mkdtemp(prefix="tpu_aot_cache_")
        request = {**common, "batch_size": batch, "scan_layers": True, "cache_dir": cache_dir}
        cold = run_worker_process(request, None, args.timeout)
        record.update(full_scan_peak_bytes=cold["peak_bytes"], compile_cold_s=cold["lower_s"] + cold["compile_s"])
        if args.compile_times:
            warm = run_worker_process(request, None, args.timeout)
            record["compile_warm_s"] = warm["lower_s"] + warm["compile_s"]
    if framework == "ours" and args.bisect:
        record["bisect_per_chip_batch"] = bisect(args, common, target_chips, record.get("fit_per_chip_batch"))
    return record


def bisect(args, common, chips: int, guess: int | None) -> int:
    """Largest per-chip batch whose full-depth ``scan_layers`` step fits the chip (compile-only memory)."""
    def fits(per_chip: int) -> bool:
        result = run_worker_process({**common, "batch_size": per_chip * chips, "scan_layers": True}, None, args.timeout)
        return result["peak_bytes"] <= result["hbm_bytes"]

    low, high = 0, None
    probe = max(1, guess or args.per_chip_batch)
    while high is None:
        if fits(probe):
            low, probe = probe, probe * 2
        else:
            high = probe
    while high - low > max(1, low // 16):  # within ~6%
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def _chips(target: str) -> int:
    from bert_jax import aot

    return aot.parse_target(target).num_devices


def _print(record: dict[str, Any]) -> None:
    fit = record.get("fit_per_chip_batch")
    print(f"  => {record['framework']}: {record['bytes_per_token'] / 1e6:.2f} MB/token, "
          f"{record['flops_per_token'] / 1e9:.3f} GFLOP/token (model {record['model_flops_per_token'] / 1e9:.3f}), "
          f"peak {record['peak_bytes'] / 2**30:.2f} GiB/device, roofline bound {record['roofline_bound']:.1%}"
          + (f", largest batch/chip ~{fit}" if fit is not None else "")
          + (f", full scan peak {record['full_scan_peak_bytes'] / 2**30:.2f} GiB" if "full_scan_peak_bytes" in record else "")
          + (f", compile cold {record['compile_cold_s']:.1f} s" if "compile_cold_s" in record else "")
          + (f" warm {record['compile_warm_s']:.1f} s" if "compile_warm_s" in record else "")
          + (f", bisected batch/chip {record['bisect_per_chip_batch']}" if "bisect_per_chip_batch" in record else ""),
          flush=True)


def main(argv=None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--target", default="v5e-8")
    parser.add_argument("--size", default="base")
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--per_chip_batch", type=int, default=32)
    parser.add_argument("--frameworks", default="ours,peer")
    parser.add_argument("--depths", default="1,2", help="the two unrolled depths extrapolated from")
    parser.add_argument("--attention_dropout", type=float, default=None, help="ours only (default: the recipe's 0.1)")
    parser.add_argument("--attention_impl", default=None, help="ours only: model.attention_impl")
    parser.add_argument("--peer_path", default=os.environ.get("PEER_PATH"), help="transformers 4.57 --target dir")
    parser.add_argument("--fit", action="store_true", help="largest batch per chip from two batch sizes")
    parser.add_argument("--bisect", action="store_true", help="ours: bisect the largest batch on full-depth compiles")
    parser.add_argument("--check_full", action="store_true", help="ours: compile full depth with scan_layers too")
    parser.add_argument("--compile_times", action="store_true", help="ours: cold and warm full-depth compile")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--out", default=None, help="append JSON lines here")
    args = parser.parse_args(argv)
    if args.worker:
        from bench.tpu_aot_steps import run_worker

        print("RESULT " + json.dumps(run_worker(json.loads(args.worker))), flush=True)
        return []
    args.depths = [int(d) for d in args.depths.split(",")]
    print(f"{args.target} {args.size} S={args.seq_len} batch {args.per_chip_batch}/chip; load {os.getloadavg()}",
          flush=True)
    records = []
    for framework in [f.strip() for f in args.frameworks.split(",") if f.strip()]:
        record = measure(args, framework)
        record["command"] = " ".join([sys.executable, "-m", "bench.bench_tpu_aot", *(sys.argv[1:] if argv is None else argv)])
        _print(record)
        records.append(record)
        if args.out:
            with open(args.out, "a", encoding="utf-8") as out:
                out.write(json.dumps(record) + "\n")
    by_name = {r["framework"]: r for r in records}
    if {"ours", "peer"} <= set(by_name):
        ours, peer = by_name["ours"], by_name["peer"]
        print(f"  ours/peer bytes per token {ours['bytes_per_token'] / peer['bytes_per_token']:.2f}x, "
              f"roofline {ours['roofline_bound']:.1%} vs {peer['roofline_bound']:.1%}"
              + (f", largest batch {ours['fit_per_chip_batch'] / max(peer['fit_per_chip_batch'], 1):.2f}x"
                 if "fit_per_chip_batch" in ours and "fit_per_chip_batch" in peer else ""))
    return records


if __name__ == "__main__":
    main()
