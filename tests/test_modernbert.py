"""ModernBERT: parity with transformers' PyTorch ModernBERT both ways, RoPE with packing, banded attention.

The references are small random ``transformers`` models with local *and* global layers, a window
smaller than the sequence (so the banded kernel runs) and every weight perturbed; batches are padded.
Comparisons are fp32 at every real position (padding outputs are unspecified on both sides).
"""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from bert_jax import attention, banded_attention
from bert_jax.heads import PooledClassifier, PreTrainingModel, SpanModel, TokenClassifier
from bert_jax.interop import export, hf_convert, hf_files, hf_modernbert
from bert_jax.models import modernbert
from bert_jax.models.layers import unbox

ATOL = 1e-5
VOCAB, SEQ = 101, 40
# An odd config: 4 layers, global at 0 and 3, window 10 (5 each side) < SEQ, head_dim 12, GLU width 40.
HF_SIZES = dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=40, num_hidden_layers=4, num_attention_heads=4,
                max_position_embeddings=64, local_attention=10, global_attn_every_n_layers=3,
                global_rope_theta=1000.0, local_rope_theta=50.0, norm_eps=1e-5,
                pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2)
# ModernBERT's own choice (no biases) and every optional bias on, with mean pooling and the tanh GELU.
VARIANTS = {
    "no_bias": {},
    "all_bias": dict(norm_bias=True, attention_bias=True, mlp_bias=True, classifier_bias=True, decoder_bias=True,
                     classifier_pooling="mean", classifier_activation="gelu_pytorch_tanh"),
}


def _perturb(model):
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model.eval()


def _hf_config(variant, **extra):
    return transformers.ModernBertConfig(**HF_SIZES, **VARIANTS[variant], **extra)


def _padded_batch(seed=0):
    """Four rows of lengths 40, 31, 12 and 3 (right padding), ids of real tokens >= 3."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, VOCAB, (4, SEQ)).astype(np.int32)
    mask = np.zeros((4, SEQ), np.int32)
    for row, length in enumerate((SEQ, 31, 12, 3)):
        mask[row, :length] = 1
    ids = ids * mask
    return {"input_ids": ids, "segment_ids": np.zeros_like(ids), "sequence_ids": mask, "input_mask": mask,
            "position_ids": np.broadcast_to(np.arange(SEQ, dtype=np.int32), ids.shape).copy(),
            "masked_lm_positions": np.zeros((4, 1), np.int32)}


def _torch(batch):
    return dict(input_ids=torch.from_numpy(batch["input_ids"].astype(np.int64)),
                attention_mask=torch.from_numpy(batch["input_mask"].astype(np.int64)))


def _close_on_real_tokens(ours, ref, mask):
    real = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(ours)[real], ref[real], rtol=0, atol=ATOL)


@functools.cache
def _jitted(model, method=None):
    """``model.apply`` compiled once per (hashable) module and method."""
    return jax.jit(functools.partial(model.apply, method=method))


def _mlm_logits(cfg, params, batch):
    return _jitted(PreTrainingModel(cfg), PreTrainingModel.all_position_logits)({"params": params}, batch)


def _encode(cfg, params, input_ids, sequence_ids=None, position_ids=None):
    return _jitted(modernbert.ModernBertModel(cfg))({"params": params}, input_ids, None, sequence_ids, position_ids)


@pytest.fixture(scope="module", params=list(VARIANTS))
def hf_masked_lm(request, tmp_path_factory):
    torch.manual_seed(0)
    model = _perturb(transformers.ModernBertForMaskedLM(_hf_config(request.param)))
    path = tmp_path_factory.mktemp(f"modernbert_{request.param}")
    model.save_pretrained(path)
    reloaded = transformers.ModernBertForMaskedLM.from_pretrained(path, attn_implementation="eager").eval()
    return path, reloaded


def test_transformers_masked_lm_and_base_model_import_with_equal_outputs(hf_masked_lm):
    path, model = hf_masked_lm
    cfg, params, report = hf_files.load_hf_checkpoint(path)
    assert cfg.architecture == "modernbert" and cfg.global_attn_every_n_layers == 3
    assert (cfg.rope_theta, cfg.local_rope_theta, cfg.local_attention) == (1000.0, 50.0, 10)
    assert banded_attention.applies(modernbert.local_window(cfg), SEQ)
    assert report.unused == () and report.warnings == () and report.missing_heads == ()
    batch = _padded_batch()
    with torch.no_grad():
        ref = model(**_torch(batch)).logits.numpy()
        hidden_ref = model.model(**_torch(batch)).last_hidden_state.numpy()
    _close_on_real_tokens(_mlm_logits(cfg, params, batch), ref, batch["input_mask"])
    hidden, _ = _encode(cfg, params["bert"], batch["input_ids"], batch["sequence_ids"])
    _close_on_real_tokens(hidden, hidden_ref, batch["input_mask"])

    # The bare ModernBertModel's keys carry no "model." prefix; the MLM head is then initialised fresh.
    base_state = {k: v.numpy() for k, v in model.model.state_dict().items()}
    base_params, base_report = hf_convert.state_dict_to_params(hf_modernbert.CONVERSION, base_state, cfg)
    assert base_report.missing_heads == ("bert/pooler", "mlm_head")
    hidden, _ = _encode(cfg, base_params["bert"], batch["input_ids"], batch["sequence_ids"])
    _close_on_real_tokens(hidden, hidden_ref, batch["input_mask"])


def _random_params(cfg, seed, model=None, batch=None):
    """Our model's init (``PreTrainingModel`` unless ``model``), then noise on every leaf."""
    if model is None:
        params = hf_convert.init_pretraining_params(cfg, jax.random.key(seed))
    else:
        params = jax.jit(model.init)(jax.random.key(seed), batch)["params"]
    leaves, treedef = jax.tree.flatten(unbox(params))
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    return jax.tree.unflatten(treedef, [np.asarray(x + 0.1 * jax.random.normal(k, x.shape))
                                        for x, k in zip(leaves, keys)])


