"""Throughput and model FLOPs utilisation (MFU), shared by the trainer and the benchmarks."""

from __future__ import annotations

import jax

from bert_jax.config import ModelConfig

# Dense bf16 peak FLOP/s per chip, matched as substrings of ``device.device_kind`` (REFERENCE.md).
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
