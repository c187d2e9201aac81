"""One large matmul in XLA (JAX) and PyTorch: the GEMM rate a BERT step is built on, per dtype.

The train step of a BERT is mostly GEMMs; this measures the rate each framework's kernels reach on
one ``[M, K] x [K, N]`` product (jitted in JAX, a plain ``@`` in PyTorch), after warm-up, as the median
of ``--repeats`` timed calls. Run it with different ``XLA_FLAGS`` to compare XLA:CPU's kernel paths.

Usage::

    python -m bench.bench_matmul                                   # 4096 x 512 x 2048, fp32 and bf16
    XLA_FLAGS=--xla_cpu_use_xnnpack=true python -m bench.bench_matmul --frameworks=jax
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence

DTYPES = ("float32", "bfloat16")


def median_seconds(call: Callable[[], None], repeats: int, warmup: int = 2) -> float:
    """Median wall seconds of ``call()`` (which must wait for its result) over ``repeats`` calls."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def jax_matmul(m: int, k: int, n: int, dtype: str) -> Callable[[], None]:
    """A jitted ``a @ b`` on random ``dtype`` inputs; the call waits for the result."""
    import jax
    import jax.numpy as jnp

    keys = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(keys[0], (m, k), dtype)
    b = jax.random.normal(keys[1], (k, n), dtype)
    product = jax.jit(lambda x, y: x @ y)
    return lambda: product(a, b).block_until_ready()


def torch_matmul(m: int, k: int, n: int, dtype: str) -> Callable[[], None]:
    """``a @ b`` in PyTorch on random ``dtype`` CPU tensors, with all available CPUs as threads."""
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=generator).to(getattr(torch, dtype))
    b = torch.randn(k, n, generator=generator).to(getattr(torch, dtype))
    return lambda: a @ b


MAKERS = {"jax": jax_matmul, "torch": torch_matmul}


def main(argv: Sequence[str] | None = None) -> dict[tuple[str, str], float]:
    """Prints and returns ``(framework, dtype) -> GFLOP/s``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--m", type=int, default=4096, help="rows of the left operand (tokens)")
    parser.add_argument("--k", type=int, default=512, help="contraction size (hidden)")
    parser.add_argument("--n", type=int, default=2048, help="columns of the right operand (FFN width)")
    parser.add_argument("--dtypes", default=",".join(DTYPES))
    parser.add_argument("--frameworks", default="jax,torch")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    dtypes = [d for d in args.dtypes.split(",") if d]
    frameworks = [f for f in args.frameworks.split(",") if f]
    for name, values, known in (("--dtypes", dtypes, DTYPES), ("--frameworks", frameworks, tuple(MAKERS))):
        if not values or set(values) - set(known):
            parser.error(f"{name}={','.join(values)!r}: expected a comma-separated subset of {known}")
    flops = 2 * args.m * args.k * args.n
    rates = {}
    print(f"[{args.m}, {args.k}] x [{args.k}, {args.n}]  XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    for framework in frameworks:
        for dtype in dtypes:
            seconds = median_seconds(MAKERS[framework](args.m, args.k, args.n, dtype), args.repeats)
            rates[(framework, dtype)] = flops / seconds / 1e9
            print(f"  {framework:5s} {dtype:8s} {rates[(framework, dtype)]:7.1f} GFLOP/s  ({seconds * 1e3:.1f} ms)")
    return rates


if __name__ == "__main__":
    main()
