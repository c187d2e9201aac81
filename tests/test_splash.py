"""TPU splash attention (bert_jax/splash.py): the kernel against the reference in Pallas' interpreter on CPU,
"auto" picking it on TPU, and the real train step compiled for a compile-only v5e (libtpu) using it."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import aot, attention, splash
from bert_jax.config import ModelConfig
from configs import pretrain

SEQ = 128


@pytest.fixture(scope="module")
def packed_batch():
    """q, k, v ``[2, 128, 2, 32]`` and sequence ids: row 0 packs two sequences then padding; row 1 packs two."""
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(2, SEQ, 2, 32)), jnp.float32) for _ in range(3))
    ids = np.zeros((2, SEQ), np.int32)
    ids[0, :50], ids[0, 50:100] = 1, 2
    ids[1, :30], ids[1, 30:] = 1, 2
    return q, k, v, jnp.asarray(ids)


@pytest.mark.parametrize("window", [None, (8, 8), (16, 0)])
def test_kernel_matches_the_reference_on_real_tokens(packed_batch, window):
    q, k, v, ids = packed_batch
    real = np.asarray(ids) > 0
    mask = attention.Mask(ids, window)
    kernel = splash.splash_attention(q, k, v, ids, window=window, interpret=True)
    reference = attention.reference_attention(q, k, v, mask)
    np.testing.assert_allclose(np.asarray(kernel)[real], np.asarray(reference)[real], atol=2e-6, rtol=2e-6)
    weights = jnp.asarray(real, jnp.float32)[:, :, None, None]  # a loss that reads real tokens only
    grads = [jax.grad(lambda q, k, v, f=f: (f(q, k, v) * weights).sum(), (0, 1, 2))(q, k, v) for f in (
        lambda q, k, v: splash.splash_attention(q, k, v, ids, window=window, interpret=True),
        lambda q, k, v: attention.reference_attention(q, k, v, mask))]
    for kernel_grad, reference_grad in zip(*grads):
        np.testing.assert_allclose(kernel_grad, reference_grad, atol=5e-6, rtol=5e-6)


def test_padding_queries_attend_to_padding(packed_batch):
    q, k, v, ids = packed_batch
    out = splash.splash_attention(q, k, v, ids, interpret=True)
    padding = np.asarray(ids[0]) == 0
    scores = jnp.einsum("qnd,knd->nqk", q[0, padding], k[0, padding]) / np.sqrt(32)
    expected = jnp.einsum("nqk,knd->qnd", jax.nn.softmax(scores, axis=-1), v[0, padding])
    np.testing.assert_allclose(out[0, padding], expected, atol=2e-6)


def test_rows_not_a_multiple_of_128_are_refused():
    x = jnp.zeros((1, 64, 2, 32))
    with pytest.raises(ValueError, match="multiple of 128; got 64"):
        splash.splash_attention(x, x, x, jnp.ones((1, 64), jnp.int32), interpret=True)


@pytest.mark.parametrize("impl, dropout, deterministic, seq_len, platform, expected", [
    (None, 0.0, False, 512, "tpu", "splash"),
    ("auto", 0.1, True, 128, "tpu", "splash"),
    (None, 0.1, False, 512, "tpu", "reference"),  # attention dropout: no kernel has it
    (None, 0.0, False, 100, "tpu", "fused"),  # not a multiple of 128
    (None, 0.0, False, 512, "cpu", "fused"),
    ("splash", 0.0, True, 512, "cpu", "splash"),
])
def test_auto_picks_splash_on_tpu(impl, dropout, deterministic, seq_len, platform, expected):
    config = ModelConfig.from_size("tiny", attention_impl=impl, attention_dropout=dropout)
    assert attention.select(config, deterministic, seq_len=seq_len, platform=platform) == expected


def test_describe_names_splash_on_tpu():
    line = attention.describe(ModelConfig.from_size("tiny", attention_dropout=0.0), platform="tpu")
    assert "training runs 'splash'" in line and "evaluation runs 'splash'" in line and "multiple of 128" in line


# --- the real train step, compiled for a compile-only v5e-8 (libtpu) -------------------------------------

def _float_square_buffers(hlo: str, seq_len: int) -> list[str]:
    """Float arrays whose two minor dimensions are ``[S, S]`` (attention scores or probabilities)."""
    return re.findall(rf"\b(?:f32|bf16|f16)\[(?:\d+,)*{seq_len},{seq_len}\]", hlo)


def _compiled_step_hlo(attention_impl, seq_len=512):
    config = pretrain.get_config("size=tiny,phase=2,ablation=roberta")  # packed rows, no NSP
    config.model.vocab_size, config.model.scan_layers, config.model.attention_dropout = 384, True, 0.0
    config.model.intermediate_size = 384  # no dimension of 512 but the sequence
    config.model.attention_impl = attention_impl
    config.data.max_seq_length, config.data.max_predictions_per_seq = seq_len, 16
    config.train.batch_size, config.sharding.mesh.data = 8, -1
    devices = aot.target_devices(aot.parse_target("v5e-8"))
    _, lowered = aot.lower_train_step(config, devices)
    return lowered.compile().as_text()


@pytest.fixture(scope="module")
def tpu_hlo():
    pytest.importorskip("libtpu", reason="TPU targets need libtpu (requirements-test.txt)")
    return {impl: _compiled_step_hlo(impl) for impl in (None, "reference")}


def test_tpu_train_step_runs_the_splash_kernel_without_score_buffers(tpu_hlo):
    hlo = tpu_hlo[None]  # "auto" on a TPU target
    assert 'custom_call_target="tpu_custom_call"' in hlo and "splash_mha" in hlo
    assert _float_square_buffers(hlo, 512) == []
    # The check sees score buffers where they exist: the reference path materialises [b, N, S, S].
    assert _float_square_buffers(tpu_hlo["reference"], 512)
    assert "splash_mha" not in tpu_hlo["reference"]


def test_local_window_forward_and_backward_compile_to_the_kernel_on_tpu():
    """No architecture in the registry has a window yet: the attention call of a layer (attend + its
    gradient, under the mesh and rules of a train step) with ``Mask(window=...)`` on a v5e-8."""
    pytest.importorskip("libtpu", reason="TPU targets need libtpu (requirements-test.txt)")
    from jax.sharding import NamedSharding, PartitionSpec

    from bert_jax import sharding

    mesh = sharding.make_mesh({"data": -1}, aot.target_devices(aot.parse_target("v5e-8")))
    batch, seq_len, heads, head_dim = 16, 512, 4, 64

    def loss_and_grads(q, k, v, ids):
        with sharding.axis_rules(mesh, sharding.DEFAULT_RULES):
            def loss(q, k, v):
                context = attention.attend("splash", q, k, v, attention.Mask(ids, window=(64, 64)))
                return context.astype(jnp.float32).sum()
            return jax.value_and_grad(loss, argnums=(0, 1, 2))(q, k, v)

    split = NamedSharding(mesh, PartitionSpec(sharding.BATCH_AXES))
    qkv = jax.ShapeDtypeStruct((batch, seq_len, heads, head_dim), jnp.bfloat16, sharding=split)
    ids = jax.ShapeDtypeStruct((batch, seq_len), jnp.int32, sharding=split)
    compiled = jax.jit(loss_and_grads).lower(qkv, qkv, qkv, ids).compile()
    hlo = compiled.as_text()
    assert hlo.count('custom_call_target="tpu_custom_call"') >= 2 and "splash_mha_fwd" in hlo  # forward + backward
    assert _float_square_buffers(hlo, seq_len) == []
    assert "all-gather" not in hlo  # each device runs its own rows: the kernel is inside shard_map
