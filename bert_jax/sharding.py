"""The device mesh and the logical-to-mesh axis rules: the one module (besides configs) naming mesh axes.

The mesh has three axes:
  * ``data``: pure data parallelism (parameters replicated);
  * ``fsdp``: data parallelism whose parameters and optimizer moments are sharded (ZeRO-3 style);
  * ``tensor``: Megatron-style tensor parallelism over heads, the MLP width and the vocabulary.

``model.py`` names parameter and activation axes logically (``embed``, ``heads``, ``act_batch``, ...);
the rules table maps each logical name to a mesh axis, a tuple of them, or ``None`` (replicated).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES: tuple[str, ...] = ("data", "fsdp", "tensor")
# The mesh axes the batch dimension is split over.
BATCH_AXES: tuple[str, ...] = ("data", "fsdp")

Rules = tuple[tuple[str, Any], ...]

# Logical axis name -> mesh axis (or axes, or None = replicated). Names from bert_jax/models/layers.py.
DEFAULT_RULES: Rules = (
    # Parameters.
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("embed_out", "tensor"),
    ("position", None),
    ("type_vocab", None),
    ("layers", None),
    ("classes", None),
    # Activations.
    ("act_batch", BATCH_AXES),
    ("act_length", None),
    ("act_embed", None),
    ("act_mlp", "tensor"),
    ("act_heads", "tensor"),
    ("act_kv", None),
    ("act_vocab", "tensor"),
)


def default_sharding_config() -> ml_collections.ConfigDict:
    """The run config's ``sharding`` section: all devices on ``data``, the default rules."""
    cfg = ml_collections.ConfigDict()
    cfg.mesh = ml_collections.ConfigDict()
    cfg.mesh.data = -1  # Data-parallel replicas; -1 = every device the other axes leave.
    cfg.mesh.fsdp = 1  # Devices each parameter/optimizer moment is sharded over (ZeRO-3 style).
    cfg.mesh.tensor = 1  # Tensor-parallel ways (heads, MLP width, vocabulary).
    cfg.rules = DEFAULT_RULES  # Logical axis name -> mesh axis / axes / None.
    return cfg


def mesh_shape(mesh_cfg: Mapping[str, int] | ml_collections.ConfigDict, num_devices: int) -> tuple[int, ...]:
    """Resolves the ``(data, fsdp, tensor)`` sizes, replacing a single ``-1`` by "the rest".

    Raises:
      ValueError: on an unknown axis, more than one ``-1``, a size < 1, or a product that does not
        equal ``num_devices``.
    """
    unknown = sorted(set(mesh_cfg.keys()) - set(MESH_AXES))
    if unknown:
        raise ValueError(f"sharding.mesh has unknown axes {unknown}; expected a subset of {MESH_AXES}")
    sizes = [int(mesh_cfg.get(axis, 1)) for axis in MESH_AXES]
    rest = [axis for axis, size in zip(MESH_AXES, sizes) if size == -1]
    if len(rest) > 1:
        raise ValueError(f"sharding.mesh: only one axis may be -1, got {rest}")
    bad = [f"{axis}={size}" for axis, size in zip(MESH_AXES, sizes) if size < 1 and size != -1]
    if bad:
        raise ValueError(f"sharding.mesh: axis sizes must be >= 1 or -1, got {', '.join(bad)}")
    known = math.prod(size for size in sizes if size != -1)
    if rest:
        if num_devices % known:
            raise ValueError(
                f"sharding.mesh {dict(zip(MESH_AXES, sizes))}: {num_devices} devices are not divisible by "
                f"the fixed axes' product {known}")
        sizes[MESH_AXES.index(rest[0])] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(
            f"sharding.mesh {dict(zip(MESH_AXES, sizes))} has {math.prod(sizes)} devices but "
            f"{num_devices} are available")
    return tuple(sizes)


