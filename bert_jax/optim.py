"""Optimizers and learning-rate schedules: optax chains built from the run config's ``optimizer`` section.

The chain is ``[clip by global norm] -> AdamW | LAMB`` (optionally wrapped in ``optax.apply_if_finite``),
with a linear warmup followed by the configured decay. Weight decay, and LAMB's layer-wise trust ratio,
skip every LayerNorm parameter and every bias (the original BERT recipe); ``weight_decay_mask`` decides
that from the parameter path, so it works for the looped (``layer_i``) and the scanned (``layers``)
layouts and for boxed (``nn.Partitioned``) as well as plain parameter trees.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import ml_collections
import optax

OPTIMIZERS = ("adamw", "lamb")
DECAYS = ("linear", "polynomial", "cosine", "constant")

# Parameter paths containing this module name are LayerNorm scales/biases (model.LayerNorm's inner module).
LAYER_NORM_MODULE = "norm"
# Leaf names that are biases: every Dense bias and the MLM head's vocabulary bias.
BIAS_NAMES = frozenset({"bias", "output_bias"})


def default_optimizer_config() -> ml_collections.ConfigDict:
    """The BERT pretraining optimizer (Devlin et al., 2018), as the run config's ``optimizer`` section."""
    cfg = ml_collections.ConfigDict()
    cfg.name = "adamw"  # "adamw" (BERT's Adam with decoupled weight decay) or "lamb" (large-batch BERT).
    cfg.learning_rate = 1e-4  # Peak learning rate, reached at the end of warmup.
    cfg.warmup_steps = 10_000  # Linear warmup from 0 to the peak over this many steps.
    cfg.total_steps = 1_000_000  # Step at which the decay ends (the length of the run).
    cfg.decay = "linear"  # After warmup: "linear", "polynomial", "cosine" or "constant".
    cfg.power = 1.0  # Exponent of the "polynomial" decay (1.0 = linear).
    cfg.end_lr_fraction = 0.0  # Final learning rate as a fraction of the peak.
    cfg.b1 = 0.9  # Adam first-moment decay.
    cfg.b2 = 0.999  # Adam second-moment decay.
    cfg.eps = 1e-6  # Adam epsilon, added to sqrt(second moment).
    cfg.weight_decay = 0.01  # Decoupled weight decay; never applied to LayerNorm parameters or biases.
    cfg.clip_norm = 1.0  # Clip gradients to this global L2 norm; 0 or None turns clipping off.
    cfg.skip_nonfinite = False  # Skip the update (keep params and moments) when any gradient is inf/nan.
    cfg.max_consecutive_nonfinite = 5  # With skip_nonfinite: after this many skips in a row, apply anyway.
    return cfg


def _require(cfg: Any, field: str) -> Any:
    if field not in cfg:
        raise ValueError(f"optimizer config is missing the field {field!r}; see default_optimizer_config()")
    return cfg[field]


def _get(cfg: Any, field: str) -> Any:
    """Reads ``field`` from ``cfg``, falling back to ``default_optimizer_config()``'s value."""
    return cfg[field] if field in cfg else default_optimizer_config()[field]


def make_schedule(cfg: Any) -> optax.Schedule:
    """Linear warmup from 0 to ``learning_rate`` over ``warmup_steps``, then the configured decay.

    The decay runs over the remaining ``total_steps - warmup_steps`` steps from the peak down to
    ``learning_rate * end_lr_fraction`` and stays there afterwards.

    Args:
      cfg: the optimizer section (``ConfigDict`` or mapping) with ``learning_rate``, ``warmup_steps``,
        ``total_steps``, ``decay`` and, for some decays, ``power`` and ``end_lr_fraction``.

    Returns:
      A function from the step (int) to the learning rate (float32 scalar).

    Raises:
      ValueError: on an unknown decay or inconsistent step counts.
    """
    peak = float(_require(cfg, "learning_rate"))
    warmup = int(_get(cfg, "warmup_steps"))
    total = int(_require(cfg, "total_steps"))
    decay = _get(cfg, "decay")
    end_value = peak * float(_get(cfg, "end_lr_fraction"))
    if decay not in DECAYS:
        raise ValueError(f"optimizer.decay={decay!r}; expected one of {DECAYS}")
    if warmup < 0:
        raise ValueError(f"optimizer.warmup_steps={warmup} must be >= 0")
    decay_steps = total - warmup
    if decay != "constant" and decay_steps <= 0:
        raise ValueError(
            f"optimizer.total_steps={total} must exceed optimizer.warmup_steps={warmup} for decay={decay!r}")

    if decay == "constant":
        after_warmup = optax.constant_schedule(peak)
    elif decay == "cosine":
        after_warmup = optax.cosine_decay_schedule(peak, decay_steps, alpha=end_value / peak if peak else 0.0)
    else:
        power = 1.0 if decay == "linear" else float(_get(cfg, "power"))
        after_warmup = optax.polynomial_schedule(peak, end_value, power, decay_steps)
    if warmup == 0:
        return after_warmup
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after_warmup], [warmup])


