"""Rematerialisation policies (``ModelConfig.remat_policy``, ``jax.checkpoint_policies`` in ``LayerStack``).

Every policy computes the same gradients (dropout on: the recomputed layers redraw the same masks).

Not asserted: the compiled temporary memory ordering full < dots_saveable < none. On XLA:CPU (jax 0.10.2)
``memory_analysis().temp_size_in_bytes`` of this gradient came out full == none and dots_saveable larger
(tiny, 4 layers, 4 x 256: 79.0 / 79.0 / 87.4 MB without dropout), so the CPU compiler's figure does not show
the policies' effect; it has to be measured on a GPU/TPU (docs/benchmarks.md).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from bert_jax.config import REMAT_POLICIES, ModelConfig
from bert_jax.models import layers
from bert_jax.models.layers import unbox
from bert_jax.tasks import get_task
from tests.helpers import random_pretraining_batch

BASE = ModelConfig.from_size("tiny", vocab_size=1000, max_position_embeddings=64, attention_impl="reference")
BATCH = random_pretraining_batch(0, batch_size=4, seq_len=64, max_predictions=8, vocab_size=1000)


@pytest.fixture(scope="module")
def compiled():
    """policy -> gradients of the pretraining loss, dropout on, one fixed key."""
    results = {}
    params = None
    for policy in REMAT_POLICIES:
        task = get_task("pretraining", BASE.replace(remat_policy=policy), max_predictions=8)
        if params is None:
            params = unbox(task.init_params(jax.random.key(0)))
        grad = jax.jit(jax.grad(lambda p, b: task.loss_and_metrics(p, b, jax.random.key(1), False)[0]))
        results[policy] = jax.device_get(grad(params, BATCH))
    return results


def test_policies_compute_the_same_gradients(compiled):
    reference = compiled["none"]
    for policy in REMAT_POLICIES[1:]:
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=policy),
                     compiled[policy], reference)


def test_boolean_remat_still_means_full_and_names_are_checked():
    assert BASE.effective_remat_policy == "none" and BASE.replace(remat=True).effective_remat_policy == "full"
    assert BASE.replace(remat=True, remat_policy="dots_saveable").effective_remat_policy == "dots_saveable"
    assert set(layers.REMAT_POLICIES) == set(REMAT_POLICIES) - {"none"}
    with pytest.raises(ValueError, match="model.remat_policy='everything'"):
        ModelConfig(remat_policy="everything")
