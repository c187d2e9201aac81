"""Attention implementations by name (bert_jax/attention.py): which one a call runs, and that they agree."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import attention
from bert_jax.config import ModelConfig
from bert_jax.models.bert import BertModel


@pytest.mark.parametrize("impl, dropout, deterministic, expected", [
    (None, 0.1, False, "reference"),  # BERT's default training: the fused kernels have no attention dropout
    (None, 0.1, True, "fused"),
    (None, 0.0, False, "fused"),
    ("auto", 0.0, True, "fused"),
    ("xla", 0.1, False, "reference"),
    ("xla", 0.1, True, "xla"),
    ("cudnn", 0.0, False, "cudnn"),
    ("reference", 0.0, True, "reference"),
])
def test_select(impl, dropout, deterministic, expected):
    config = ModelConfig.from_size("tiny", attention_impl=impl, attention_dropout=dropout)
    assert attention.select(config, deterministic) == expected


def test_describe_names_both_and_why():
    line = attention.describe(ModelConfig.from_size("tiny"))
    assert line.startswith("attention: model.attention_impl=None; training runs 'reference' (attention_dropout=0.1")
    assert line.endswith("evaluation runs 'fused'")
    assert "(" not in attention.describe(ModelConfig.from_size("tiny", attention_dropout=0.0))


def test_unknown_implementation_is_refused_naming_the_field():
    with pytest.raises(ValueError, match=r"model.attention_impl='flash'; expected None or one of"):
        ModelConfig.from_size("tiny", attention_impl="flash")


def test_implementations_agree_on_padded_rows():
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(2, 16, 2, 8)), jnp.float32) for _ in range(3))
    sequence_ids = np.ones((2, 16), np.int32)
    sequence_ids[1, 10:] = 0  # padding
    mask = attention.Mask(jnp.asarray(sequence_ids))
    reference = attention.attend("reference", q, k, v, mask)
    for name in ("fused", "xla"):
        np.testing.assert_allclose(attention.attend(name, q, k, v, mask), reference, atol=2e-6, rtol=2e-6)
    with pytest.raises(ValueError, match="has no dropout"):
        attention.attend("xla", q, k, v, mask, dropout=lambda p: p)


def test_encoder_output_is_the_same_with_the_reference_path_at_evaluation():
    config = ModelConfig.from_size("tiny", vocab_size=200, max_position_embeddings=32)
    ids = jnp.asarray(np.random.default_rng(1).integers(5, 200, size=(2, 32)), jnp.int32)
    params = BertModel(config).init(jax.random.PRNGKey(0), ids)
    fused, _ = BertModel(config).apply(params, ids)
    reference, _ = BertModel(config.replace(attention_impl="reference")).apply(params, ids)
    np.testing.assert_allclose(fused, reference, atol=1e-5)


def test_local_window_masks_keys_outside_the_band_in_every_implementation():
    rng = np.random.default_rng(2)
    q, k, v = (jnp.asarray(rng.normal(size=(2, 24, 2, 8)), jnp.float32) for _ in range(3))
    sequence_ids = np.ones((2, 24), np.int32)
    sequence_ids[0, 14:] = 2  # a second packed sequence
    sequence_ids[1, 20:] = 0  # padding
    mask = attention.Mask(jnp.asarray(sequence_ids), window=(3, 2))
    dense = np.asarray(mask.dense())
    offsets = np.arange(24)[None, :] - np.arange(24)[:, None]
    band = (offsets >= -3) & (offsets <= 2)
    global_dense = np.asarray(attention.Mask(jnp.asarray(sequence_ids)).dense())
    np.testing.assert_array_equal(dense, global_dense & band[None, None])
    assert dense[0, 0, 13, 14] == False and dense[0, 0, 13, 15] == False  # noqa: E712 - other sequence
    # Written out: each real query's softmax over its own sequence's keys in the band only.
    reference = np.asarray(attention.attend("reference", q, k, v, mask))
    b, i = 0, 10
    keys = [j for j in range(24) if dense[b, 0, i, j]]
    scores = np.einsum("nd,knd->nk", np.asarray(q)[b, i], np.asarray(k)[b, keys]) / np.sqrt(8)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    np.testing.assert_allclose(reference[b, i], np.einsum("nk,knd->nd", probs, np.asarray(v)[b, keys]), atol=1e-5)
    for name in ("fused", "xla"):
        np.testing.assert_allclose(attention.attend(name, q, k, v, mask), reference, atol=2e-6, rtol=2e-6)