def make_mesh(mesh_cfg: Mapping[str, int] | ml_collections.ConfigDict, devices: Sequence[Any] | None = None) -> Mesh:
    """Builds the ``('data', 'fsdp', 'tensor')`` mesh over ``devices`` (default: all devices).

    Args:
      mesh_cfg: axis name -> size (``sharding.mesh``); missing axes are 1, one axis may be -1.
      devices: the devices to use; every one of them must be placed.

    Returns:
      A ``Mesh`` with automatic (GSPMD) axis types, devices laid out for the platform's topology.
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(mesh_cfg, len(devices))
    device_array = mesh_utils.create_device_mesh(shape, devices)
    return Mesh(device_array, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def normalize_rules(rules: Sequence[Sequence[Any]]) -> Rules:
    """Checks a rules table (possibly lists from a config file) and returns it as tuples.

    Raises:
      ValueError: naming the rule, when it is not a ``(logical_name, mesh_axes)`` pair or names a mesh
        axis other than ``MESH_AXES``.
    """
    normalized = []
    for index, rule in enumerate(rules):
        if len(rule) != 2 or not isinstance(rule[0], str):
            raise ValueError(f"sharding.rules[{index}]={rule!r}: expected a (logical_name, mesh_axes) pair")
        name, target = rule
        if isinstance(target, (list, tuple)):
            target = tuple(target)
            axes = target
        else:
            axes = () if target is None else (target,)
        unknown = [axis for axis in axes if axis not in MESH_AXES]
        if unknown:
            raise ValueError(f"sharding.rules[{index}] ({name!r}) names unknown mesh axes {unknown}; "
                             f"expected {MESH_AXES}")
        normalized.append((name, target))
    return tuple(normalized)


@contextlib.contextmanager
def axis_rules(mesh: Mesh, rules: Sequence[Sequence[Any]]) -> Iterator[None]:
    """Context for tracing model code: logical rules + the (abstract) mesh for activation constraints.

    Usable inside ``jax.jit``-traced functions: it sets the abstract mesh, not a concrete one, so the
    model's ``nn.with_logical_constraint`` calls become sharding constraints on ``mesh``.
    """
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(normalize_rules(rules)):
        yield


def current_axis_size(logical_name: str) -> int:
    """Ways the active rules and mesh (``axis_rules``) split ``logical_name``; 1 outside that context."""
    mesh = jax.sharding.get_abstract_mesh()
    rules = nn.get_logical_axis_rules()
    if mesh.empty or not rules:
        return 1
    (axes,) = nn.logical_to_mesh_axes((logical_name,), rules)
    if axes is None:
        return 1
    return math.prod(mesh.shape[axis] for axis in ((axes,) if isinstance(axes, str) else axes))


def logical_shardings(abstract_tree: Any, mesh: Mesh, rules: Sequence[Sequence[Any]]) -> Any:
    """Maps an abstract tree with ``nn.Partitioned`` boxes to ``NamedSharding``s.

    Args:
      abstract_tree: e.g. ``jax.eval_shape(init_fn, rng)``; boxed leaves carry logical axis names,
        unboxed array leaves (step counters, rng keys) are replicated.
      mesh: the device mesh.
      rules: the logical-to-mesh rules.

    Returns:
      A tree with the structure of the UNBOXED ``abstract_tree`` whose leaves are ``NamedSharding``s.
    """
    specs = nn.get_partition_spec(abstract_tree)
    return nn.logical_to_mesh_sharding(specs, mesh, normalize_rules(rules))


def replicated(mesh: Mesh) -> NamedSharding:
    """A sharding that places a full copy on every device (scalars, metrics)."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Splits dimension 0 (the batch) over ``data`` x ``fsdp``; other dimensions are replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Turns this process's host batch into global ``jax.Array``s split over the batch axes.

    Args:
      batch: field -> NumPy array ``[B_local, ...]``; this process's rows of the global batch.
      mesh: the device mesh.

    Returns:
      field -> ``jax.Array`` ``[B_local * num_processes, ...]`` sharded with ``batch_sharding(mesh)``.

    Raises:
      ValueError: naming the field, when its batch dimension does not split over the local devices.
    """
    sharding = batch_sharding(mesh)
    local_ways = math.prod(mesh.shape[axis] for axis in BATCH_AXES) // jax.process_count()
    out = {}
    for name, array in batch.items():
        if array.ndim == 0 or array.shape[0] % max(local_ways, 1):
            raise ValueError(f"batch field {name!r} has shape {array.shape}; its first dimension must be "
                             f"divisible by the {local_ways} local batch shards (mesh {dict(mesh.shape)})")
        out[name] = jax.make_array_from_process_local_data(sharding, array)
    return out
