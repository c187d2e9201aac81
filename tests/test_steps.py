"""The jitted training steps (bert_jax/steps.py) on 8 simulated CPU devices and a tiny BERT.

Every layout (data, FSDP, tensor parallel) must give the single-device losses and parameters; gradient
accumulation must give the full-batch step; bf16 compute keeps fp32 parameters; the scanned layer
stack computes the same function as the looped one.
"""

import jax
import numpy as np
import pytest

from bert_jax import optim, sharding, steps
from bert_jax.config import ModelConfig
from bert_jax.tasks.pretraining import PretrainingTask
from tests.helpers import random_pretraining_batch

VOCAB, BATCH, SEQ, PREDICTIONS = 1000, 16, 32, 5
CONFIG = ModelConfig.from_size("tiny", vocab_size=VOCAB, hidden_dropout=0.0, attention_dropout=0.0)
RULES = sharding.DEFAULT_RULES
OPTIMIZER_CONFIG = dict(learning_rate=1e-3, warmup_steps=0, total_steps=100, decay="linear")
BATCHES = [random_pretraining_batch(seed, BATCH, SEQ, PREDICTIONS, VOCAB) for seed in (10, 11)]
LAYER = ("bert", "encoder", "layer_0")


def _optimizer_config(**overrides):
    cfg = optim.default_optimizer_config()
    cfg.update({**OPTIMIZER_CONFIG, **overrides})
    return cfg


def _at(tree, path):
    for key in path:
        tree = tree[key]
    return tree


class StepRunner:
    """A task + optimizer + mesh with its jitted step; runs restart from host copies of a state.

    With ``initial`` (a host ``TrainState``) the state is placed on the mesh with ``device_put``
    instead of being created by ``create_train_state`` (one compilation less).
    """

    def __init__(self, mesh_cfg, config=CONFIG, devices=None, initial=None, optimizer_overrides=None,
                 step_fn=steps.train_step, **step_kwargs):
        self.task = PretrainingTask(config, max_predictions=PREDICTIONS)
        self.optimizer = optim.make_optimizer(_optimizer_config(**(optimizer_overrides or {})))
        self.mesh = sharding.make_mesh(mesh_cfg, devices)
        if initial is None:
            self.state, self.shardings = steps.create_train_state(
                self.task, self.optimizer, self.mesh, RULES, rng=0, batch_size=BATCH, seq_len=SEQ)
            self.initial = jax.device_get(self.state)
        else:
            _, self.shardings = steps.abstract_train_state(self.task, self.optimizer, self.mesh, RULES)
            self.initial = initial
        self.step = steps.jit_train_step(step_fn, self.shardings, self.mesh, RULES, task=self.task,
                                         optimizer=self.optimizer, **step_kwargs)

    def run(self, batches, state=None):
        """Steps from ``state`` (host NumPy pytree, default: the initial state; device arrays would be
        donated); returns the host metrics and host states after each step."""
        state = jax.device_put(self.initial if state is None else state, self.shardings)
        metrics, states = [], []
        for batch in batches:
            state, step_metrics = self.step(state, sharding.shard_batch(batch, self.mesh))
            metrics.append(jax.device_get(step_metrics))
            states.append(jax.device_get(state))
        return metrics, states


ONE_DEVICE = dict(mesh_cfg={"data": 1}, devices=jax.devices()[:1])


@pytest.fixture(scope="module")
def reference():
    """Two steps on ONE device: the numbers every layout must reproduce."""
    trainer = StepRunner(**ONE_DEVICE, schedule=optim.make_schedule(_optimizer_config()))
    metrics, states = trainer.run(BATCHES)
    return trainer, metrics, states


def _assert_trees_close(got, want, atol, what):
    for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=0, atol=atol,
                                   err_msg=f"{what} {jax.tree_util.keystr(path)}")


def test_single_device_training_reduces_the_loss_and_reports_step_sums(reference):
    trainer, metrics, states = reference
    losses = [trainer.task.summarize(m)["loss"] for m in metrics]
    assert all(np.isfinite(losses))
    again, _ = trainer.run(BATCHES[:1], states[1])  # a third step, on the first batch again
    assert trainer.task.summarize(again[0])["loss"] < losses[0]
    first = metrics[0]
    assert first["steps"] == 1 and first["grad_norm_sum"] > 0
    assert first["learning_rate_sum"] == pytest.approx(1e-3) and metrics[1]["learning_rate_sum"] == pytest.approx(0.99e-3)
    assert first["mlm_weight"] == BATCHES[0]["masked_lm_weights"].sum() and first["nsp_count"] == BATCH
    assert [int(s.step) for s in states] == [1, 2]


