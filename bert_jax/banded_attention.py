"""Sliding-window (local) attention in blocks: memory linear in the sequence length, any backend.

A query at position ``i`` with window ``(left, right)`` sees keys ``i - left <= j <= i + right``
(and, as every :class:`bert_jax.attention.Mask` says, only its own packed sequence). Instead of the
``[B, N, S, S]`` scores with most entries masked, the sequence is cut into query blocks of ``C``
positions, and each block attends to its key *band*: the ``nl`` blocks before it, itself and the
``nr`` blocks after (``nl = ceil(left / C)``, ``nr = ceil(right / C)``), ``W = (nl + 1 + nr) * C``
keys. Scores and probabilities are ``[B, S/C, N, C, W]``: ``B * N * S * W`` entries, linear in ``S``
(at ``C = max(left, right)``, ``W = 3C``; ModernBERT's 128-wide window gives ``W = 192`` keys per
query instead of 8,192 at ``S = 8192``). The band is gathered by slicing, so gradients stay linear too.

The result equals :func:`bert_jax.attention.reference_attention` on every query that has at least one
key (every real token: it always sees itself); a query with none (padding far from any real token)
gets the mean of its band's values where the dense path gives the mean of all values; both are
padding outputs nobody reads.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

Array = jax.Array
_NEG_INF = -1e9  # as bert_jax.attention: finite, so a fully masked row stays finite


def block_size(window: tuple[int, int]) -> int:
    """The query block ``C`` for a window: its wider side (at least 8), so the band is ``<= 3C`` wide."""
    return max(8, *window)


def band_width(window: tuple[int, int], length: int) -> int:
    """Keys per query block, ``W``, of a window on sequences of ``length`` (before any padding)."""
    block = min(block_size(window), length)
    left, right = window
    return (math.ceil(left / block) + 1 + math.ceil(right / block)) * block


def applies(window: tuple[int, int] | None, length: int) -> bool:
    """Whether the banded path is smaller than the dense one: a window whose band is narrower than ``S``."""
    return window is not None and band_width(window, length) < length


def _blocks(x: Array, block: int, before: int, after: int) -> Array:
    """``[B, S, ...]`` zero-padded to ``before + ceil(S / C) + after`` blocks: ``[B, blocks, C, ...]``."""
    length = x.shape[1]
    count = -(-length // block)
    pad = [(0, 0)] * x.ndim
    pad[1] = (before * block, (count + after) * block - length)
    x = jnp.pad(x, pad)
    return x.reshape(x.shape[0], count + before + after, block, *x.shape[2:])


def _band(x: Array, count: int, before: int, after: int) -> Array:
    """Blocked ``[B, before + count + after, C, ...]`` -> each block's band ``[B, count, W, ...]``."""
    parts = [x[:, offset:offset + count] for offset in range(before + 1 + after)]
    band = jnp.stack(parts, axis=2)  # [B, count, bands, C, ...]
    return band.reshape(band.shape[0], count, -1, *band.shape[4:])


def banded_attention(q: Array, k: Array, v: Array, sequence_ids: Array, window: tuple[int, int],
                     dropout: Callable[[Array], Array] | None = None) -> Array:
    """Sliding-window attention computed block by block (float32 softmax, as the reference path).

    Args:
      q, k, v: ``[B, S, N, D]`` in the compute dtype.
      sequence_ids: int32 ``[B, S]`` packed-sequence ids, 0 on padding (``Mask.sequence_ids``).
      window: ``(left, right)`` key offsets (static, ``>= 0``).
      dropout: applied to the probabilities ``[B, S/C, N, C, W]`` (e.g. a bound ``nn.Dropout``), or None.

    Returns:
      The context ``[B, S, N, D]`` in the dtype of ``q``.
    """
    batch, length, heads, head_dim = q.shape
    left, right = window
    block = min(block_size(window), length)
    before, after = math.ceil(left / block), math.ceil(right / block)
    count = -(-length // block)

    q_blocks = _blocks(q, block, 0, 0)  # [B, n, C, N, D]
    k_band = _band(_blocks(k, block, before, after), count, before, after)  # [B, n, W, N, D]
    v_band = _band(_blocks(v, block, before, after), count, before, after)
    q_ids = _blocks(sequence_ids, block, 0, 0)  # [B, n, C]
    k_ids = _band(_blocks(sequence_ids, block, before, after), count, before, after)  # [B, n, W] (0 outside)

    q_pos = jnp.arange(count * block).reshape(count, block)  # [n, C]
    k_pos = (jnp.arange(count)[:, None] - before) * block + jnp.arange(k_band.shape[2])[None, :]  # [n, W]
    offset = k_pos[:, None, :] - q_pos[:, :, None]  # [n, C, W] key - query
    in_window = (offset >= -left) & (offset <= right)
    same = (k_ids[:, :, None, :] > 0) & ((q_ids[..., None] == k_ids[:, :, None, :]) | (q_ids[..., None] == 0))
    allowed = (same & in_window[None])[:, :, None]  # [B, n, 1, C, W]

    scores = jnp.einsum("bxqnd,bxknd->bxnqk", q_blocks, k_band) / jnp.sqrt(head_dim).astype(q.dtype)
    scores = jnp.where(allowed, scores.astype(jnp.float32), _NEG_INF)
    probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
    if dropout is not None:
        probs = dropout(probs)
    context = jnp.einsum("bxnqk,bxknd->bxqnd", probs, v_band)
    return context.reshape(batch, count * block, heads, head_dim)[:, :length]
