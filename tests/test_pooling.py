"""The three Sentence-BERT poolings against a per-row numpy computation, with adversarial padding.

Padding positions carry huge values (as a real encoder's hidden states at padding positions are
arbitrary), every hidden value of the real tokens is negative (so a zero fill instead of a large
negative one would win the maximum), and one row is all padding. The hidden states of the real MiniLM
pooled against transformers are in tests/test_inference.py.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import pooling
from bert_jax import heads

LENGTHS = [5, 1, 3, 0]  # real tokens per row; the last row is padding only
S, H = 6, 4


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    hidden = -np.abs(rng.normal(size=(len(LENGTHS), S, H))).astype(np.float32) - 0.1
    mask = (np.arange(S)[None, :] < np.array(LENGTHS)[:, None]).astype(np.int32)
    hidden[mask == 0] = 1e6  # padding must never count
    return hidden, mask


def _by_hand(hidden, pooling_name):
    rows = []
    for row, length in zip(hidden, LENGTHS):
        real = row[:length]
        if pooling_name == "cls":
            rows.append(row[0])
        elif length == 0:
            rows.append(np.zeros(H, np.float32))
        else:
            rows.append(real.mean(0) if pooling_name == "mean" else real.max(0))
    return np.stack(rows)


@pytest.mark.parametrize("name", pooling.POOLINGS)
def test_pooling_equals_a_per_row_computation_and_ignores_padding(batch, name):
    hidden, mask = batch
    pooled = np.asarray(pooling.pool(jnp.asarray(hidden), jnp.asarray(mask), name))
    assert pooled.shape == (len(LENGTHS), H) and pooled.dtype == np.float32
    np.testing.assert_allclose(pooled[:3], _by_hand(hidden, name)[:3], rtol=1e-6)
    if name != "cls":
        np.testing.assert_array_equal(pooled[3], 0.0)  # no real token: zeros, not 1e6 nor the fill value
        assert (pooled[:3] < 0).all()  # the real (negative) tokens won, not padding or the fill


def test_bfloat16_hidden_states_pool_in_float32(batch):
    hidden, mask = batch
    low = jnp.asarray(hidden, jnp.bfloat16)
    for name in pooling.POOLINGS:
        pooled = pooling.pool(low, jnp.asarray(mask), name)
        assert pooled.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(pooled)[:3], _by_hand(np.asarray(low, np.float32), name)[:3],
                                   rtol=1e-6)


def test_one_mean_pooling_for_embeddings_and_classification_heads():
    assert heads.mean_over_tokens is pooling.mean_pooling
    with pytest.raises(ValueError, match=r"pooling='sum'; expected one of \('cls', 'mean', 'max'\)"):
        pooling.pool(jnp.zeros((1, 2, 3)), jnp.ones((1, 2)), "sum")
