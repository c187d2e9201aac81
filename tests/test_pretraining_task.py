"""The pretraining objective (bert_jax/tasks): MLM + NSP sums, loss, padding, additivity, dispatch."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax.config import ModelConfig
from bert_jax.models.layers import unbox
from bert_jax.tasks import get_task
from bert_jax.tasks.base import summarize
from bert_jax.tasks.pretraining import PretrainingTask
from data_pipelines import batch as batch_lib
from tests.helpers import random_pretraining_batch

def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _reference(mlm_logits, nsp_logits, batch, nsp_weight):
    """NumPy float64 MLM + NSP loss/accuracies straight from the definitions."""
    weights = batch["masked_lm_weights"].astype(np.float64)
    labels = batch["masked_lm_ids"]
    mlm_nll = -np.take_along_axis(_log_softmax(mlm_logits), labels[..., None], axis=-1)[..., 0]
    real_rows = batch["input_mask"].max(axis=1) > 0
    nsp_labels = batch["next_sentence_label"][real_rows]
    nsp_nll = -_log_softmax(nsp_logits[real_rows])[np.arange(real_rows.sum()), nsp_labels]
    return {
        "loss": (mlm_nll * weights).sum() / weights.sum() + nsp_weight * nsp_nll.mean(),
        "mlm_accuracy": ((mlm_logits.argmax(-1) == labels) * weights).sum() / weights.sum(),
        "nsp_accuracy": (nsp_logits[real_rows].argmax(-1) == nsp_labels).mean(),
    }


@pytest.fixture(scope="module")
def task():
    config = ModelConfig.from_size("tiny", vocab_size=1200, hidden_dropout=0.0, attention_dropout=0.0)
    return get_task("pretraining", config, max_predictions=5, nsp_weight=1.0)


@pytest.fixture(scope="module")
def params(task):
    return unbox(jax.jit(task.init_params)(jax.random.PRNGKey(0)))


@pytest.fixture(scope="module")
def loss_and_metrics(task):
    """``task.loss_and_metrics`` jitted (one compile per shape beats op-by-op dispatch of the model)."""
    return jax.jit(task.loss_and_metrics, static_argnums=3)


@pytest.fixture(scope="module")
def batch():
    return random_pretraining_batch(seed=1, batch_size=6, seq_len=24, max_predictions=5, vocab_size=1200)


def test_metric_sums_match_numpy_on_hand_built_logits(task):
    rng = np.random.default_rng(0)
    batch = batch_lib.zeros_batch(B=3, S=4, P=4)
    batch["input_mask"][:2] = 1  # row 2 is a padding row: no predictions, not counted for NSP
    batch["masked_lm_ids"][:] = [[3, 1, 6, 0], [2, 2, 5, 4], [1, 1, 1, 1]]
    batch["masked_lm_weights"][:] = [[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]]
    batch["next_sentence_label"][:] = [1, 0, 1]
    mlm_logits = rng.normal(size=(3, 4, 7)).astype(np.float32)
    nsp_logits = rng.normal(size=(3, 2)).astype(np.float32)

    sums = task.metric_sums({"mlm_logits": jnp.asarray(mlm_logits), "nsp_logits": jnp.asarray(nsp_logits)}, batch)
    expected = _reference(mlm_logits, nsp_logits, batch, nsp_weight=1.0)

    assert float(sums["mlm_weight"]) == 5 and float(sums["nsp_count"]) == 2
    means = task.summarize(sums)
    for name in ("loss", "mlm_accuracy", "nsp_accuracy"):
        np.testing.assert_allclose(means[name], expected[name], rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(float(task.loss_from_sums(sums)), expected["loss"], rtol=1e-5)


def test_model_loss_equals_numpy_reference(task, params, batch, loss_and_metrics):
    loss, sums = loss_and_metrics(params, batch, None, True)
    outputs = jax.jit(task.apply, static_argnums=3)(params, batch, None, True)
    expected = _reference(np.asarray(outputs["mlm_logits"]), np.asarray(outputs["nsp_logits"]), batch, 1.0)
    assert loss.dtype == jnp.float32 and loss.shape == ()
    np.testing.assert_allclose(float(loss), expected["loss"], rtol=1e-5)
    assert float(sums["mlm_weight"]) == batch["masked_lm_weights"].sum()
    assert float(sums["nsp_count"]) == batch["input_mask"].shape[0]
    # A tiny random model's MLM loss is close to log(vocab) (uniform predictions).
    assert abs(float(sums["mlm_loss_sum"] / sums["mlm_weight"]) - math.log(1200)) < 0.5


def test_padding_predictions_do_not_change_the_loss(task, params, batch, loss_and_metrics):
    changed = {name: value.copy() for name, value in batch.items()}
    padding = changed["masked_lm_weights"] == 0
    assert padding.any(), "the test batch must contain padding predictions"
    changed["masked_lm_ids"][padding] = 7  # arbitrary label...
    changed["masked_lm_positions"][padding] = 3  # ...at an arbitrary real position
    loss, sums = loss_and_metrics(params, batch, None, True)
    changed_loss, changed_sums = loss_and_metrics(params, changed, None, True)
    assert float(changed_loss) == pytest.approx(float(loss), rel=1e-6)
    for name in sums:
        assert float(changed_sums[name]) == pytest.approx(float(sums[name]), rel=1e-6), name


def test_sums_of_two_half_batches_equal_the_full_batch(task, params, batch, loss_and_metrics):
    halves = [{name: value[rows] for name, value in batch.items()} for rows in (slice(0, 3), slice(3, 6))]
    loss, full = loss_and_metrics(params, batch, None, True)
    half_sums = [loss_and_metrics(params, half, None, True)[1] for half in halves]
    added = jax.tree.map(jnp.add, *half_sums)
    assert set(added) == set(full)
    for name in full:
        np.testing.assert_allclose(float(added[name]), float(full[name]), rtol=1e-5, err_msg=name)
    # Each half's loss over the FULL batch's denominators adds up to the full-batch loss.
    denominators = task.denominators(batch)
    assert {name: float(v) for name, v in denominators.items()} == {
        "mlm_weight": float(full["mlm_weight"]), "nsp_count": float(full["nsp_count"])}
    half_losses = [loss_and_metrics(params, half, None, True, denominators)[0] for half in halves]
    np.testing.assert_allclose(float(sum(half_losses)), float(loss), rtol=1e-5)


def test_nsp_weight_zero_is_mlm_only(task, params, batch):
    mlm_only = PretrainingTask(task.model_config, max_predictions=5, nsp_weight=0.0)
    loss, sums = jax.jit(mlm_only.loss_and_metrics, static_argnums=3)(params, batch, None, True)
    assert set(sums) == {"mlm_loss_sum", "mlm_correct", "mlm_weight"}
    np.testing.assert_allclose(float(loss), float(sums["mlm_loss_sum"] / sums["mlm_weight"]), rtol=1e-6)


def test_dropout_uses_the_rng():
    config = ModelConfig.from_size("tiny", vocab_size=1200)  # dropout 0.1
    task = get_task("pretraining", config, max_predictions=5)
    params = unbox(jax.jit(task.init_params)(jax.random.PRNGKey(0)))
    batch = random_pretraining_batch(seed=2, batch_size=2, seq_len=16, max_predictions=5, vocab_size=1200)
    loss_fn = jax.jit(task.loss_and_metrics, static_argnums=3)
    losses = [float(loss_fn(params, batch, jax.random.PRNGKey(k), False)[0]) for k in (0, 0, 1)]
    assert losses[0] == losses[1] and losses[0] != losses[2]


def test_summarize_means_counts_and_empty_denominators():
    sums = {"mlm_loss_sum": 6.0, "mlm_weight": 3.0, "nsp_correct": 0.0, "nsp_count": 0.0, "skipped": 2.0,
            "grad_norm_sum": 3.0, "steps": 2.0}
    ratios = {"mlm_loss": ("mlm_loss_sum", "mlm_weight"), "nsp_accuracy": ("nsp_correct", "nsp_count"),
              "grad_norm": ("grad_norm_sum", "steps"), "mlm_accuracy": ("mlm_correct", "mlm_weight")}
    means = summarize(sums, ratios)
    assert means["mlm_loss"] == 2.0 and means["grad_norm"] == 1.5 and means["skipped"] == 2.0
    assert math.isnan(means["nsp_accuracy"])
    assert "mlm_accuracy" not in means and "steps" not in means
    with pytest.raises(ValueError, match="denominator 'mlm_weight'"):
        summarize({"mlm_loss_sum": 1.0}, ratios)


def test_init_batch_head_names_and_dispatch(task):
    init = task.init_batch(batch_size=2, seq_len=16)
    assert batch_lib.validate_batch(init) == {"B": 2, "S": 16, "P": 5}
    assert task.head_names == ("mlm_head", "nsp_head")
    with pytest.raises(ValueError, match="unknown task 'glu'"):
        get_task("glu", task.model_config)
    with pytest.raises(ValueError, match="nsp_weight"):
        get_task("pretraining", task.model_config, nsp_weight=-1.0)
