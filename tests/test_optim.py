"""Optimizers and schedules (bert_jax/optim.py): decay mask, schedule values, AdamW by hand, LAMB."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import optim
from bert_jax.config import ModelConfig
from bert_jax.heads import PreTrainingModel
from bert_jax.models.layers import unbox
from data_pipelines.batch import zeros_batch


def _config(**overrides):
    cfg = optim.default_optimizer_config()
    cfg.update(overrides)
    return cfg


def _abstract_params(scan_layers: bool):
    model = PreTrainingModel(ModelConfig.from_size("tiny", vocab_size=64, scan_layers=scan_layers))
    return jax.eval_shape(lambda key: model.init(key, zeros_batch(B=1, S=8, P=2))["params"], jax.random.PRNGKey(0))


@pytest.mark.parametrize("scan_layers", [False, True])
def test_decay_mask_excludes_exactly_layer_norms_and_biases(scan_layers):
    boxed = _abstract_params(scan_layers)
    mask = {jax.tree_util.keystr(path): decayed
            for path, decayed in jax.tree_util.tree_leaves_with_path(optim.weight_decay_mask(boxed))}
    excluded = sorted(path for path, decayed in mask.items() if not decayed)
    decayed = sorted(path for path, decayed in mask.items() if decayed)
    # Each Transformer layer: q/k/v/output + intermediate/output biases (6) and 2 LayerNorms (4) -> 10
    # excluded, 6 kernels decayed. Outside the layers: embedding, MLM-head LayerNorms (4), pooler,
    # transform, NSP and MLM output biases (4) excluded; 3 embedding tables and 3 head kernels decayed.
    layer_copies = 1 if scan_layers else 2  # the scanned layout stacks both layers in one leaf
    assert len(excluded) == 10 * layer_copies + 8, excluded
    assert len(decayed) == 6 * layer_copies + 6, decayed
    assert all(path.endswith(("['bias']", "['output_bias']", "['scale']")) for path in excluded)
    assert all(path.endswith(("['kernel']", "_embeddings']")) for path in decayed)
    layer = "['layers']" if scan_layers else "['layer_0']"
    assert mask[f"['bert']['encoder']{layer}['attention']['query']['kernel']"]
    assert not mask[f"['bert']['encoder']{layer}['attention']['layer_norm']['norm']['scale']"]
    assert mask["['bert']['embeddings']['word_embeddings']"]
    assert not mask["['mlm_head']['output_bias']"]
    # The same mask on the unboxed tree (what optimizer.update sees).
    unboxed = jax.tree_util.tree_leaves_with_path(optim.weight_decay_mask(unbox(boxed)))
    assert {jax.tree_util.keystr(path): decayed for path, decayed in unboxed} == mask


def test_linear_schedule_warmup_and_decay():
    schedule = optim.make_schedule(_config(learning_rate=1e-3, warmup_steps=10, total_steps=110, decay="linear"))
    values = {step: float(schedule(step)) for step in (0, 5, 10, 60, 110, 200)}
    expected = {0: 0.0, 5: 5e-4, 10: 1e-3, 60: 5e-4, 110: 0.0, 200: 0.0}
    for step, value in expected.items():
        assert values[step] == pytest.approx(value, abs=1e-9), step


@pytest.mark.parametrize(
    "decay, overrides, expected_mid, expected_end",
    [
        ("cosine", {"end_lr_fraction": 0.1}, 1e-4 + 0.5 * 9e-4, 1e-4),
        ("polynomial", {"power": 2.0}, 1e-3 * 0.5**2, 0.0),
        ("constant", {}, 1e-3, 1e-3),
    ],
)
def test_other_decays(decay, overrides, expected_mid, expected_end):
    cfg = _config(learning_rate=1e-3, warmup_steps=10, total_steps=110, decay=decay, **overrides)
    schedule = optim.make_schedule(cfg)
    assert float(schedule(0)) == 0.0
    assert float(schedule(10)) == pytest.approx(1e-3, rel=1e-6)
    assert float(schedule(60)) == pytest.approx(expected_mid, rel=1e-5)
    assert float(schedule(110)) == pytest.approx(expected_end, rel=1e-5, abs=1e-12)


def test_bad_configs_raise_clear_errors():
    with pytest.raises(ValueError, match="total_steps=10 must exceed optimizer.warmup_steps=10"):
        optim.make_schedule(_config(warmup_steps=10, total_steps=10))
    with pytest.raises(ValueError, match="decay='step'"):
        optim.make_schedule(_config(decay="step"))
    with pytest.raises(ValueError, match="name='sgd'"):
        optim.make_optimizer(_config(name="sgd"))


TOY_PARAMS = {
    "dense": {"kernel": np.array([[0.5, -1.0], [2.0, 0.25]], np.float32), "bias": np.array([0.1, -0.2], np.float32)},
    "layer_norm": {"norm": {"scale": np.array([1.0, 0.8], np.float32)}},
}
TOY_GRADS = [
    {"dense": {"kernel": np.array([[0.3, -2.0], [1.0, 0.0]], np.float32), "bias": np.array([0.5, 0.1], np.float32)},
     "layer_norm": {"norm": {"scale": np.array([-0.4, 0.2], np.float32)}}},
    {"dense": {"kernel": np.array([[0.1, 0.2], [-0.3, 0.05]], np.float32), "bias": np.array([-0.2, 0.3], np.float32)},
     "layer_norm": {"norm": {"scale": np.array([0.1, 0.1], np.float32)}}},
]
TOY_DECAYED = {"dense": {"kernel": True, "bias": False}, "layer_norm": {"norm": {"scale": False}}}


def _run(tx, steps):
    params = jax.tree.map(jnp.asarray, TOY_PARAMS)
    state = tx.init(params)
    all_updates = []
    for grads in TOY_GRADS[:steps]:
        updates, state = tx.update(jax.tree.map(jnp.asarray, grads), state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
        all_updates.append(updates)
    return params, all_updates


def test_adamw_matches_hand_computed_reference():
    lr, wd, clip, b1, b2, eps = 0.1, 0.01, 1.0, 0.9, 0.999, 1e-6
    cfg = _config(learning_rate=lr, warmup_steps=0, total_steps=10, decay="constant", weight_decay=wd,
                  clip_norm=clip, b1=b1, b2=b2, eps=eps)
    params, _ = _run(optim.make_optimizer(cfg), steps=2)

    leaves, treedef = jax.tree.flatten(TOY_PARAMS)
    p = [leaf.astype(np.float64) for leaf in leaves]
    decayed = jax.tree.leaves(TOY_DECAYED)
    m = [np.zeros_like(x) for x in p]
    v = [np.zeros_like(x) for x in p]
    for t, grads in enumerate(TOY_GRADS, start=1):
        g = [leaf.astype(np.float64) for leaf in jax.tree.leaves(grads)]
        norm = np.sqrt(sum((x**2).sum() for x in g))
        g = [x * min(1.0, clip / norm) for x in g]
        for i in range(len(p)):
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] ** 2
            update = (m[i] / (1 - b1**t)) / (np.sqrt(v[i] / (1 - b2**t)) + eps)
            p[i] = p[i] - lr * (update + (wd * p[i] if decayed[i] else 0.0))
    expected = jax.tree.unflatten(treedef, p)
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


def test_lamb_adapts_decayed_leaves_only_and_differs_from_adamw():
    lr = 0.01
    common = dict(learning_rate=lr, warmup_steps=0, total_steps=10, decay="constant", clip_norm=0.0)
    _, (adamw_updates,) = _run(optim.make_optimizer(_config(name="adamw", **common)), steps=1)
    _, (lamb_updates,) = _run(optim.make_optimizer(_config(name="lamb", **common)), steps=1)
    # Excluded leaves: no decay, no trust ratio -> the plain Adam step, identical in both.
    for path in (("dense", "bias"), ("layer_norm", "norm", "scale")):
        np.testing.assert_allclose(_at(lamb_updates, path), _at(adamw_updates, path), rtol=1e-6)
    # Decayed leaf: the trust ratio rescales the update to lr * ||param||, unlike AdamW.
    lamb_kernel, adamw_kernel = _at(lamb_updates, ("dense", "kernel")), _at(adamw_updates, ("dense", "kernel"))
    np.testing.assert_allclose(np.linalg.norm(lamb_kernel), lr * np.linalg.norm(TOY_PARAMS["dense"]["kernel"]),
                               rtol=1e-5)
    assert not np.allclose(lamb_kernel, adamw_kernel, rtol=1e-2)


def _at(tree, path):
    for key in path:
        tree = tree[key]
    return np.asarray(tree)


def test_skip_nonfinite_keeps_params_and_moments():
    cfg = _config(learning_rate=0.1, warmup_steps=0, total_steps=10, decay="constant", skip_nonfinite=True)
    tx = optim.make_optimizer(cfg)
    params = jax.tree.map(jnp.asarray, TOY_PARAMS)
    state = tx.init(params)
    bad = jax.tree.map(lambda g: jnp.full_like(g, jnp.nan), TOY_GRADS[0])
    updates, new_state = tx.update(bad, state, params)
    assert all(float(jnp.abs(u).max()) == 0.0 for u in jax.tree.leaves(updates))
    assert not bool(new_state.last_finite) and int(new_state.total_notfinite) == 1
    for old, new in zip(jax.tree.leaves(state.inner_state), jax.tree.leaves(new_state.inner_state)):
        np.testing.assert_array_equal(np.asarray(old), np.asarray(new))
    updates, new_state = tx.update(jax.tree.map(jnp.asarray, TOY_GRADS[0]), new_state, params)
    assert bool(new_state.last_finite) and float(jnp.abs(updates["dense"]["kernel"]).max()) > 0
