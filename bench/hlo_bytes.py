"""Where the HBM bytes of a compiled step go: per-instruction bytes of a compiled (optimized) HLO module.

``top_level_bytes(hlo_text)`` reads ``compiled.as_text()`` and, for every instruction of the entry
computation (and of the bodies of its while loops, scaled by nothing: a scanned layer counts once, as
in XLA's own cost analysis), adds the bytes of its operands and of its result: the traffic of a fusion
that reads its inputs from HBM and writes its output back, which is how XLA's cost analysis counts a
fusion's "bytes accessed" too (it counts the fused computation's parameters and root). Instructions are
grouped by a category read from their ``op_name`` metadata (the JAX/Flax scope that produced them) and
their kind (``fusion``, ``convolution``, ``custom-call``, collectives, ...).

Usage::

    python -m bench.hlo_bytes step.hlo [--top=30]

The sums are an approximation (a fusion that reads a slice of a big operand is charged the whole
operand; bitcasts and tuples are free), good to rank where the bytes go, not to the byte.
"""

from __future__ import annotations

import argparse
import collections
import re
from collections.abc import Iterable

_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "f32": 4,
                "s64": 8, "u64": 8, "f64": 8, "s4": 0.5, "u4": 0.5, "f8e4m3fn": 1, "f8e5m2": 1}
_ARRAY = re.compile(r"\b(pred|[suf]\d+|bf16|f8e4m3fn|f8e5m2)\[([\d,]*)\](\{[^}]*\})?")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (.*?) (\w[\w\-]*)\((.*?)\)(?:, |$)(.*)$")
_FREE = {"bitcast", "tuple", "get-tuple-element", "parameter", "constant", "after-all", "partition-id",
         "replica-id", "iota", "opt-barrier"}


def shape_bytes(shape: str, hbm_only: bool = True) -> float:
    """Bytes of an HLO shape string (an array or a tuple of arrays); with ``hbm_only``, arrays whose layout
    places them in another memory space (``S(n)``, e.g. TPU VMEM) count 0."""
    total = 0.0
    for dtype, dims, layout in _ARRAY.findall(shape):
        if hbm_only and re.search(r"S\(\d+\)", layout or ""):
            continue
        count = 1
        for dim in filter(None, dims.split(",")):
            count *= int(dim)
        total += count * _DTYPE_BYTES.get(dtype, 4)
    return total


def _last_element(shape: str) -> str:
    """The last array of a tuple shape (the destination buffer of an async start), or the shape."""
    arrays = [m.group(0) for m in _ARRAY.finditer(shape)]
    return arrays[-1] if arrays else shape


def _computations(text: str) -> dict[str, list[str]]:
    """Computation name -> its instruction lines (the entry one under ``"ENTRY"`` too)."""
    computations: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        header = re.match(r"^(ENTRY )?%([\w.\-]+) .*\{\s*$", line)
        if header:
            current = header.group(2)
            computations[current] = []
            if header.group(1):
                computations["ENTRY"] = computations[current]
        elif line.startswith("}"):
            current = None
        elif current is not None:
            computations[current].append(line)
    return computations


def category(op_name: str, kind: str) -> str:
    """A coarse label from an instruction's JAX scope and kind."""
    name = op_name.lower()
    if kind in ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute",
                "all-reduce-start", "all-gather-start", "collective-permute-start"):
        return f"collective:{kind}"
    rules = [("optimizer", ("adam", "optax", "scale_by", "clip", "global_norm", "apply_if_finite", "add_decayed")),
             ("dropout", ("dropout", "bernoulli", "threefry", "random_bits", "_uniform")),
             ("attention softmax/mask", ("softmax", "attention/", "dot_product_attention", "splash")),
             ("layer norm", ("layer_norm", "layernorm")),
             ("mlm head / loss", ("mlm", "log_softmax", "cross_entropy", "logsumexp")),
             ("embeddings", ("embeddings",)),
             ("ffn", ("intermediate", "output", "gelu"))]
    for label, needles in rules:
        if any(needle in name for needle in needles):
            backward = "transpose(" in name or "/transpose" in name
            return f"{label}{' (bwd)' if backward else ''}"
    return f"other:{kind}"


def top_level_bytes(text: str, hbm_only: bool = True) -> list[dict]:
    """One record per costed instruction of the entry computation and its while bodies.

    Returns:
      Dicts with ``name, kind, bytes, out_shape, op_name, category`` (largest first).
    """
    computations = _computations(text)
    bodies = set()
    for line in computations.get("ENTRY", []):
        bodies.update(re.findall(r"body=%([\w.\-]+)", line))
    lines: Iterable[str] = [*computations.get("ENTRY", []), *(l for b in bodies for l in computations.get(b, []))]
    shapes: dict[str, str] = {}
    parsed = []
    for line in lines:
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        name, shape, kind, operands, rest = match.groups()
        shapes[name] = shape
        parsed.append((name, shape, kind, operands, rest))
    records = []
    for name, shape, kind, operands, rest in parsed:
        if kind in _FREE or kind == "while" or kind.endswith("-done"):
            continue
        read = sum(shape_bytes(shapes.get(op, ""), hbm_only) for op in re.findall(r"%([\w.\-]+)", operands))
        # An async start's result tuple repeats its operands; what it writes is its last element.
        written = shape_bytes(_last_element(shape) if kind.endswith("-start") else shape, hbm_only)
        op_name = (re.search(r'op_name="([^"]*)"', rest) or [None, ""])[1]
        records.append({"name": name, "kind": kind, "bytes": read + written, "out_shape": shape,
                        "op_name": op_name, "category": category(op_name, kind)})
    return sorted(records, key=lambda r: -r["bytes"])


def summarize(records: list[dict]) -> list[tuple[str, float, int]]:
    """``(category, bytes, instructions)`` per category, largest first."""
    sums: dict[str, list] = collections.defaultdict(lambda: [0.0, 0])
    for record in records:
        sums[record["category"]][0] += record["bytes"]
        sums[record["category"]][1] += 1
    return sorted(((k, v[0], v[1]) for k, v in sums.items()), key=lambda t: -t[1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("hlo", help="compiled.as_text() of a step")
    parser.add_argument("--top", type=int, default=25, help="largest instructions to list")
    parser.add_argument("--all_memory_spaces", action="store_true", help="count VMEM (S(n)) operands too")
    parser.add_argument("--grep", default=None, help="only instructions whose op_name contains this")
    args = parser.parse_args(argv)
    with open(args.hlo, encoding="utf-8") as f:
        records = top_level_bytes(f.read(), hbm_only=not args.all_memory_spaces)
    if args.grep:
        records = [r for r in records if args.grep in r["op_name"]]
    total = sum(r["bytes"] for r in records)
    print(f"total {total / 1e9:.2f} GB over {len(records)} instructions")
    for label, num_bytes, count in summarize(records):
        print(f"  {label:34s} {num_bytes / 1e9:8.3f} GB {num_bytes / total:6.1%}  ({count} instructions)")
    for record in records[: args.top]:
        print(f"  {record['bytes'] / 1e6:9.1f} MB {record['kind']:12s} {record['out_shape'][:60]:60s} "
              f"{record['op_name'][-110:]}")


if __name__ == "__main__":
    main()
