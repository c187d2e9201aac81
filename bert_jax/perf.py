"""Throughput and model FLOPs utilisation (MFU), shared by the trainer and the benchmarks, and the host
heap setting that keeps XLA:CPU from page-faulting its step buffers in every step."""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import logging
import os

import jax

from bert_jax.config import ModelConfig

# Dense bf16 peak FLOP/s per chip, matched as substrings of ``device.device_kind`` (vendor
# datasheets, without sparsity; docs/benchmarks.md, "FLOPs and MFU").
PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("TPU v4", 275e12),
    ("TPU v5 lite", 197e12),
    ("TPU v5e", 197e12),
    ("TPU v5p", 459e12),
    ("TPU v5", 459e12),
)


def device_peak_flops(device: jax.Device | None = None) -> float | None:
    """Peak bf16 FLOP/s of one device, or None where it is not known (e.g. CPUs)."""
    device = device or jax.devices()[0]
    kind = getattr(device, "device_kind", "")
    for name, peak in PEAK_FLOPS:
        if name.lower() in kind.lower():
            return peak
    return None


def mfu(tokens_per_second: float, model: ModelConfig, seq_len: int, max_predictions: int,
        num_devices: int | None = None) -> float | None:
    """Model FLOPs utilisation of a pretraining step: achieved FLOP/s over the devices' peak."""
    peak = device_peak_flops()
    if peak is None:
        return None
    num_devices = num_devices or jax.device_count()
    return tokens_per_second * model.train_flops_per_token(seq_len, max_predictions) / (peak * num_devices)


HOST_HEAP_MODES = ("auto", "resident", "default")
# Device files of accelerators JAX would use (NVIDIA GPUs; TPU VMs: accel or vfio).
_ACCELERATOR_GLOBS = ("/dev/nvidia[0-9]*", "/dev/accel[0-9]*", "/dev/vfio/[0-9]*")
# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_INT_MAX = 2**31 - 1


def keep_host_heap_resident() -> bool:
    """Makes glibc keep freed memory mapped in this process instead of returning it to the OS.

    XLA:CPU allocates a train step's large buffers (activations, the ``[B x P, V]`` MLM logits) and frees
    them every step. glibc serves large allocations with fresh ``mmap``s and unmaps them on free, so each
    step page-faults them in again: in the demo, 109 of 392 CPU-seconds were system time. With ``mmap``
    off, one arena, and the heap trimmed only above 2 GiB of free top, the pages stay mapped after the
    first step (the demo: 8 s of system time instead of 109, 26% less wall time; docs/benchmarks.md). The cost is
    that the process's peak heap is not given back to the OS while it runs. The same as starting the
    process with ``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647:
    glibc.malloc.arena_max=1``. Call it before JAX starts its runtime (``apply_host_heap``): the malloc
    arenas of threads that already exist keep their behaviour, and XLA:CPU's worker threads start with
    the backend (called from the trainer instead, the demo kept 103 s of system time).

    Returns:
      Whether glibc took the settings (False where the C library is not glibc, e.g. musl or macOS).
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _INT_MAX), (_M_ARENA_MAX, 1))
    accepted = all(mallopt(option, value) == 1 for option, value in settings)
    if accepted:
        logging.info("host heap kept resident (glibc mallopt: no mmap, no trimming below 2 GiB, one arena)")
    return accepted


def accelerator_expected() -> bool:
    """Whether JAX will run on a GPU or TPU here, judged without starting it: from ``JAX_PLATFORMS`` when
    set, else from the accelerators' device files."""
    platforms = [p.strip() for p in os.environ.get("JAX_PLATFORMS", "").split(",") if p.strip()]
    if platforms:
        return any(p != "cpu" for p in platforms)
    return any(glob.glob(pattern) for pattern in _ACCELERATOR_GLOBS)


def apply_host_heap(mode: str) -> bool:
    """Applies a run config's ``train.host_heap`` at an entry point, before anything starts JAX.

    Args:
      mode: ``"resident"`` (``keep_host_heap_resident``), ``"default"`` (glibc as it is) or ``"auto"``
        (resident when JAX will run on CPU; on GPU/TPU hosts the heap holds only the input pipeline,
        whose threads are better served by glibc's several arenas).

    Returns:
      Whether the heap is now kept resident.

    Raises:
      ValueError: an unknown mode.
    """
    if mode not in HOST_HEAP_MODES:
        raise ValueError(f"train.host_heap={mode!r}; expected one of {HOST_HEAP_MODES}")
    if mode == "default" or (mode == "auto" and accelerator_expected()):
        return False
    return keep_host_heap_resident()


# ----------------------------------------------------------------------------------------------------
# Persistent compilation cache

COMPILATION_CACHE_SUBDIR = "compilation_cache"  # under the workdir, for train.compilation_cache_dir="auto"
_CACHE_EVENTS = {"/jax/compilation_cache/cache_hits": "hits", "/jax/compilation_cache/cache_misses": "misses"}
_cache_counts = {"hits": 0, "misses": 0}
_listening = False


def _count_cache_event(event: str, **kwargs) -> None:
    del kwargs
    if event in _CACHE_EVENTS:
        _cache_counts[_CACHE_EVENTS[event]] += 1


def compilation_cache_counts() -> dict[str, int]:
    """Persistent-cache hits and misses of this process's compilations since ``configure_compilation_cache``."""
    return dict(_cache_counts)


def compilation_cache_dir(train_cfg, workdir: str) -> str:
    """The directory ``train.compilation_cache_dir`` names: ``"auto"`` is ``<workdir>/compilation_cache`` for a
    local workdir and off ("") for a remote one (name a ``gs://`` directory explicitly to share one); "" is off."""
    from bert_jax import fileio  # pylint: disable=import-outside-toplevel

    directory = train_cfg.get("compilation_cache_dir", "auto")
    if directory == "auto":
        return "" if fileio.is_remote(workdir) else os.path.join(os.path.abspath(workdir), COMPILATION_CACHE_SUBDIR)
    return directory


def configure_compilation_cache(train_cfg, workdir: str) -> str:
    """Points JAX's persistent compilation cache at the run's directory (before the run compiles anything).

    A resumed run, the next seed or fold, or any later run with the same shapes, reads its compiled train
    and eval steps from there instead of compiling them again. Sets ``jax_compilation_cache_dir`` and the
    thresholds ``train.compilation_cache_min_compile_secs`` (compilations faster than this are not stored)
    and ``train.compilation_cache_min_entry_bytes``; counts hits and misses (``compilation_cache_counts``).

    Args:
      train_cfg: the run config's ``train`` section.
      workdir: the run's working directory.

    Returns:
      The cache directory, or "" when the cache is off (then JAX's own settings are left alone).
    """
    global _listening
    from jax.experimental.compilation_cache import compilation_cache as cache  # pylint: disable=import-outside-toplevel

    directory = compilation_cache_dir(train_cfg, workdir)
    if not directory:
        return ""
    if not _listening:
        jax.monitoring.register_event_listener(_count_cache_event)
        _listening = True
    if jax.config.jax_compilation_cache_dir != directory:
        cache.reset_cache()  # another run in this process used another directory
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(train_cfg.get("compilation_cache_min_compile_secs", 1.0)))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes",
                      int(train_cfg.get("compilation_cache_min_entry_bytes", 0)))
    logging.info("persistent compilation cache: %s", directory)
    return directory
