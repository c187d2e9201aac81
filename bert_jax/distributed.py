"""Multi-process JAX: ``initialize()`` connects the processes of a run before anything touches a device.

One JAX process runs per host (TPU VM workers, SLURM nodes) or per GPU; every process runs the same
program, reads its own share of the data (``data_pipelines.loader`` shards documents by
``jax.process_index()``) and feeds its rows of each global batch (``sharding.shard_batch``). Orbax
coordinates checkpoints across processes: each writes the array shards it owns, the primary
process finalises the step.

Where the cluster description comes from, first match wins (``detect``):

1. **Explicit**: ``--coordinator_address=HOST:PORT --num_processes=N --process_id=I`` (absl flags of
   this module, read by ``initialize_from_flags``), or the environment variables
   ``BERT_JAX_COORDINATOR``, ``BERT_JAX_NUM_PROCESSES``, ``BERT_JAX_PROCESS_ID`` and optionally
   ``BERT_JAX_LOCAL_DEVICE_IDS`` (comma-separated). ``num_processes=1`` means a single process.
2. **SLURM** (inside ``srun``; ``SLURM_JOB_ID``, ``SLURM_NTASKS``, ``SLURM_PROCID``, ``SLURM_LOCALID``
   and ``SLURM_STEP_NODELIST`` set, ``SLURM_NTASKS > 1``): JAX's own SLURM detection gives the
   coordinator (first node of the step, port from the job id or ``JAX_COORDINATOR_PORT``), the process
   count and id. ``BERT_JAX_COORDINATOR`` overrides the coordinator. With several tasks per node
   each process sees one GPU (``SLURM_LOCALID``, JAX's default); with one task per node it sees all
   ``SLURM_GPUS_ON_NODE`` GPUs.
3. **Cloud TPU VM** (TPU device files and ``libtpu`` present): ``jax.distributed.initialize()`` without
   arguments; JAX reads the worker list and this worker's id from the TPU metadata server.
4. **Open MPI** (``mpirun``; ``OMPI_COMM_WORLD_SIZE > 1``): JAX's Open MPI detection.
5. **Single process**: nothing to do.

``BERT_JAX_DISTRIBUTED=explicit|slurm|tpu|ompi|single`` forces a method (e.g. ``single`` inside an
``salloc`` shell that should not join a cluster).
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import jax
import numpy as np
from absl import flags

T = TypeVar("T")

ENV_COORDINATOR = "BERT_JAX_COORDINATOR"
ENV_NUM_PROCESSES = "BERT_JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "BERT_JAX_PROCESS_ID"
ENV_LOCAL_DEVICE_IDS = "BERT_JAX_LOCAL_DEVICE_IDS"
ENV_METHOD = "BERT_JAX_DISTRIBUTED"
METHODS = ("explicit", "slurm", "tpu", "ompi", "single")
_SLURM_VARS = ("SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_STEP_NODELIST")
# Device files of a Cloud TPU VM: /dev/accel* (v2-v4) or /dev/vfio/<n> (v5e, v5p, v6e).
_TPU_DEVICE_GLOBS = ("/dev/accel*", "/dev/vfio/[0-9]*")

_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, f"HOST:PORT of process 0's coordinator (or env {ENV_COORDINATOR}); "
    "unset: detected (SLURM, Cloud TPU VM, Open MPI) or a single process.")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, f"Processes in the run (or env {ENV_NUM_PROCESSES}).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, f"This process's id in [0, num_processes) (or env {ENV_PROCESS_ID}).")
_LOCAL_DEVICE_IDS = flags.DEFINE_list(
    "local_device_ids", None, f"Accelerator ids this process uses, e.g. 0,1 (or env {ENV_LOCAL_DEVICE_IDS}); "
    "unset: all visible devices.")


class DistributedConfigError(ValueError):
    """The flags or environment describe an incomplete or inconsistent cluster."""


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
    """How this process joins the run (what ``jax.distributed.initialize`` is called with).

    Attributes:
      method: one of ``METHODS``: where the description came from.
      coordinator_address: ``HOST:PORT`` of process 0, or None for JAX to detect it.
      num_processes: processes in the run, or None for JAX to detect it (TPU, Open MPI).
      process_id: this process's id, or None for JAX to detect it.
      local_device_ids: accelerator ids this process uses; None for all visible ones.
      cluster_detection_method: passed through to JAX (``"slurm"``, ``"ompi"``, or None).
    """

    method: str
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: tuple[int, ...] | None = None
    cluster_detection_method: str | None = None

    @property
    def is_multi_process(self) -> bool:
        return self.method != "single"

    def initialize_kwargs(self) -> dict:
        """Keyword arguments for ``jax.distributed.initialize`` (None values left for JAX to detect)."""
        kwargs = dict(coordinator_address=self.coordinator_address, num_processes=self.num_processes,
                      process_id=self.process_id, cluster_detection_method=self.cluster_detection_method)
        if self.local_device_ids is not None:
            kwargs["local_device_ids"] = list(self.local_device_ids)
        return kwargs


def _int_or_none(value: str | int | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError) as error:
        raise DistributedConfigError(f"{name}={value!r}: expected an integer") from error


def _device_ids(value: str | Sequence[int | str] | None, name: str) -> tuple[int, ...] | None:
    if value is None or value == "" or value == []:
        return None
    items = value.split(",") if isinstance(value, str) else value
    try:
        return tuple(int(item) for item in items)
    except (TypeError, ValueError) as error:
        raise DistributedConfigError(f"{name}={value!r}: expected comma-separated integers") from error


def tpu_vm_present() -> bool:
    """True on a Cloud TPU VM: TPU device files exist and ``libtpu`` is installed."""
    has_devices = any(glob.glob(pattern) for pattern in _TPU_DEVICE_GLOBS)
    return has_devices and importlib.util.find_spec("libtpu") is not None


def _explicit(coordinator_address, num_processes, process_id, local_device_ids) -> ClusterSpec:
    given = {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id}
    if num_processes == 1 and process_id in (None, 0):
        return ClusterSpec("single")
    missing = [name for name, value in given.items() if value is None]
    if missing:
        raise DistributedConfigError(
            f"explicit multi-process setup needs --coordinator_address, --num_processes and --process_id "
            f"(or {ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, {ENV_PROCESS_ID}); missing: {', '.join(missing)}")
    if ":" not in coordinator_address:
        raise DistributedConfigError(f"coordinator_address={coordinator_address!r}: expected HOST:PORT")
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise DistributedConfigError(
            f"process_id={process_id}, num_processes={num_processes}: need 0 <= process_id < num_processes")
    return ClusterSpec("explicit", coordinator_address, num_processes, process_id, local_device_ids,
                       cluster_detection_method="deactivate")


def _slurm_tasks_on_this_node(env: Mapping[str, str]) -> int | None:
    """Tasks of this job step on this node, from ``SLURM_STEP_TASKS_PER_NODE`` (e.g. ``"8(x2)"``)."""
    value = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
    if not value:
        return None
    return _int_or_none(value.split("(")[0].split(",")[0], "SLURM_STEP_TASKS_PER_NODE")


def _slurm(env: Mapping[str, str], coordinator_address: str | None,
           local_device_ids: tuple[int, ...] | None) -> ClusterSpec:
    num_processes = _int_or_none(env["SLURM_NTASKS"], "SLURM_NTASKS")
    if num_processes == 1:
        return ClusterSpec("single")
    if local_device_ids is None and _slurm_tasks_on_this_node(env) == 1:
        # One process per node: all of the node's GPUs (JAX would otherwise pick GPU SLURM_LOCALID).
        gpus = _int_or_none(env.get("SLURM_GPUS_ON_NODE"), "SLURM_GPUS_ON_NODE")
        if gpus:
            local_device_ids = tuple(range(gpus))
    return ClusterSpec("slurm", coordinator_address, num_processes,
                       _int_or_none(env["SLURM_PROCID"], "SLURM_PROCID"), local_device_ids,
                       cluster_detection_method="slurm")


def detect(
    env: Mapping[str, str] | None = None,
    *,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: Sequence[int] | str | None = None,
    tpu_present: bool | None = None,
) -> ClusterSpec:
    """Works out how this process joins the run (see the module docstring for the order).

    Args:
      env: the environment (default ``os.environ``).
      coordinator_address, num_processes, process_id, local_device_ids: explicit values (flags);
        each falls back to its ``BERT_JAX_*`` environment variable.
      tpu_present: whether this is a Cloud TPU VM (default: ``tpu_vm_present()``).

    Returns:
      The ``ClusterSpec``; ``method='single'`` when there is nothing to join.

    Raises:
      DistributedConfigError: an incomplete explicit setup, a non-integer count or id, or an
        unknown ``BERT_JAX_DISTRIBUTED``.
    """
    env = os.environ if env is None else env
    coordinator_address = coordinator_address or env.get(ENV_COORDINATOR) or None
    num_processes = _int_or_none(num_processes if num_processes is not None else env.get(ENV_NUM_PROCESSES),
                                 "num_processes")
    process_id = _int_or_none(process_id if process_id is not None else env.get(ENV_PROCESS_ID), "process_id")
    local_device_ids = _device_ids(local_device_ids if local_device_ids is not None
                                   else env.get(ENV_LOCAL_DEVICE_IDS), "local_device_ids")
    forced = env.get(ENV_METHOD, "").strip().lower() or None
    if forced is not None and forced not in METHODS:
        raise DistributedConfigError(f"{ENV_METHOD}={forced!r}: expected one of {METHODS}")

    slurm = all(name in env for name in _SLURM_VARS)
    if forced == "single":
        return ClusterSpec("single")
    if forced == "explicit" or (forced is None and (num_processes is not None or process_id is not None
                                                    or (coordinator_address and not slurm))):
        return _explicit(coordinator_address, num_processes, process_id, local_device_ids)
    if forced == "slurm" or (forced is None and slurm):
        missing = [name for name in _SLURM_VARS if name not in env]
        if missing:
            raise DistributedConfigError(f"{ENV_METHOD}=slurm but {', '.join(missing)} are not set (run under srun)")
        return _slurm(env, coordinator_address, local_device_ids)
    if forced == "tpu" or (forced is None and (tpu_vm_present() if tpu_present is None else tpu_present)):
        return ClusterSpec("tpu", coordinator_address)
    ompi_size = _int_or_none(env.get("OMPI_COMM_WORLD_SIZE"), "OMPI_COMM_WORLD_SIZE") or 1
    if forced == "ompi" or (forced is None and ompi_size > 1):
        return ClusterSpec("ompi", coordinator_address, cluster_detection_method="ompi")
    return ClusterSpec("single")


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: Sequence[int] | str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    initialization_timeout: int = 300,
) -> ClusterSpec:
    """Joins the run's processes (``jax.distributed.initialize``) unless this is a single process.

    Call it first thing in an entry point, before any JAX computation or ``jax.devices()``. Calling it
    again after a successful initialisation is a no-op.

    Args:
      coordinator_address, num_processes, process_id, local_device_ids, env: see ``detect``.
      initialization_timeout: seconds to wait for every process to connect.

    Returns:
      The ``ClusterSpec`` used.

    Raises:
      DistributedConfigError: see ``detect``.
      RuntimeError: a multi-process setup was asked for after JAX's backend had started.
    """
    spec = detect(env, coordinator_address=coordinator_address, num_processes=num_processes,
                  process_id=process_id, local_device_ids=local_device_ids)
    if not spec.is_multi_process:
        logging.info("single JAX process: %d local devices", jax.local_device_count())
        return spec
    if jax.distributed.is_initialized():
        return spec
    logging.info("joining a multi-process run via %s: %s", spec.method, spec.initialize_kwargs())
    jax.distributed.initialize(**spec.initialize_kwargs(), initialization_timeout=initialization_timeout)
    logging.info("process %d of %d: %d local of %d global devices (%s)", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count(), jax.devices()[0].platform)
    return spec


def initialize_from_flags() -> ClusterSpec:
    """``initialize`` with this module's absl flags (``--coordinator_address`` ...); for entry points."""
    return initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, _LOCAL_DEVICE_IDS.value)


def is_primary() -> bool:
    """True in process 0, the one that writes run-level files (config, metrics, summaries)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Blocks until every process reaches the barrier ``name`` (a no-op with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

        multihost_utils.sync_global_devices(name)


def primary_first(fn: Callable[[], T], what: str) -> T:
    """Runs ``fn`` in process 0 first, then in the others: one-time preparation happens once.

    For steps that build what is missing and then load it (training a vocabulary, preparing a TFDS
    dataset): process 0 builds, the others wait for it and only load. With one process this is ``fn()``.

    Args:
      fn: the step; every process runs it and gets its own result.
      what: what ``fn`` does, for the error the other processes raise when process 0 fails.

    Raises:
      RuntimeError: in processes other than 0, when ``fn`` raised in process 0 (which re-raises it).
    """
    if jax.process_count() == 1:
        return fn()
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    if is_primary():
        try:
            result = fn()
        except Exception:
            multihost_utils.broadcast_one_to_all(np.int32(0))  # release the others, with the news
            raise
        multihost_utils.broadcast_one_to_all(np.int32(1))
        return result
    if not int(multihost_utils.broadcast_one_to_all(np.int32(0))):
        raise RuntimeError(f"process 0 failed while {what}; its log has the error")
    return fn()
