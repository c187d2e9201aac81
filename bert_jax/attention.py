"""Attention implementations by name, and the one function that picks one for a layer call.

``ModelConfig.attention_impl`` asks for an implementation; ``select(config, deterministic)`` returns
the one a call uses:

* ``"reference"``: ``softmax(Q Kᵀ / sqrt(d) + mask) V`` written out with einsums, probabilities in
  float32, optional dropout on them. It materialises the ``[B, N, S, S]`` scores and probabilities.
* ``"fused"``: ``jax.nn.dot_product_attention`` with ``implementation=None``: JAX picks its cuDNN
  kernel on GPUs where it applies, else XLA's.
* ``"xla"``, ``"cudnn"``: ``jax.nn.dot_product_attention`` with that implementation forced.

* ``"splash"``: Pallas splash attention on TPUs (``bert_jax/splash.py``): segment ids from the mask's
  ``sequence_ids`` and its local window, no ``[B, N, S, S]`` buffer; rows of a multiple of 128 tokens.
  On padding rows it differs from the others (a padding query attends to padding, not to every real
  key); real tokens agree, and nothing reads padding rows.

The fused kernels have no dropout on the attention probabilities, so a TRAINING call with
``attention_dropout > 0`` (BERT's 0.1) runs ``"reference"`` whatever was asked; evaluation and
dropout-free training run the fused kernel. ``attention_impl=None`` (or ``"auto"``) asks for
``"splash"`` on TPU backends when the row length is a multiple of 128 and for ``"fused"`` otherwise;
``"reference"`` forces the einsum path everywhere. ``describe`` is the line the trainer logs.

Every implementation takes the mask as a :class:`Mask` *description* (per-token packed-sequence ids and an
optional local window), not as a dense array, so that kernels with segment ids and banded attention can
use it without an ``[S, S]`` matrix; ``Mask.dense()`` builds the boolean ``[B, 1, S, S]`` for those
that need one. A windowed mask (sliding-window local attention) whose key band is narrower than the
sequence runs :func:`bert_jax.banded_attention.banded_attention` under ``"reference"``, ``"fused"``
and ``"xla"`` (XLA's ``dot_product_attention`` would still build the ``[B, N, S, S]`` scores): memory
linear in ``S``, dropout supported.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.struct
import jax
import jax.numpy as jnp

from bert_jax import banded_attention
from bert_jax import splash
from bert_jax.config import ATTENTION_IMPLS, ModelConfig

Array = jax.Array

REQUESTS = ATTENTION_IMPLS  # what ``ModelConfig.attention_impl`` may ask for (None is "auto")
# Name -> ``jax.nn.dot_product_attention``'s ``implementation`` for the fused ones.
_FUSED = {"fused": None, "xla": "xla", "cudnn": "cudnn"}
_NEG_INF = -1e9  # finite, so a fully masked row stays finite in every dtype


@flax.struct.dataclass
class Mask:
    """Which keys each query attends to, described rather than materialised.

    A real query attends to the keys of its own packed sequence (equal ``sequence_ids``); a padding
    query (id 0) attends to every real key, which matches Hugging Face's key-only padding mask on the
    padding rows. With ``window=(left, right)`` a query at position ``i`` also only sees keys
    ``i - left <= j <= i + right`` (sliding-window local attention).

    Attributes:
      sequence_ids: int32 ``[B, S]``, 0 on padding.
      window: ``(left, right)`` key offsets (static), or None for global attention.
    """

    sequence_ids: jax.Array
    window: tuple[int, int] | None = flax.struct.field(pytree_node=False, default=None)

    def with_window(self, window: tuple[int, int] | None) -> "Mask":
        """The same sequences with another local window (None: global)."""
        return self.replace(window=window)

    def dense(self) -> jax.Array:
        """Boolean ``[B, 1, S, S]`` (True: attend)."""
        q = self.sequence_ids[:, None, :, None]
        k = self.sequence_ids[:, None, None, :]
        allowed = (k > 0) & ((q == k) | (q == 0))
        if self.window is not None:
            length = self.sequence_ids.shape[1]
            offset = jnp.arange(length)[None, :] - jnp.arange(length)[:, None]  # key - query
            left, right = self.window
            allowed = allowed & ((offset >= -left) & (offset <= right))[None, None]
        return allowed


def current_platform() -> str:
    """The platform a traced call compiles for: the active (abstract) mesh's devices, else the default
    backend (an AOT compile for compile-only TPU devices says ``"tpu"`` on a CPU host)."""
    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty and getattr(mesh, "abstract_device", None) is not None:
        return mesh.abstract_device.platform
    return jax.default_backend()


def requested(config: ModelConfig, seq_len: int | None = None, platform: str | None = None) -> str:
    """The implementation ``config`` asks for; ``None``/``"auto"``: ``"splash"`` on TPU for rows of a
    multiple of 128 tokens (any length when ``seq_len`` is None), else ``"fused"``."""
    name = config.attention_impl or "auto"
    if name != "auto":
        return name
    on_tpu = (platform or current_platform()) == "tpu"
    return "splash" if on_tpu and (seq_len is None or splash.supports(seq_len)) else "fused"


def needs_dropout(config: ModelConfig, deterministic: bool) -> bool:
    """Whether a call drops attention probabilities (training with ``attention_dropout > 0``)."""
    return not deterministic and config.attention_dropout > 0.0


def select(config: ModelConfig, deterministic: bool, seq_len: int | None = None, platform: str | None = None) -> str:
    """The implementation a layer call runs: ``"reference"`` when it needs dropout, else the request
    (``requested``: ``seq_len`` and ``platform`` resolve ``"auto"``)."""
    return "reference" if needs_dropout(config, deterministic) else requested(config, seq_len, platform)


def describe(config: ModelConfig, platform: str | None = None) -> str:
    """One line saying which implementation training and evaluation use on ``platform`` (default: the
    current one), and why."""
    train, evaluate = (select(config, deterministic, platform=platform) for deterministic in (False, True))
    why = (f" (attention_dropout={config.attention_dropout}: the fused kernels have no dropout on the "
           "probabilities, so training materialises [B, N, S, S])") if train != requested(config, platform=platform) else ""
    if "splash" in (train, evaluate):
        why += " (splash: rows of a multiple of 128 tokens; other lengths run 'fused')"
    return (f"attention: model.attention_impl={config.attention_impl!r}; training runs {train!r}{why}, "
            f"evaluation runs {evaluate!r}")


def reference_attention(q: Array, k: Array, v: Array, mask: Mask,
                        dropout: Callable[[Array], Array] | None = None) -> Array:
    """Attention written out: scores and probabilities ``[B, N, S, S]`` (float32 softmax).

    Args:
      q, k, v: ``[B, S, N, D]`` in the compute dtype.
      mask: which keys each query sees.
      dropout: applied to the probabilities (e.g. a bound ``nn.Dropout``), or None.

    Returns:
      The context ``[B, S, N, D]`` in the dtype of ``q``.
    """
    head_dim = q.shape[-1]
    scores = jnp.einsum("bqnd,bknd->bnqk", q, k) / jnp.sqrt(head_dim).astype(q.dtype)
    scores = jnp.where(mask.dense(), scores.astype(jnp.float32), _NEG_INF)
    probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
    if dropout is not None:
        probs = dropout(probs)
    return jnp.einsum("bnqk,bknd->bqnd", probs, v)


def attend(name: str, q: Array, k: Array, v: Array, mask: Mask,
           dropout: Callable[[Array], Array] | None = None) -> Array:
    """Runs implementation ``name`` (``select``'s answer) on ``[B, S, N, D]`` inputs; ``[B, S, N, D]`` out.

    Raises:
      ValueError: an unknown name, or ``dropout`` with a fused implementation.
    """
    if name in ("reference", "fused", "xla") and banded_attention.applies(mask.window, q.shape[1]):
        return banded_attention.banded_attention(q, k, v, mask.sequence_ids, mask.window, dropout)
    if name == "reference":
        return reference_attention(q, k, v, mask, dropout)
    if name not in _FUSED and name != "splash":
        raise ValueError(f"attention implementation {name!r}; expected one of {('reference', 'splash', *_FUSED)}")
    if dropout is not None:
        raise ValueError(f"attention implementation {name!r} has no dropout on the probabilities; use 'reference'")
    if name == "splash":
        return splash.splash_attention(q, k, v, mask.sequence_ids, window=mask.window)
    return jax.nn.dot_product_attention(q, k, v, mask=mask.dense(), local_window_size=mask.window,
                                        implementation=_FUSED[name])


GLOBAL_TOKENS = ("cls", "question", "none")


def global_tokens(choice: str, segment_ids: Array, sequence_ids: Array, position_ids: Array) -> Array:
    """Which tokens get global attention (Longformer), int32 ``[B, S]`` (1: global), from the batch fields.

    Args:
      choice: ``"cls"``: the first token of each sequence (``[CLS]`` / ``<s>``; classification);
        ``"question"``: the tokens of segment 0 before its closing separator (``[CLS]`` and the question
        of a QA row, as Hugging Face's ``LongformerForQuestionAnswering`` chooses); ``"none"``: no token.
      segment_ids, sequence_ids, position_ids: int32 ``[B, S]`` (``data_pipelines.batch``).

    Raises:
      ValueError: for an unknown choice.
    """
    real = sequence_ids > 0
    if choice == "cls":
        return ((position_ids == 0) & real).astype(jnp.int32)
    if choice == "question":
        first_segment = jnp.sum((segment_ids == 0) & real, axis=1, keepdims=True)
        return ((jnp.arange(segment_ids.shape[1])[None, :] < first_segment - 1) & real).astype(jnp.int32)
    if choice == "none":
        return jnp.zeros_like(sequence_ids, dtype=jnp.int32)
    raise ValueError(f"global attention tokens {choice!r}; expected one of {GLOBAL_TOKENS}")