# (mesh, expected local shard shapes of: query kernel [128, 2, 64], word embeddings [1000, 128],
#  intermediate kernel [128, 512]) under DEFAULT_RULES (embed -> fsdp; heads, vocab, mlp -> tensor).
LAYOUTS = {
    "data8": ({"data": 8}, (128, 2, 64), (1000, 128), (128, 512)),
    "data2_fsdp4": ({"data": 2, "fsdp": 4}, (32, 2, 64), (1000, 32), (32, 512)),
    "data2_fsdp2_tensor2": ({"data": 2, "fsdp": 2, "tensor": 2}, (64, 1, 64), (500, 64), (64, 256)),
}


@pytest.fixture(scope="module")
def layout_trainers():
    """One ``StepRunner`` per layout, created once (``create_train_state``) and shared by the tests."""
    return {name: StepRunner(mesh_cfg, schedule=optim.make_schedule(_optimizer_config()))
            for name, (mesh_cfg, *_) in LAYOUTS.items()}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_layouts_match_one_device_and_split_params_by_the_rules(layout, reference, layout_trainers):
    _, query_shape, embedding_shape, intermediate_shape = LAYOUTS[layout]
    ref_trainer, ref_metrics, ref_states = reference
    trainer = layout_trainers[layout]

    params = trainer.state.params
    expected = {
        LAYER + ("attention", "query", "kernel"): (("fsdp", "tensor", None), query_shape),
        ("bert", "embeddings", "word_embeddings"): (("tensor", "fsdp"), embedding_shape),
        LAYER + ("intermediate", "kernel"): (("fsdp", "tensor"), intermediate_shape),
    }
    adam_mu = trainer.state.opt_state[1][0].mu  # chain(clip, adamw=chain(scale_by_adam, ...))
    for path, (spec, shard_shape) in expected.items():
        for array in (_at(params, path), _at(adam_mu, path)):
            assert tuple(array.sharding.spec) == spec, path
            assert {shard.data.shape for shard in array.addressable_shards} == {shard_shape}, path
    _assert_trees_close(trainer.initial.params, ref_trainer.initial.params, 0, "initial params")

    metrics, states = trainer.run(BATCHES)
    for got, want in zip(metrics, ref_metrics):
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, err_msg=name)
    _assert_trees_close(states[-1].params, ref_states[-1].params, 1e-5, "params after 2 steps")


def test_train_step_donates_the_old_state(reference):
    trainer = reference[0]
    state = jax.device_put(trainer.initial, trainer.shardings)
    new_state, _ = trainer.step(state, sharding.shard_batch(BATCHES[0], trainer.mesh))
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(state))
    assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(new_state))


def _uneven(batch):
    """Leaves one real prediction per row in micro-batch 3 of 4 (rows 3, 7, 11, 15)."""
    batch = {name: value.copy() for name, value in batch.items()}
    batch["masked_lm_weights"][3::4, 1:] = 0
    return batch


def test_accumulate_step_equals_the_full_batch_step(layout_trainers):
    full = layout_trainers["data2_fsdp2_tensor2"]  # 4 batch shards of 4 rows: 1 row each per micro-batch
    accumulated = StepRunner(LAYOUTS["data2_fsdp2_tensor2"][0], initial=full.initial,
                          step_fn=steps.accumulate_step, num_micro_batches=4,
                          schedule=optim.make_schedule(_optimizer_config()))
    for batch in (BATCHES[0], _uneven(BATCHES[0])):
        counts = [int(batch["masked_lm_weights"][k::4].sum()) for k in range(4)]
        assert len(set(counts)) > 1, f"micro-batches should hold different numbers of predictions: {counts}"
        (full_metrics,), (full_state,) = full.run([batch])
        (acc_metrics,), (acc_state,) = accumulated.run([batch])
        assert set(acc_metrics) == set(full_metrics)
        for name in full_metrics:
            np.testing.assert_allclose(acc_metrics[name], full_metrics[name], rtol=1e-5, err_msg=name)
        _assert_trees_close(acc_state.params, full_state.params, 1e-6, "params")
        _assert_trees_close(acc_state.opt_state, full_state.opt_state, 1e-6, "optimizer state")


