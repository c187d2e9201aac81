"""Rotary position embeddings (RoPE, Su et al., 2021), shared by any architecture that rotates q and k.

The rotation angle of feature pair ``f`` at position ``p`` is ``p * theta ** (-2f / D)``; pairs are
the two halves of the head dimension (``x[..., :D/2]`` with ``x[..., D/2:]``, the "rotate half"
layout of GPT-NeoX, Llama and Hugging Face's ModernBERT), not interleaved neighbours.

Positions come from the batch's per-token ``position_ids``, which ``data_pipelines`` restarts at 0 for
every packed sequence, so a packed document is rotated exactly as it would be alone in its row (and,
since its queries only see its own keys, attends exactly as it would alone).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def rotary_tables(position_ids: Array, head_dim: int, theta: float) -> tuple[Array, Array]:
    """The cosines and sines of every position's rotation.

    Args:
      position_ids: int ``[B, S]`` token positions (restarting per packed sequence).
      head_dim: ``D``, the (even) width of a query/key head.
      theta: the rotary base (10,000 in RoFormer; ModernBERT uses 160,000 on its global layers).

    Returns:
      ``(cos, sin)``, float32 ``[B, S, D]`` each (the ``D/2`` angles repeated for both halves).

    Raises:
      ValueError: for an odd ``head_dim``.
    """
    if head_dim % 2:
        raise ValueError(f"rotary embeddings need an even head dimension; got head_dim={head_dim}")
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))  # [D/2]
    angles = position_ids.astype(jnp.float32)[..., None] * inv_freq  # [B, S, D/2]
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def rotate_half(x: Array) -> Array:
    """``[x1, x2] -> [-x2, x1]`` over the last axis (its two halves)."""
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-x2, x1], axis=-1)


def apply_rotary(x: Array, cos: Array, sin: Array) -> Array:
    """Rotates queries or keys ``[B, S, N, D]`` by the tables of :func:`rotary_tables` (``[B, S, D]``).

    The rotation runs in float32 and the result is cast back to the dtype of ``x``.
    """
    x32 = x.astype(jnp.float32)
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    return (x32 * cos + rotate_half(x32) * sin).astype(x.dtype)
