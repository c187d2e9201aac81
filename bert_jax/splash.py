"""TPU attention: Pallas splash attention with segment ids (packed sequences) and an optional local window.

``splash_attention(q, k, v, sequence_ids, window=...)`` runs
``jax.experimental.pallas.ops.tpu.splash_attention`` (a flash-attention kernel: the ``[S, S]`` scores are
computed block by block in VMEM and never written to HBM; the backward pass recomputes them from the saved
log-sum-exp). Per-token ``sequence_ids`` become the kernel's segment ids, so a token attends only to tokens
with the same id; the window (``LocalMask``) is and-ed with them and blocks of the ``[S, S]`` grid the
window excludes are skipped, not just masked.

Semantics against the dense mask (``attention.reference_attention`` with the mask of the same sequence ids):

* A real query (id >= 1) attends to the real keys of its own sequence, as with the dense mask: the outputs
  agree on every real token (``tests/test_splash.py`` checks values and gradients in interpret mode).
* A padding query (id 0) attends to the other padding keys (their shared segment id is 0), where the dense
  mask lets it attend to every real key. Padding rows therefore differ; nothing reads them: real queries
  never attend to padding keys, the MLM loss reads masked (real) positions and NSP the ``[CLS]`` token.
  Every row has at least itself to attend to, so no softmax is empty.

Under a mesh (``sharding.axis_rules``) the kernel runs inside ``jax.shard_map``: the batch axis split as the
rules split ``act_batch`` and the heads as they split ``act_heads`` (a Pallas call cannot be partitioned
by GSPMD; without this its inputs would be gathered onto every device). The sequence axis must not be
split (``act_length`` replicated, the default rules).

Limits: the sequence length must be a multiple of 128 (the kernel's lane width); ``attention.select`` only
picks splash when it is. There is no dropout on the probabilities (like the other fused kernels).
``interpret=True`` runs the kernel in Pallas' interpreter on any backend (CPU tests; slow).
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as kernel_lib
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as mask_lib
from jax.sharding import PartitionSpec

Array = jax.Array
Window = tuple[int | None, int | None]

LANES = 128  # the kernel's block sizes (and so the sequence length) must be multiples of this
_BLOCKS = (512, 256, 128)  # largest first: fewer grid steps, bigger MXU tiles


def supports(seq_len: int) -> bool:
    """Whether the kernel takes rows of ``seq_len`` tokens (a multiple of 128)."""
    return seq_len > 0 and seq_len % LANES == 0


def block_size(seq_len: int, window: Window | None = None) -> int:
    """The q and kv block of the kernel's grid: the largest of 512, 256, 128 that divides ``seq_len``
    (global attention: fewer grid steps), or 128 with a window (the blocks it excludes are skipped).

    Raises:
      ValueError: ``seq_len`` is not a multiple of 128.
    """
    for block in _BLOCKS:
        if seq_len % block == 0 and (window is None or block == LANES):
            return block
    raise ValueError(f"splash attention needs a sequence length that is a multiple of {LANES}; got {seq_len}")


def normalize_window(window: int | Window | None) -> Window | None:
    """``None`` (global), ``w`` (``w`` tokens each side) or ``(left, right)`` -> ``(left, right)`` or None.

    Raises:
      ValueError: a negative side.
    """
    if window is None:
        return None
    left, right = (window, window) if isinstance(window, int) else tuple(window)
    if any(side is not None and side < 0 for side in (left, right)):
        raise ValueError(f"attention window {window!r}: sides must be >= 0 (or None for unbounded)")
    return None if left is None and right is None else (left, right)


@functools.lru_cache(maxsize=64)
def _kernel(seq_len: int, num_heads: int, window: Window | None, interpret: bool) -> kernel_lib.SplashAttentionKernel:
    """The splash kernel for ``num_heads`` local heads of ``seq_len`` tokens (mask info built once)."""
    shape = (seq_len, seq_len)
    head_mask = mask_lib.FullMask(shape) if window is None else mask_lib.LocalMask(shape, window, offset=0)
    block = block_size(seq_len, window)
    blocks = kernel_lib.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                                   block_kv_dkv=block, block_kv_dkv_compute=block, use_fused_bwd_kernel=True)
    return kernel_lib.make_splash_mha(mask_lib.MultiHeadMask([head_mask] * num_heads), block_sizes=blocks,
                                      head_shards=1, q_seq_shards=1, interpret=interpret)


def _local_attention(q: Array, k: Array, v: Array, sequence_ids: Array, window: Window | None,
                     interpret: bool) -> Array:
    """The kernel on one device's shard: ``[b, S, n, D]`` in and out, ``sequence_ids [b, S]``."""
    seq_len, num_heads, head_dim = q.shape[1:]
    kernel = _kernel(seq_len, num_heads, window, interpret)
    q = q * jnp.asarray(1.0 / math.sqrt(head_dim), q.dtype)  # the kernel does not scale the scores
    q, k, v = (jnp.swapaxes(t, 1, 2) for t in (q, k, v))  # [b, n, S, D]: the kernel's head-major layout
    ids = sequence_ids.astype(jnp.int32)
    out = jax.vmap(lambda q, k, v, ids: kernel(q, k, v, segment_ids=kernel_lib.SegmentIds(ids, ids)))(q, k, v, ids)
    return jnp.swapaxes(out, 1, 2)


def _mesh_axes(logical_name: str, mesh) -> str | tuple[str, ...] | None:
    """The mesh axes the active rules split ``logical_name`` over (size-1 axes dropped), or None."""
    rules = nn.get_logical_axis_rules()
    if not rules:
        return None
    (axes,) = nn.logical_to_mesh_axes((logical_name,), rules)
    axes = () if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))
    axes = tuple(axis for axis in axes if mesh.shape[axis] > 1)
    return axes or None


def splash_attention(q: Array, k: Array, v: Array, sequence_ids: Array, *, window: int | Window | None = None,
                     interpret: bool = False) -> Array:
    """Splash attention over packed rows.

    Args:
      q, k, v: ``[B, S, N, D]`` in the compute dtype (``S`` a multiple of 128).
      sequence_ids: int ``[B, S]`` per-token sequence ids, 0 on padding.
      window: ``None`` (every key of the sequence), ``w`` (keys within ``w`` positions either side) or
        ``(left, right)``.
      interpret: run the kernel in Pallas' interpreter (any backend).

    Returns:
      The context ``[B, S, N, D]`` in the dtype of ``q``; padding rows attend to padding (module docstring).

    Raises:
      ValueError: ``S`` is not a multiple of 128, or a negative window side.
    """
    block_size(q.shape[1])
    window = normalize_window(window)
    local = functools.partial(_local_attention, window=window, interpret=interpret)
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return local(q, k, v, sequence_ids)
    if _mesh_axes("act_length", mesh) is not None:
        raise ValueError("splash attention cannot split the sequence axis: the rules shard 'act_length'")
    batch, heads = _mesh_axes("act_batch", mesh), _mesh_axes("act_heads", mesh)
    qkv_spec, ids_spec = PartitionSpec(batch, None, heads, None), PartitionSpec(batch, None)
    mapped = jax.shard_map(local, mesh=mesh, in_specs=(qkv_spec, qkv_spec, qkv_spec, ids_spec),
                           out_specs=qkv_spec, check_vma=False)
    return mapped(q, k, v, sequence_ids)