def test_split_micro_batches_interleaves_rows_and_rejects_bad_sizes():
    micro = steps.split_micro_batches(BATCHES[0], 4)
    assert micro["input_ids"].shape == (4, BATCH // 4, SEQ)
    np.testing.assert_array_equal(micro["input_ids"][1], BATCHES[0]["input_ids"][1::4])
    with pytest.raises(ValueError, match="batch size 16 is not divisible by num_micro_batches=3"):
        steps.split_micro_batches(BATCHES[0], 3)
    mesh = sharding.make_mesh({"data": 8})
    with sharding.axis_rules(mesh, RULES), pytest.raises(ValueError, match="over the mesh's 8 batch shards"):
        steps.split_micro_batches(BATCHES[0], 4)


def test_bf16_compute_keeps_fp32_params(reference):
    ref_trainer, ref_metrics, _ = reference
    trainer = StepRunner(**ONE_DEVICE, config=CONFIG.replace(dtype="bfloat16"), initial=ref_trainer.initial)
    metrics, states = trainer.run(BATCHES)
    assert {leaf.dtype for leaf in jax.tree.leaves(states[-1].params)} == {np.dtype(np.float32)}
    assert {leaf.dtype for leaf in jax.tree.leaves(states[-1].opt_state[1][0].mu)} == {np.dtype(np.float32)}
    loss, ref_loss = (trainer.task.summarize(m[0])["loss"] for m in (metrics, ref_metrics))
    assert np.isfinite(loss) and abs(loss - ref_loss) < 0.02 * ref_loss
    moved = np.abs(states[-1].params["nsp_head"]["kernel"] - trainer.initial.params["nsp_head"]["kernel"])
    assert moved.max() > 1e-4


def _stack_layers(params):
    encoder = params["bert"]["encoder"]
    layers = [encoder[f"layer_{i}"] for i in range(CONFIG.num_layers)]
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *layers)
    return {**params, "bert": {**params["bert"], "encoder": {"layers": stacked}}}


def test_scanned_layers_compute_the_same_loss_and_update(reference):
    ref_trainer, ref_metrics, ref_states = reference
    scanned = CONFIG.replace(scan_layers=True)
    optimizer = optim.make_optimizer(_optimizer_config())
    params = _stack_layers(ref_trainer.initial.params)
    start = ref_trainer.initial.replace(params=params, opt_state=jax.device_get(optimizer.init(params)))
    trainer = StepRunner(**ONE_DEVICE, config=scanned, initial=start)

    # Dropout is off, so the train step's metrics (on the initial params) are the eval sums.
    evaluate = steps.jit_eval_step(trainer.shardings.params, trainer.mesh, RULES, task=trainer.task)
    sums = evaluate(jax.device_put(params, trainer.shardings.params), sharding.shard_batch(BATCHES[0], trainer.mesh))
    assert set(sums) == {"mlm_loss_sum", "mlm_correct", "mlm_weight", "nsp_loss_sum", "nsp_correct", "nsp_count"}
    for name in sums:
        np.testing.assert_allclose(sums[name], ref_metrics[0][name], rtol=1e-5, err_msg=name)

    metrics, states = trainer.run(BATCHES[:1])
    np.testing.assert_allclose(metrics[0]["mlm_loss_sum"], ref_metrics[0]["mlm_loss_sum"], rtol=1e-5)
    _assert_trees_close(states[0].params, _stack_layers(ref_states[0].params), 1e-5, "params after 1 step")


def test_nonfinite_updates_are_skipped_when_configured(reference):
    ref_trainer = reference[0]
    params = ref_trainer.initial.params
    broken = jax.tree.map(lambda x: x, params)
    broken["nsp_head"]["kernel"] = np.full_like(params["nsp_head"]["kernel"], np.nan)
    overrides = {"skip_nonfinite": True}
    optimizer = optim.make_optimizer(_optimizer_config(**overrides))
    trainer = StepRunner(**ONE_DEVICE, initial=ref_trainer.initial.replace(opt_state=jax.device_get(optimizer.init(params))),
                      optimizer_overrides=overrides)
    for start_params, skipped in ((broken, 1.0), (params, 0.0)):
        (metrics,), (state,) = trainer.run(BATCHES[:1], trainer.initial.replace(params=start_params))
        assert metrics["skipped"] == skipped and int(state.step) == 1
        kernel = _at(state.params, LAYER + ("intermediate", "kernel"))
        assert np.array_equal(kernel, _at(params, LAYER + ("intermediate", "kernel"))) == bool(skipped)