@pytest.mark.parametrize("variant", ["no_bias"])  # the biased layout is exported by the classification test
def test_export_loads_in_transformers_without_missing_keys_and_equal_outputs(variant, tmp_path):
    cfg = hf_modernbert.hf_config_to_model_config(_hf_config(variant).to_dict())
    params = _random_params(cfg, seed=3)
    batch = _padded_batch(seed=1)
    out = export.export_hf(params, cfg, tmp_path / "mlm")
    written = json.loads((out / "config.json").read_text())
    assert written["architectures"] == ["ModernBertForMaskedLM"] and written["model_type"] == "modernbert"
    model, info = transformers.ModernBertForMaskedLM.from_pretrained(out, attn_implementation="sdpa",
                                                                    output_loading_info=True)
    assert not any(info.values()), info
    with torch.no_grad():
        ref = model.eval()(**_torch(batch)).logits.numpy()
    _close_on_real_tokens(_mlm_logits(cfg, params, batch), ref, batch["input_mask"])

    base = export.export_hf(params, cfg, tmp_path / "base", architecture="ModernBertModel")
    encoder, info = transformers.ModernBertModel.from_pretrained(base, attn_implementation="eager",
                                                                 output_loading_info=True)
    assert not any(info.values()), info
    with torch.no_grad():
        hidden_ref = encoder.eval()(**_torch(batch)).last_hidden_state.numpy()
    hidden, _ = _encode(cfg, params["bert"], batch["input_ids"], batch["sequence_ids"])
    _close_on_real_tokens(hidden, hidden_ref, batch["input_mask"])

    # Round trip: the export imports back to the same tree.
    _, again, _ = hf_files.load_hf_checkpoint(out)
    for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(again), jax.tree.leaves(params)):
        if "pooler" not in jax.tree_util.keystr(path):  # the MLM class has no classification head
            np.testing.assert_array_equal(got, want, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("variant", ["all_bias"])  # mean pooling, every bias (no_bias: the MLM export test)
def test_sequence_classification_matches_transformers_both_ways(variant, tmp_path):
    torch.manual_seed(1)
    hf_cfg = _hf_config(variant, num_labels=3)
    model = _perturb(transformers.ModernBertForSequenceClassification(hf_cfg))
    model.config._attn_implementation = "eager"
    batch = _padded_batch(seed=2)
    with torch.no_grad():
        ref = model(**_torch(batch)).logits.numpy()
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    cfg = hf_modernbert.hf_config_to_model_config(hf_cfg.to_dict())
    params, report = hf_convert.state_dict_to_params(hf_modernbert.CONVERSION, state, cfg)
    assert report.task_heads == ("classifier",) and report.unused == ()
    classifier = PooledClassifier(cfg, num_outputs=3)
    ours = _jitted(classifier)({"params": {k: params[k] for k in ("bert", "classifier")}}, batch)
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=0, atol=ATOL)

    params = _random_params(cfg, seed=4, model=classifier, batch=batch)
    labels = {"id2label": {str(i): name for i, name in enumerate("abc")}, "label2id": {n: i for i, n in enumerate("abc")}}
    out = export.export_hf(params, cfg, tmp_path, architecture="ModernBertForSequenceClassification",
                           config_extras=labels)
    loaded, info = transformers.ModernBertForSequenceClassification.from_pretrained(
        out, attn_implementation="eager", output_loading_info=True)
    assert not any(info.values()), info
    with torch.no_grad():
        ref = loaded.eval()(**_torch(batch)).logits.numpy()
    np.testing.assert_allclose(np.asarray(_jitted(classifier)({"params": params}, batch)), ref, rtol=0, atol=ATOL)


