"""Pretraining-step throughput: the jitted JAX train step against transformers' PyTorch class of the same architecture.

Both frameworks train the same ``ModelConfig`` (``step_runners.bench_model_config``: the named ``--size`` of
``--arch`` with the fields its recipe in ``configs/pretrain.py`` sets) on the same random contract batch
(``data_pipelines.batch``), dropout as configured, and the AdamW of ``bert_jax.optim.default_optimizer_config``
(lr schedule, b1/b2/eps, weight decay off LayerNorm and biases, clipping at global norm 1.0). The objective
is BERT's MLM + NSP for ``--arch=bert``, MLM only for the others (no NSP head).

* JAX: the train step of ``bert_jax.step_builder.build`` (the one the trainer and the AOT check use) on a mesh.
* PyTorch: eager ``transformers`` class of the architecture (``step_runners.TORCH_ARCHS``: ``BertForPreTraining``,
  ``RobertaForMaskedLM``, ``DebertaV2ForMaskedLM``, ``LongformerForMaskedLM``, ``ModernBertForMaskedLM``) built
  from our exporter's ``config.json`` mapping (the architecture's ``Conversion.config_to_hf``), SDPA where
  the class supports it, ``torch.optim.AdamW`` + ``clip_grad_norm_`` + our schedule. Its MLM loss gathers
  the masked positions before the head, like ours (``--torch_mlm=gather``, every class), or runs Hugging
  Face's full-sequence ``labels`` path (``--torch_mlm=full``: every position is projected onto the
  vocabulary). ``--dtype=bfloat16`` runs it under ``torch.autocast`` (fp32 master weights, as ours).
* ``--packed``: rows of 1-4 whole sequences (segment ids ``sequence_ids`` 1, 2, ..., positions restarting);
  JAX keeps them apart by ``sequence_ids``, PyTorch by a block-diagonal 4D mask (ModernBERT: one per layer
  type, the sliding one windowed), i.e. the padded computation; Hugging Face's unpadded ModernBERT path
  needs ``flash_attention_2``. Longformer's class takes a 2D padding mask only: no ``--packed``.
* ``--attention_window=W``: Longformer's ``attention_window`` / ModernBERT's ``local_attention`` (both sides).

The runners and their inputs are in ``bench/step_runners.py`` (the PyTorch step: ``bench/torch_runner.py``); this module runs them. Each framework
runs in a spawned worker process of its own (own runtime, own peak memory). With
``--mode=alternating`` (default) the workers live together and their timed steps alternate, so that on a
shared machine both see the same load; ``--mode=isolated`` measures one framework at a time. After
compilation (JAX: lower + compile; PyTorch: the first eager step) and ``--warmup`` steps, ``--steps``
steps are timed one by one (each waited for); the median gives tokens/s (all ``B x S`` positions). CPU
and system seconds, page faults per step and the load average are reported too.

Usage::

    python -m bench.bench_step --size=mini --batch_size=32 --seq_len=128 --max_predictions=20 --steps=20
    python -m bench.bench_step --size=base --batch_size=8 --steps=5 --out=results.jsonl
    python -m bench.bench_step --size=large --batch_size=64 --dtype=bfloat16 --torch_device=cuda  # on a GPU
    python -m bench.bench_step --arch=modernbert --size=mini --seq_len=512 --max_predictions=77 --packed
    python -m bench.bench_step --arch=longformer --seq_len=2048 --attention_window=256 --batch_size=1
    python -m bench.bench_step --table=results.jsonl --peak_tflops=989  # the records of a file as a table
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import multiprocessing
import os
import platform
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bert_jax.config import ModelConfig  # noqa: E402

from bench.step_runners import (  # noqa: E402
    FRAMEWORKS,
    TORCH_ARCHS,
    TORCH_MLM_MODES,
    StepRunner,
    available_cpus,
    bench_model_config,
    make_jax_runner,
    time_runners,
)
from bench.torch_runner import make_torch_runner  # noqa: E402

# Framework -> the function building its StepRunner (each runs in a worker process of its own).
MAKERS = {"jax": make_jax_runner, "torch": make_torch_runner}

MODES = ("alternating", "isolated")
# glibc malloc settings that stop XLA's per-step buffers (e.g. the [B*P, V] MLM logits) from being
# mmap'd, page-faulted in and unmapped again every step: one arena, big blocks from the heap, the heap
# never trimmed. On 2 Zen 4 cores this removed ~250k page faults and ~0.5 CPU-s per BERT-mini step.
RESIDENT_HEAP_TUNABLES = ("glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=100000000000:"
                          "glibc.malloc.arena_max=1")


def parse_mesh(spec: str) -> dict[str, int]:
    """``"data=-1,fsdp=2"`` -> ``{"data": -1, "fsdp": 2}`` (axes checked by ``sharding.make_mesh``)."""
    try:
        mesh = {name.strip(): int(size) for name, size in (p.split("=") for p in spec.split(",") if p.strip())}
    except ValueError:
        raise ValueError(f"--mesh={spec!r}: expected comma-separated axis=size pairs, e.g. data=-1,tensor=2") from None
    if not mesh:
        raise ValueError(f"--mesh={spec!r} names no axis")
    return mesh


# ---------------------------------------------------------------------------------------------
# Command line: one worker process per framework


def _serve_runner(connection, framework: str, kwargs: dict[str, Any]) -> None:
    """Worker process: builds the framework's runner, then answers requests until ``"close"``.

    An exception is sent back instead of an answer (the parent raises it) and ends the worker.
    """
    try:
        runner = MAKERS[framework](**kwargs)
        connection.send(runner.description())
        actions = {"step": runner.run_step, "timed_step": runner.timed_step, "loss": runner.last_loss,
                   "memory": runner.peak_memory}
        while (request := connection.recv()) != "close":
            connection.send(actions[request]())
    except Exception as error:  # noqa: BLE001 - handed to the parent
        connection.send(error)


@contextlib.contextmanager
def worker_runners(frameworks: Sequence[str], kwargs: Mapping[str, dict[str, Any]]) -> Iterator[list[StepRunner]]:
    """Runners living in one spawned process each (own JAX/torch runtime, own peak memory).

    Args:
      frameworks: e.g. ``["jax", "torch"]``.
      kwargs: framework -> keyword arguments of its ``MAKERS`` entry.

    Yields:
      ``StepRunner`` proxies whose calls run in the workers; the workers stop on exit.
    """
    context = multiprocessing.get_context("spawn")
    connections, processes = [], []
    try:
        runners = []
        for framework in frameworks:
            connection, child_end = context.Pipe()
            process = context.Process(target=_serve_runner, args=(child_end, framework, dict(kwargs[framework])))
            process.start()
            connections.append(connection)
            processes.append(process)

            def ask(request: str | None, connection=connection, framework=framework) -> Any:
                if request:
                    connection.send(request)
                answer = connection.recv()
                if isinstance(answer, Exception):
                    raise RuntimeError(f"the {framework} worker failed") from answer
                return answer

            description = ask(None)
            runners.append(StepRunner(
                run_step=functools.partial(ask, "step"), last_loss=functools.partial(ask, "loss"),
                peak_memory=functools.partial(ask, "memory"), timed_step=functools.partial(ask, "timed_step"),
                **description))
        yield runners
    finally:
        for connection, process in zip(connections, processes):
            if process.is_alive():
                connection.send("close")
            process.join()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="bert", choices=sorted(TORCH_ARCHS),
                        help="ModelConfig.architecture (bert_jax.models registry) and its transformers class")
    parser.add_argument("--size", default="mini", help="named model size (bert_jax.config.MODEL_SIZES)")
    parser.add_argument("--packed", action="store_true", help="rows of several whole sequences (module docstring)")
    parser.add_argument("--attention_window", type=int, default=None,
                        help="Longformer attention_window / ModernBERT local_attention (default: the recipe's)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--max_predictions", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation / the first step")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="compute dtype")
    parser.add_argument("--framework", default="jax,torch", help="comma-separated subset of jax,torch")
    parser.add_argument("--scan_layers", action="store_true", help="JAX: nn.scan over the layer stack")
    parser.add_argument("--remat", action="store_true", help="JAX: rematerialise each layer in the backward pass")
    parser.add_argument("--remat_policy", default=None,
                        help="JAX: model.remat_policy (none, full, dots_saveable, dots_with_no_batch_dims_saveable)")
    parser.add_argument("--vocab_pad_multiple", type=int, default=1,
                        help="JAX: model.vocab_pad_multiple (128 pads 30,522 to 30,592 rows; logits of padding masked)")
    parser.add_argument("--attention_impl", default=None,
                        help="JAX: model.attention_impl: None (auto), 'fused', 'xla', 'cudnn' or 'reference' "
                        "(bert_jax/attention.py; training with attention dropout runs 'reference')")
    parser.add_argument("--mesh", default="data=-1", help="JAX mesh, e.g. data=-1 or data=2,tensor=4")
    parser.add_argument("--dropout", type=float, default=None,
                        help="override hidden and attention dropout in both frameworks (default: the size's 0.1)")
    parser.add_argument("--attention_dropout", type=float, default=None,
                        help="override attention dropout only (0 lets JAX use jax.nn.dot_product_attention, "
                             "e.g. cuDNN on a GPU)")
    parser.add_argument("--glibc_tunables", default=None,
                        help=f"GLIBC_TUNABLES of the measured processes (both frameworks); 'resident_heap' "
                             f"means {RESIDENT_HEAP_TUNABLES!r} (no per-step page faults)")
    parser.add_argument("--torch_mlm", default="gather", choices=TORCH_MLM_MODES)
    parser.add_argument("--torch_threads", type=int, default=None, help="default: the CPUs available")
    parser.add_argument("--torch_device", default="auto", help="'auto' (cuda if available), 'cpu', 'cuda'")
    parser.add_argument("--mode", default="alternating", choices=MODES,
                        help="alternating: one worker process per framework, alive together, timed steps "
                             "alternating between them (both see the same load on a shared machine); isolated: "
                             "one framework at a time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="append one JSON line of results to this file")
    parser.add_argument("--table", default=None, help="print the records of this --out file as a table and exit")
    parser.add_argument("--peak_tflops", type=float, default=989.0,
                        help="--table: the peak MFU is computed against (989: H100/H200 dense bf16)")
    args = parser.parse_args(argv)
    args.frameworks = [f.strip() for f in args.framework.split(",") if f.strip()]
    unknown = sorted(set(args.frameworks) - set(FRAMEWORKS))
    if unknown or not args.frameworks:
        parser.error(f"--framework={args.framework!r}: expected a comma-separated subset of {FRAMEWORKS}")
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    return args


def _model_config(args: argparse.Namespace) -> ModelConfig:
    overrides: dict[str, Any] = dict(dtype=args.dtype, scan_layers=args.scan_layers, remat=args.remat,
                                     attention_impl=args.attention_impl, remat_policy=args.remat_policy,
                                     vocab_pad_multiple=args.vocab_pad_multiple)
    if args.dropout is not None:
        overrides.update(hidden_dropout=args.dropout, attention_dropout=args.dropout)
    if args.attention_dropout is not None:
        overrides.update(attention_dropout=args.attention_dropout)
    try:
        return bench_model_config(args.arch, args.size, seq_len=args.seq_len, attention_window=args.attention_window,
                                  **overrides)
    except ValueError as error:
        raise SystemExit(f"bench_step: {error}") from None


def _set_environment(args: argparse.Namespace) -> None:
    """Environment of the worker processes (they inherit it; glibc reads it at start).

    ``XLA_FLAGS`` and ``JAX_*`` variables (e.g. ``JAX_DEFAULT_PRNG_IMPL``) set by the caller reach the
    workers as they are and are recorded.
    """
    if args.glibc_tunables:
        named = {"resident_heap": RESIDENT_HEAP_TUNABLES}
        os.environ["GLIBC_TUNABLES"] = named.get(args.glibc_tunables, args.glibc_tunables)


def _print_result(r: Mapping[str, Any]) -> None:
    mfu = "n/a" if r["mfu"] is None else f"{r['mfu']:.1%}"
    print(f"  {r['framework']:5s} {r['tokens_per_s']:9.0f} tokens/s  step {r['step_time_median_s'] * 1e3:.1f} ms "
          f"(median; mean {r['step_time_mean_s'] * 1e3:.1f}, min {r['step_time_min_s'] * 1e3:.1f})  "
          f"compile {r['compile_s']:.1f} s  peak mem {r['peak_memory_bytes'] / 2**20:.0f} MiB "
          f"[{r['peak_memory_source']}]  {r['achieved_tflops']:.3f} TFLOP/s  MFU {mfu}  loss {r['loss']:.3f}  "
          f"CPU {r['cpu_s_per_step']:.2f} s/step (system {r['system_s_per_step']:.2f}) on "
          f"{r['cpu_cores_used']:.2f} cores  load {r['load_average_before'][0]:.1f}->{r['load_average_after'][0]:.1f}")


TABLE_COLUMNS = ("arch", "size", "S", "packed", "framework", "tokens/s", "MFU", "compile s", "peak MiB", "loss")


def summary_table(records: Sequence[Mapping[str, Any]], peak_tflops: float) -> str:
    """The records of ``--out`` files as a fixed-width table, one row per framework and record.

    MFU is ``tokens_per_s x flops_per_token`` (``ModelConfig.train_flops_per_token``) over ``peak_tflops``
    x the devices used, whatever device the record ran on (a CPU's "MFU" against a GPU peak is tiny).
    """
    rows = [TABLE_COLUMNS]
    for record in records:
        for result in record["results"].values():
            mfu = result["achieved_tflops"] / (peak_tflops * result.get("num_devices", 1))
            rows.append((record.get("arch", "bert"), record["size"], str(record["seq_len"]),
                         "yes" if record.get("packed") else "no", result["framework"],
                         f"{result['tokens_per_s']:.0f}", f"{100 * mfu:.3g}%", f"{result['compile_s']:.1f}",
                         f"{result['peak_memory_bytes'] / 2**20:.0f}", f"{result['loss']:.3f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = _parse_args(argv)
    if args.table:
        with open(args.table) as lines:
            records = [json.loads(line) for line in lines if line.strip()]
        print(summary_table(records, args.peak_tflops))
        return {"records": records}
    _set_environment(args)
    config = _model_config(args)
    shape = dict(batch_size=args.batch_size, seq_len=args.seq_len, max_predictions=args.max_predictions)
    common = dict(config=config, **shape, seed=args.seed, packed=args.packed)
    kwargs = {"jax": dict(common, mesh=parse_mesh(args.mesh)),
              "torch": dict(common, mlm=args.torch_mlm, num_threads=args.torch_threads, device=args.torch_device)}
    if args.packed and TORCH_ARCHS[args.arch].packed is None and "torch" in args.frameworks:
        raise SystemExit(f"bench_step: --packed: {TORCH_ARCHS[args.arch].hf_class} cannot keep packed sequences "
                         "apart (2D padding mask only); add --framework=jax")
    print(f"{args.arch} {args.size} B={args.batch_size} S={args.seq_len} P={args.max_predictions} packed={args.packed} "
          f"dtype={args.dtype} scan_layers={args.scan_layers} dropout={config.hidden_dropout}/{config.attention_dropout} "
          f"flops/token={config.train_flops_per_token(args.seq_len, args.max_predictions) / 1e9:.3f} G "
          f"cpus={available_cpus()} mode={args.mode}")
    record: dict[str, Any] = {
        "command": " ".join([sys.executable, "-m", "bench.bench_step", *(sys.argv[1:] if argv is None else argv)]),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "host": platform.node(),
        "cpu_count": available_cpus(),
        "arch": args.arch,
        "size": args.size,
        "packed": args.packed,
        "attention_window": args.attention_window,
        "mode": args.mode,
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "model_config": config.to_dict(),
        **shape,
        "steps": args.steps,
        "warmup": args.warmup,
        "results": {},
    }
    groups = [args.frameworks] if args.mode == "alternating" else [[name] for name in args.frameworks]
    for frameworks in groups:
        with worker_runners(frameworks, kwargs) as runners:
            results = time_runners(runners, config=config, **shape, steps=args.steps, warmup=args.warmup)
        for result in results.values():
            _print_result(result)
        record["results"].update(results)
    if {"jax", "torch"} <= set(record["results"]):
        ratio = record["results"]["jax"]["tokens_per_s"] / record["results"]["torch"]["tokens_per_s"]
        record["jax_over_torch"] = ratio
        print(f"  JAX / PyTorch throughput: {ratio:.2f}x")
    if args.out:
        with open(args.out, "a") as out:
            out.write(json.dumps(record) + "\n")
    return record


if __name__ == "__main__":
    main()
