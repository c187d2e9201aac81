"""Banded (sliding-window) attention with optional extra keys every query sees, in memory linear in ``S``.

The sequence is cut into blocks of ``w`` queries (``w`` the one-sided window); each block attends to the
``3w`` keys of its own and its two neighbouring blocks, masked to ``|i - j| <= w``, plus ``G`` extra keys
(Longformer's global tokens). Scores are ``[B, S/w, N, w, 3w + G]``: ``O(S (w + G))``, never ``[S, S]``.

Nothing here knows which architecture it serves: Longformer (``bert_jax/models/longformer.py``) passes
its global keys as the extra keys, a plain local-attention model passes none.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

Array = jax.Array
_NEG_INF = -1e9  # finite, as in bert_jax.attention: a fully masked row stays finite


def _pad_axis1(x: Array, before: int, after: int, value=0) -> Array:
    widths = [(0, 0), (before, after)] + [(0, 0)] * (x.ndim - 2)
    return jnp.pad(x, widths, constant_values=value)


def _blocks(x: Array, w: int, num_blocks: int) -> Array:
    """``[B, S, ...]`` (already padded to ``num_blocks * w``) -> ``[B, num_blocks, w, ...]``."""
    return x.reshape(x.shape[0], num_blocks, w, *x.shape[2:])


def _bands(x: Array, w: int, num_blocks: int, value=0) -> Array:
    """``[B, S', ...]`` (padded to ``num_blocks * w``) -> each block's key band ``[B, num_blocks, 3w, ...]``."""
    length = num_blocks * w
    padded = _pad_axis1(x, w, w, value)  # positions -w .. length + w - 1
    parts = [_blocks(padded[:, i * w:i * w + length], w, num_blocks) for i in range(3)]
    return jnp.concatenate(parts, axis=2)


def banded_attention(
    q: Array,
    k: Array,
    v: Array,
    window: int,
    query_ids: Array,
    key_ids: Array,
    extra_k: Array | None = None,
    extra_v: Array | None = None,
    extra_allowed: Array | None = None,
    dropout: Callable[[Array], Array] | None = None,
) -> Array:
    """Sliding-window attention (query ``i`` sees band keys ``j`` with ``|i - j| <= window``) plus extra keys.

    Args:
      q, k, v: ``[B, S, N, D]`` in the compute dtype (``q`` unscaled; scaled here by ``1/sqrt(D)``).
      window: the one-sided window ``w`` (static).
      query_ids: int32 ``[B, S]``: a query with id 0 attends to nothing (its context is 0, as Hugging Face's
        Longformer zeroes the probabilities of padding queries).
      key_ids: int32 ``[B, S]``: a band key is seen by the queries of equal id; give it -1 to take it out of
        every band (padding, or a global token that enters as an extra key instead).
      extra_k, extra_v: ``[B, G, N, D]`` keys and values every allowed query sees, or None.
      extra_allowed: bool ``[B, S, G]``: which query sees which extra key.
      dropout: applied to the probabilities (a bound ``nn.Dropout``), or None.

    Returns:
      The context ``[B, S, N, D]`` in the dtype of ``q``; softmax in float32 over band and extra keys together.
    """
    b, s, n, d = q.shape
    w = int(window)
    num_blocks = -(-s // w)
    pad = num_blocks * w - s
    dtype = q.dtype
    qb = _blocks(_pad_axis1(q, 0, pad), w, num_blocks)  # [B, C, w, N, D]
    kb = _bands(_pad_axis1(k, 0, pad), w, num_blocks)  # [B, C, 3w, N, D]
    vb = _bands(_pad_axis1(v, 0, pad), w, num_blocks)
    qid = _blocks(_pad_axis1(query_ids, 0, pad), w, num_blocks)  # [B, C, w]
    kid = _bands(_pad_axis1(key_ids, 0, pad, -1), w, num_blocks, -1)  # [B, C, 3w]
    offset = jnp.arange(3 * w)[None, :] - w - jnp.arange(w)[:, None]  # key - query, [w, 3w]
    in_band = jnp.abs(offset) <= w
    allowed = (qid[..., :, None] == kid[..., None, :]) & (qid[..., :, None] > 0) & in_band  # [B, C, w, 3w]
    scale = 1.0 / jnp.sqrt(jnp.float32(d))
    scores = jnp.einsum("bcqnd,bcknd->bcnqk", qb, kb).astype(jnp.float32) * scale
    scores = jnp.where(allowed[:, :, None], scores, _NEG_INF)
    any_allowed = allowed.any(-1)
    if extra_k is not None:
        g = extra_k.shape[1]
        ea = _blocks(_pad_axis1(extra_allowed, 0, pad, False), w, num_blocks)  # [B, C, w, G]
        ea = ea & (qid[..., None] > 0)
        extra = jnp.einsum("bcqnd,bgnd->bcnqg", qb, extra_k).astype(jnp.float32) * scale
        scores = jnp.concatenate([jnp.where(ea[:, :, None], extra, _NEG_INF), scores], axis=-1)
        any_allowed = any_allowed | ea.any(-1)
    probs = jax.nn.softmax(scores, axis=-1)
    probs = jnp.where(any_allowed[:, :, None, :, None], probs, 0.0).astype(dtype)
    if dropout is not None:
        probs = dropout(probs)
    if extra_k is not None:
        extra_probs, probs = probs[..., :g], probs[..., g:]
    context = jnp.einsum("bcnqk,bcknd->bcqnd", probs, vb)
    if extra_k is not None:
        context = context + jnp.einsum("bcnqg,bgnd->bcqnd", extra_probs, extra_v)
    return context.reshape(b, num_blocks * w, n, d)[:, :s]