# Token-level task -> (transformers class, outputs, variant): the prediction head on every token, then classifier.
TOKEN_TASKS = {"tagging": (transformers.ModernBertForTokenClassification, 5, "all_bias"),
               "span": (transformers.ModernBertForQuestionAnswering, 2, "no_bias")}


def _token_logits(kind, cfg, params, batch):
    """Our tagging logits ``[B, S, 5]`` or span ``[start, end]`` logits ``[B, S, 2]``."""
    if kind == "tagging":
        return np.asarray(_jitted(TokenClassifier(cfg, TOKEN_TASKS[kind][1]))({"params": params}, batch))
    out = _jitted(SpanModel(cfg))({"params": params}, batch)
    return np.stack([out["start_logits"], out["end_logits"]], axis=-1)


def _hf_token_logits(kind, model, batch):
    with torch.no_grad():
        out = model.eval()(**_torch(batch))
    if kind == "tagging":
        return out.logits.numpy()
    return np.stack([out.start_logits.numpy(), out.end_logits.numpy()], axis=-1)


@pytest.mark.parametrize("kind", list(TOKEN_TASKS))
def test_token_classification_and_question_answering_match_transformers_both_ways(kind, tmp_path):
    """ModernBertForTokenClassification / ForQuestionAnswering (``head`` on every token): import and export."""
    hf_class, outputs, variant = TOKEN_TASKS[kind]
    torch.manual_seed(2)
    model = _perturb(hf_class(_hf_config(variant, num_labels=outputs)))
    model.save_pretrained(tmp_path / "hf")
    model.config._attn_implementation = "eager"
    batch = _padded_batch(seed=3)
    cfg, params, report = hf_files.load_hf_checkpoint(tmp_path / "hf")
    assert hf_convert.hf_task_kind(hf_modernbert.CONVERSION, model.config.to_dict()) == kind
    assert report.task_heads == ("classifier",) and report.unused == () and report.missing_heads == ("mlm_head",)
    _close_on_real_tokens(_token_logits(kind, cfg, {k: params[k] for k in ("bert", "classifier")}, batch),
                          _hf_token_logits(kind, model, batch), batch["input_mask"])

    # Export: our model's tree (the shapes of its init), every leaf moved off the imported values.
    ours = TokenClassifier(cfg, outputs) if kind == "tagging" else SpanModel(cfg)
    shapes = unbox(jax.eval_shape(ours.init, jax.random.key(0), batch))["params"]
    rng = np.random.default_rng(5)
    params = jax.tree.map(lambda x, s: np.asarray(x + 0.1 * rng.standard_normal(s.shape), np.float32),
                          {k: params[k] for k in shapes}, shapes)
    assert sorted(params) == ["bert", "classifier"]
    labels = {"id2label": {str(i): f"T{i}" for i in range(outputs)}, "label2id": {f"T{i}": i for i in range(outputs)}}
    out = export.export_hf(params, cfg, tmp_path / "export", architecture=hf_modernbert.TASK_ARCHITECTURES[kind],
                           config_extras=labels if kind == "tagging" else None)
    loaded, info = hf_class.from_pretrained(out, attn_implementation="eager", output_loading_info=True)
    assert not any(info.values()), info
    _close_on_real_tokens(_token_logits(kind, cfg, params, batch), _hf_token_logits(kind, loaded, batch),
                          batch["input_mask"])


def test_packed_documents_encode_as_if_alone():
    """RoPE positions restart per packed sequence and the mask keeps documents apart (windowed too)."""
    cfg = hf_modernbert.hf_config_to_model_config(_hf_config("no_bias").to_dict())
    params = _random_params(cfg, seed=6)["bert"]
    rng = np.random.default_rng(3)
    first, second = rng.integers(3, VOCAB, 17), rng.integers(3, VOCAB, 14)
    ids = np.zeros((1, SEQ), np.int32)
    ids[0, :17], ids[0, 17:31] = first, second
    seq_ids = np.zeros_like(ids)
    seq_ids[0, :17], seq_ids[0, 17:31] = 1, 2
    positions = np.zeros_like(ids)
    positions[0, :17], positions[0, 17:31] = np.arange(17), np.arange(14)
    packed, _ = _encode(cfg, params, ids, seq_ids, positions)
    for doc, start in ((first, 0), (second, 17)):
        alone, _ = _encode(cfg, params, doc[None].astype(np.int32))
        np.testing.assert_allclose(np.asarray(packed)[0, start:start + len(doc)], np.asarray(alone)[0],
                                   rtol=0, atol=ATOL)