def is_decayed(path: tuple[Any, ...]) -> bool:
    """Whether the parameter at ``path`` (a JAX key path) gets weight decay / LAMB's trust ratio.

    False for LayerNorm parameters (any path through a module named ``norm``) and for biases (leaves
    named ``bias`` or ``output_bias``); True for every kernel and embedding table.
    """
    names = [str(getattr(key, "key", getattr(key, "name", key))) for key in path]
    return not (LAYER_NORM_MODULE in names or (names and names[-1] in BIAS_NAMES))


def weight_decay_mask(params: Any) -> Any:
    """The weight-decay mask of a parameter tree: a tree of bools, True where decay applies.

    Args:
      params: a parameter tree (plain arrays, ``ShapeDtypeStruct``s or ``nn.Partitioned`` boxes). A box
        counts as one leaf, so the mask is a prefix of the boxed tree, as ``optax.masked`` accepts.

    Returns:
      A tree with the structure of ``params`` (boxes as leaves) holding Python bools.
    """
    return jax.tree_util.tree_map_with_path(
        lambda path, _: is_decayed(path), params, is_leaf=lambda x: isinstance(x, nn.Partitioned))


def _lamb(
    learning_rate: optax.Schedule, b1: float, b2: float, eps: float, weight_decay: float
) -> optax.GradientTransformation:
    """LAMB (You et al., 2019) with LayerNorm parameters and biases excluded from decay and trust ratio.

    ``optax.lamb`` applies the trust ratio to every leaf; the BERT LAMB recipes exclude the same leaves
    from layer adaptation as from weight decay, which this chain does.
    """
    return optax.chain(
        optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
        optax.add_decayed_weights(weight_decay, mask=weight_decay_mask),
        optax.masked(optax.scale_by_trust_ratio(), weight_decay_mask),
        optax.scale_by_learning_rate(learning_rate),
    )


def make_optimizer(cfg: Any) -> optax.GradientTransformation:
    """Builds the optax optimizer described by the ``optimizer`` config section.

    Args:
      cfg: ``ConfigDict`` (or mapping) with the fields of ``default_optimizer_config()``; missing
        optional fields take those defaults, ``learning_rate`` and ``total_steps`` are required.

    Returns:
      ``[clip_by_global_norm] -> adamw|lamb``, wrapped in ``optax.apply_if_finite`` when
      ``skip_nonfinite``. Its ``init``/``update`` take plain (unboxed) parameter trees; ``init`` also
      accepts boxed trees and then returns a state whose moments carry the parameters' boxes.

    Raises:
      ValueError: on an unknown optimizer name or decay, or inconsistent step counts.
    """
    name = _get(cfg, "name")
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name={name!r}; expected one of {OPTIMIZERS}")
    schedule = make_schedule(cfg)
    b1, b2, eps = float(_get(cfg, "b1")), float(_get(cfg, "b2")), float(_get(cfg, "eps"))
    weight_decay = float(_get(cfg, "weight_decay"))
    if name == "adamw":
        tx = optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, mask=weight_decay_mask)
    else:
        tx = _lamb(schedule, b1, b2, eps, weight_decay)
    clip_norm = _get(cfg, "clip_norm")
    if clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(float(clip_norm)), tx)
    if _get(cfg, "skip_nonfinite"):
        tx = optax.apply_if_finite(tx, max_consecutive_errors=int(_get(cfg, "max_consecutive_nonfinite")))
    return tx
