"""Ahead-of-time checks: compile a run's train step for a target topology without its hardware.

``check(config, target)`` builds the run's task, optimizer, mesh and ABSTRACT train state (shapes and
shardings from ``jax.eval_shape``: nothing is allocated) with ``bert_jax.step_builder``, the builder the
trainer uses, lowers and compiles that same jitted train step for the target's devices, and reports
per-device memory (``compiled.memory_analysis()``) against the chip's HBM. It catches, before a pod is
booked: a mesh that does not fit the device count, shapes a mesh axis does not divide (e.g. 12 heads
over ``tensor=8``, a 30,522-row vocabulary over ``tensor=4``), batch sizes the batch axes do not divide,
SPMD partitioning failures, and a step that needs more memory per device than the chip has.

Targets:

* ``cpu:N``: N simulated CPU devices (set before JAX starts, see ``ensure_cpu_devices``). Catches
  every sharding error; memory figures are the CPU compiler's (same arguments/outputs, different
  temporaries from TPU/GPU fusion and layout choices).
* ``v4-32``, ``v5e-16``, ``v5p-64``, ``v6e-16`` (Cloud TPU accelerator types) or ``tpu:v4:2x2x4``:
  compile-only TPU devices from ``jax.experimental.topologies``; needs ``libtpu`` installed
  (``pip install libtpu==0.0.42``, the version ``jax[tpu]==0.10.2`` pins), no TPU. Memory figures
  are the TPU compiler's own.

GPU topologies cannot be compiled without a GPU in JAX 0.10.2 (no deviceless CUDA topology), so for
GPUs use ``cpu:N`` for the sharding checks and the memory formula in ``docs/scaling.md``, or run the
check on one GPU machine for the per-device memory of the same per-device shapes.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import time
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections

from bert_jax import run_config, sharding, step_builder

GIB = 1024**3
# Cloud TPU generation -> (libtpu topology prefix, HBM per chip in GiB, TensorCores per chip as counted
# in the accelerator type's suffix (v4-32 and v5p-32 are 16 chips; v5e-16 and v6e-16 are 16), libtpu
# chip config: "megacore" makes the 2 TensorCores of a v4/v5p chip one JAX device).
TPU_GENERATIONS: dict[str, tuple[str, float, int, str]] = {
    "v4": ("v4", 32.0, 2, "megacore"),
    "v5e": ("v5e", 16.0, 1, "default"),
    "v5litepod": ("v5e", 16.0, 1, "default"),
    "v5p": ("v5p", 95.0, 2, "megacore"),
    "v6e": ("v6e", 32.0, 1, "default"),
}
# Chips -> physical topology: 3-D tori (v4, v5p) and 2-D (v5e, v6e) slice shapes Cloud TPU offers.
_TORUS_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8", 256: "4x8x8",
             512: "8x8x8", 1024: "8x8x16", 2048: "8x16x16", 4096: "16x16x16"}
_GRID_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}


class AotError(ValueError):
    """The train step cannot be compiled for the target (the message says why and what to change)."""


@dataclasses.dataclass(frozen=True)
class Target:
    """A compilation target.

    Attributes:
      name: as given (``cpu:8``, ``v4-32``, ``tpu:v5e:4x4``).
      platform: ``cpu`` or ``tpu``.
      num_devices: devices (TPU chips; CPU devices).
      topology: libtpu topology string (``v4:2x2x4``) for TPU targets, else None.
      hbm_bytes: memory per device to check against, or None when unknown (CPU without ``hbm_gib``).
      chip_config: libtpu's chip configuration (``megacore`` or ``default``) for TPU targets.
    """

    name: str
    platform: str
    num_devices: int
    topology: str | None = None
    hbm_bytes: int | None = None
    chip_config: str | None = None


def parse_target(name: str, hbm_gib: float | None = None) -> Target:
    """Parses ``cpu:N``, a Cloud TPU accelerator type (``v4-32``, ``v5e-16``, ...) or ``tpu:<topology>``.

    Args:
      name: the target.
      hbm_gib: memory per device in GiB to check against (default: the TPU generation's HBM).

    Raises:
      AotError: an unknown or malformed target, or a slice size Cloud TPU does not offer.
    """
    explicit = None if hbm_gib is None else int(hbm_gib * GIB)
    cpu = re.fullmatch(r"cpu:(\d+)", name)
    if cpu:
        return Target(name, "cpu", int(cpu.group(1)), None, explicit)
    raw = re.fullmatch(r"tpu:([a-z0-9]+):(\d+(?:x\d+)+)", name)
    accelerator = re.fullmatch(r"(v4|v5e|v5litepod|v5p|v6e)-(\d+)", name)
    if raw:
        generation, shape = raw.group(1), raw.group(2)
        if generation not in TPU_GENERATIONS:
            raise AotError(f"target {name!r}: unknown TPU generation {generation!r}; expected {sorted(TPU_GENERATIONS)}")
        chips = math.prod(int(n) for n in shape.split("x"))
    elif accelerator:
        generation, cores = accelerator.group(1), int(accelerator.group(2))
        prefix, _, cores_per_chip, _ = TPU_GENERATIONS[generation]
        chips = cores // cores_per_chip
        shapes = _TORUS_3D if prefix in ("v4", "v5p") else _GRID_2D
        if chips not in shapes or cores % cores_per_chip:
            raise AotError(f"target {name!r}: {chips} chips is not a {generation} slice size; "
                           f"known: {[f'{generation}-{c * cores_per_chip}' for c in shapes]}")
        shape = shapes[chips]
    else:
        raise AotError(f"target {name!r}: expected cpu:N, a TPU accelerator type such as v4-32 / v5e-16 / "
                       "v5p-64 / v6e-16, or tpu:<generation>:<AxBxC>")
    prefix, hbm, _, chip_config = TPU_GENERATIONS[generation]
    return Target(name, "tpu", chips, f"{prefix}:{shape}", explicit or int(hbm * GIB), chip_config)


def ensure_cpu_devices(count: int) -> None:
    """Asks for ``count`` simulated CPU devices; must run before JAX's backend starts.

    Raises:
      AotError: the backend already started with fewer CPU devices.
    """
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top

    if not xla_bridge.backends_are_initialized():
        jax.config.update("jax_num_cpu_devices", max(count, jax.config.jax_num_cpu_devices))
        return
    available = len(jax.devices("cpu"))
    if available < count:
        raise AotError(f"{count} CPU devices are needed but JAX started with {available}; run in a fresh process "
                       f"or set XLA_FLAGS=--xla_force_host_platform_device_count={count}")


def target_devices(target: Target) -> list[Any]:
    """The devices to compile for: the first N CPU devices, or compile-only TPU devices.

    Raises:
      AotError: too few CPU devices, or ``libtpu`` missing for a TPU target.
    """
    if target.platform == "cpu":
        ensure_cpu_devices(target.num_devices)
        return jax.devices("cpu")[: target.num_devices]
    from jax.experimental import topologies  # pylint: disable=g-import-not-at-top

    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")  # compile-only: never ask a metadata server,
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # nor lock TPU chips other processes may use
    try:
        return list(topologies.get_topology_desc(target.topology, "tpu", chip_config_name=target.chip_config).devices)
    except RuntimeError as error:
        raise AotError(f"target {target.name}: cannot build TPU topology {target.topology} ({error}); install "
                       "libtpu (pip install libtpu==0.0.42, the version jax[tpu]==0.10.2 pins)") from error


@dataclasses.dataclass(frozen=True)
class MemoryReport:
    """Per-device bytes of the compiled step (``compiled.memory_analysis()``).

    Attributes:
      arguments: inputs (train state + this device's batch shard).
      outputs: results (new train state + metrics).
      aliased: outputs written in place of donated inputs (the donated train state).
      temporaries: activations, gradients and other scratch buffers.
      generated_code: the executable itself.
      state: the train state's shard on this device, computed from the shardings (independent of the
        compiler: params + optimizer moments + step + rng).
    """

    arguments: int
    outputs: int
    aliased: int
    temporaries: int
    generated_code: int
    state: int

    @property
    def peak(self) -> int:
        """Live bytes at the step's peak: arguments + new outputs not aliased to them + temporaries."""
        return self.arguments + self.outputs - self.aliased + self.temporaries + self.generated_code


@dataclasses.dataclass(frozen=True)
class AotReport:
    """What ``check`` found.

    Attributes:
      target: the target compiled for.
      mesh: ``{'data': ..., 'fsdp': ..., 'tensor': ...}`` sizes.
      device_kind: e.g. ``'TPU v4'`` or ``'cpu'``.
      batch_size, seq_len: global rows per step and tokens per row.
      memory: per-device bytes.
      flops_per_device: the compiler's FLOP estimate of one step on one device (None if not given);
        it counts a loop body once, so with ``scan_layers`` it covers one layer of the stack.
      model_flops_per_device: ``ModelConfig.train_flops_per_token`` x the step's tokens / devices
        (docs/benchmarks.md, "FLOPs and MFU": matmul FLOPs, forward + backward).
      compile_seconds: lowering + compilation wall time.
    """

    target: Target
    mesh: dict[str, int]
    device_kind: str
    batch_size: int
    seq_len: int
    memory: MemoryReport
    flops_per_device: float | None
    model_flops_per_device: float
    compile_seconds: float

    @property
    def fits(self) -> bool | None:
        """Whether the peak fits the device's memory; None when the memory is not known."""
        return None if self.target.hbm_bytes is None else self.memory.peak <= self.target.hbm_bytes


def bytes_per_device(abstract_tree: Any) -> int:
    """Bytes of one device's shard of every leaf (``jax.ShapeDtypeStruct`` with a sharding)."""
    total = 0
    for leaf in jax.tree.leaves(abstract_tree):
        shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
        total += math.prod(shape) * leaf.dtype.itemsize
    return total


def lower_train_step(config: ml_collections.ConfigDict,
                     devices: Sequence[Any] | None = None) -> tuple[step_builder.StepBuilder, jax.stages.Lowered]:
    """Lowers the run's train step (``step_builder.from_config``, the step ``Trainer`` trains with) for
    ``devices`` on an abstract state and batch: nothing is allocated.

    Returns:
      ``(builder, lowered)``: the builder (mesh, abstract state) and ``builder.train_step.lower(...)``.
    """
    builder = step_builder.from_config(config, devices=devices)
    return builder, builder.train_step.lower(builder.abstract_state, builder.abstract_batch(config.train.batch_size))


def check(config: ml_collections.ConfigDict, target: Target | str, *, hbm_gib: float | None = None) -> AotReport:
    """Compiles ``config``'s train step for ``target`` from abstract shapes and reports its memory.

    Args:
      config: a run config (``configs/pretrain.py``); its ``sharding.mesh`` must fit the target.
      target: a ``Target`` or its name (``parse_target``).
      hbm_gib: memory per device to check against (default: the TPU generation's HBM).

    Returns:
      The report; ``report.fits`` says whether the peak memory fits.

    Raises:
      AotError: an invalid config for the target's device count, or a lowering/compilation failure
        (a shape the mesh does not divide, a partitioning error), with the compiler's message.
    """
    target = parse_target(target, hbm_gib) if isinstance(target, str) else target
    devices = target_devices(target)
    try:
        run_config.validate(config, num_devices=len(devices),
                            process_count=len({device.process_index for device in devices}))
    except run_config.ConfigError as error:
        raise AotError(f"target {target.name} ({len(devices)} devices): {error}") from error
    model_config = run_config.model_config_from(config)
    seq_len, batch_size = config.data.max_seq_length, config.train.batch_size
    start = time.perf_counter()
    try:
        builder, lowered = lower_train_step(config, devices)
        compiled = lowered.compile()
    except Exception as error:  # pylint: disable=broad-except  (jax raises many kinds; all mean "does not compile")
        mesh_sizes = dict(zip(sharding.MESH_AXES, sharding.mesh_shape(config.sharding.mesh, len(devices))))
        raise AotError(f"target {target.name}, mesh {mesh_sizes}: the train step does not compile: "
                       f"{type(error).__name__}: {error}") from error
    mesh, abstract_state = builder.mesh, builder.abstract_state
    seconds = time.perf_counter() - start
    stats = compiled.memory_analysis()
    memory = MemoryReport(
        arguments=int(stats.argument_size_in_bytes), outputs=int(stats.output_size_in_bytes),
        aliased=int(stats.alias_size_in_bytes), temporaries=int(stats.temp_size_in_bytes),
        generated_code=int(stats.generated_code_size_in_bytes), state=bytes_per_device(abstract_state))
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
    flops = float(cost["flops"]) if cost and "flops" in cost else None
    model_flops = model_config.train_flops_per_token(seq_len, config.data.max_predictions_per_seq) * (
        batch_size * seq_len / len(devices))
    return AotReport(target=target, mesh=dict(mesh.shape), device_kind=devices[0].device_kind,
                     batch_size=batch_size, seq_len=seq_len, memory=memory, flops_per_device=flops,
                     model_flops_per_device=model_flops, compile_seconds=seconds)


def _gib(num_bytes: int | None) -> str:
    return "n/a" if num_bytes is None else f"{num_bytes / GIB:.3f} GiB"


def format_report(report: AotReport) -> str:
    """A human-readable summary: target, mesh, per-device memory and the verdict."""
    memory = report.memory
    verdict = {None: "no HBM size given (pass --hbm_gib)", True: "FITS", False: "DOES NOT FIT"}[report.fits]
    lines = [
        f"target {report.target.name}: {report.target.num_devices} x {report.device_kind}"
        + (f" (topology {report.target.topology})" if report.target.topology else ""),
        f"mesh {report.mesh}, global batch {report.batch_size} x {report.seq_len} tokens, "
        f"compiled in {report.compile_seconds:.1f} s",
        "per device:",
        f"  train state shard      {_gib(memory.state)}",
        f"  arguments              {_gib(memory.arguments)}",
        f"  outputs (aliased)      {_gib(memory.outputs)} ({_gib(memory.aliased)})",
        f"  temporaries            {_gib(memory.temporaries)}",
        f"  generated code         {_gib(memory.generated_code)}",
        f"  peak                   {_gib(memory.peak)} of {_gib(report.target.hbm_bytes)}: {verdict}",
    ]
    lines.append(f"  model FLOPs / step    {report.model_flops_per_device / 1e12:.3f} TFLOP "
                 "(docs/benchmarks.md formula)")
    if report.flops_per_device:
        lines.append(f"  compiler FLOPs / step {report.flops_per_device / 1e12:.3f} TFLOP (loop bodies counted once)")
    return "\n".join(lines)


def check_layouts(config: ml_collections.ConfigDict, target: Target | str, meshes: Sequence[dict[str, int]],
                  *, hbm_gib: float | None = None) -> list[AotReport | AotError]:
    """``check`` for each mesh in ``meshes`` (the rest of ``config`` unchanged); errors are returned."""
    results: list[AotReport | AotError] = []
    for mesh in meshes:
        variant = copy.deepcopy(config)
        variant.sharding.mesh = ml_collections.ConfigDict({axis: mesh.get(axis, 1) for axis in sharding.MESH_AXES})
        try:
            results.append(check(variant, target, hbm_gib=hbm_gib))
        except AotError as error:
            results.append(error)
    return results
