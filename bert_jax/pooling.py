"""Sentence vectors from token vectors: Sentence-BERT's three poolings, ``cls``, ``mean`` and ``max``.

Each takes the encoder's last hidden states ``[B, S, H]`` (any float dtype) and the ``[B, S]`` mask of
real tokens (1 for real tokens, ``[CLS]`` and ``[SEP]`` included; 0 for padding) and returns float32
``[B, H]``, computed in float32 whatever the input dtype:

* ``cls``: the last hidden state of the first token (``[CLS]``), as sentence-transformers'
  ``pooling_mode_cls_token``. This is the raw token vector, not BERT's pooler (the tanh dense layer that
  the classification heads' ``pooling="cls"`` reads).
* ``mean``: the average over the real tokens (sum over the mask, divided by the count of real tokens).
* ``max``: the per-feature maximum over the real tokens; padding is filled with the most negative
  float32 before the maximum, so it can never win, even where its hidden states are large.

A row without any real token (a padding row of a batch) pools to zeros under ``mean`` and ``max``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

POOLINGS = ("cls", "mean", "max")


def cls_pooling(hidden: jax.Array, mask: jax.Array) -> jax.Array:
    """The first token's vector.

    Args:
      hidden: float ``[B, S, H]`` last hidden states.
      mask: int or bool ``[B, S]`` (unused: ``[CLS]`` is always the first token; kept for one signature).

    Returns:
      float32 ``[B, H]``.
    """
    del mask
    return jnp.asarray(hidden)[:, 0].astype(jnp.float32)


def mean_pooling(hidden: jax.Array, mask: jax.Array) -> jax.Array:
    """The mean of the real tokens' vectors.

    Args:
      hidden: float ``[B, S, H]`` last hidden states.
      mask: int or bool ``[B, S]``, 1 for real tokens.

    Returns:
      float32 ``[B, H]``: ``sum(hidden * mask) / max(sum(mask), 1)`` over ``S``.
    """
    weights = jnp.asarray(mask)[..., None].astype(jnp.float32)
    total = jnp.sum(jnp.asarray(hidden).astype(jnp.float32) * weights, axis=1)
    return total / jnp.maximum(jnp.sum(weights, axis=1), 1.0)


def max_pooling(hidden: jax.Array, mask: jax.Array) -> jax.Array:
    """The per-feature maximum over the real tokens.

    Args:
      hidden: float ``[B, S, H]`` last hidden states.
      mask: int or bool ``[B, S]``, 1 for real tokens.

    Returns:
      float32 ``[B, H]``; zeros for a row with no real token.
    """
    real = jnp.asarray(mask)[..., None] > 0
    filled = jnp.where(real, jnp.asarray(hidden).astype(jnp.float32), jnp.finfo(jnp.float32).min)
    return jnp.where(jnp.any(real, axis=1), jnp.max(filled, axis=1), 0.0)


_BY_NAME = {"cls": cls_pooling, "mean": mean_pooling, "max": max_pooling}


def pool(hidden: jax.Array, mask: jax.Array, pooling: str) -> jax.Array:
    """``hidden [B, S, H]`` pooled by name (one of :data:`POOLINGS`) -> float32 ``[B, H]``.

    Raises:
      ValueError: for an unknown ``pooling``.
    """
    if pooling not in _BY_NAME:
        raise ValueError(f"pooling={pooling!r}; expected one of {POOLINGS}")
    return _BY_NAME[pooling](hidden, mask)