@pytest.mark.parametrize("window,length", [((5, 5), 40), ((3, 9), 37), ((0, 4), 29), ((16, 16), 72)])
def test_banded_attention_equals_the_dense_reference(window, length):
    """Values and gradients, with padding and two packed sequences per row."""
    assert banded_attention.applies(window, length)
    keys = jax.random.split(jax.random.key(0), 3)
    q, k, v = (jax.random.normal(key, (2, length, 3, 8)) for key in keys)
    seq = np.ones((2, length), np.int32)
    seq[0, length // 2:] = 2
    seq[1, length - 6:] = 0
    mask = attention.Mask(jnp.asarray(seq), window)
    real = seq > 0

    def loss(fn, *qkv):
        return jnp.sum(jnp.where(real[..., None, None], fn(*qkv), 0.0) ** 2)

    def banded(q, k, v):
        return banded_attention.banded_attention(q, k, v, mask.sequence_ids, window)

    def dense(q, k, v):
        return attention.reference_attention(q, k, v, mask)

    @jax.jit
    def outputs(q, k, v):
        grads = [jax.grad(functools.partial(loss, fn), argnums=(0, 1, 2))(q, k, v) for fn in (banded, dense)]
        # attend() picks the banded kernel for a windowed mask whatever the (non-cuDNN) request.
        chosen = [attention.attend(name, q, k, v, mask) for name in ("reference", "fused", "xla")]
        return banded(q, k, v), dense(q, k, v), grads, chosen

    got, want, (got_grads, want_grads), chosen = outputs(q, k, v)
    np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], atol=1e-5)
    for g, w in zip(got_grads, want_grads):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=1e-4)
    for out in chosen:
        np.testing.assert_allclose(np.asarray(out)[real], np.asarray(got)[real], atol=1e-6)


def _attention_temp_bytes(length, batch=1, heads=2, head_dim=16, window=(64, 64)):
    """Temp bytes XLA allocates for forward + backward of windowed attention at ``length`` (compiled only)."""
    shape = jax.ShapeDtypeStruct((batch, length, heads, head_dim), jnp.float32)
    ids = jax.ShapeDtypeStruct((batch, length), jnp.int32)

    def loss(q, k, v, seq):
        return jnp.sum(attention.attend("reference", q, k, v, attention.Mask(seq, window)) ** 2)

    compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(shape, shape, shape, ids).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_local_attention_memory_is_linear_in_length_at_8192():
    """At S=8192 with ModernBERT's 128-wide window: far below one [B, N, S, S] fp32 buffer, and ~linear."""
    long, short = _attention_temp_bytes(8192), _attention_temp_bytes(2048)
    dense_scores = 1 * 2 * 8192 * 8192 * 4  # one fp32 [B, N, S, S] buffer: 512 MiB
    band = 1 * 2 * 8192 * banded_attention.band_width((64, 64), 8192) * 4  # one fp32 [B, N, S, W] buffer
    assert long < dense_scores / 8 and long < 6 * band, (long, dense_scores, band)
    assert long < 4.5 * short, (long, short)  # 4x the length: ~4x the memory, not 16x


def test_scan_layers_and_irregular_layer_types_are_refused():
    cfg = hf_modernbert.hf_config_to_model_config(_hf_config("no_bias").to_dict(), scan_layers=True)
    with pytest.raises(ValueError, match="model.scan_layers=True"):
        hf_convert.init_pretraining_params(cfg, jax.random.key(0))
    bad = _hf_config("no_bias").to_dict()
    bad["layer_types"] = ["sliding_attention", "full_attention", "full_attention", "sliding_attention"]
    with pytest.raises(ValueError, match="config.json layer_types="):
        hf_modernbert.hf_config_to_model_config(bad)
    bad = _hf_config("no_bias").to_dict()
    bad["rope_parameters"]["full_attention"]["rope_type"] = "linear"
    with pytest.raises(ValueError, match="rope_type='linear'"):
        hf_modernbert.hf_config_to_model_config(bad)
