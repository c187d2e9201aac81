"""DeBERTa-v2/v3 (``model.architecture="deberta_v2"``): parity with transformers 5's PyTorch DeBERTa-v2.

Small random ``transformers`` models (every weight perturbed, so a swapped or mis-transposed tensor
cannot pass) with ``position_buckets`` smaller than the sequence, so log-bucketed offsets are exercised;
padded batches; fp32 within 1e-5 at the real positions (padding rows differ by design: transformers
lets a padding query attend to nothing, giving uniform weights, ours lets it attend to the real keys).
"""

import json

import jax
import numpy as np
import pytest
import torch
import transformers
from transformers.models.deberta_v2 import modeling_deberta_v2

from bert_jax.config import ModelConfig
from bert_jax.heads import PooledClassifier, PreTrainingModel
from bert_jax.interop import export, hf_convert, hf_deberta, hf_files
from bert_jax.models import deberta
from bert_jax.models.deberta import DebertaV2Model
from bert_jax.models.layers import unbox
from tests.helpers import assert_layouts_match_one_device

ATOL = 1e-5
SEQ = 24
# v3 style (shared keys, both terms, normalised relative embeddings, no absolute positions, no token
# types) and the other branches (own position projections, c2p only, exact offsets, absolute
# positions, token types, the legacy=False head spelling).
HF_CONFIGS = {
    "v3": dict(position_buckets=8, max_relative_positions=32, pos_att_type="p2c|c2p", share_att_key=True,
               norm_rel_ebd="layer_norm", position_biased_input=False, type_vocab_size=0, hidden_act="gelu",
               legacy=True),
    "v1_like": dict(position_buckets=-1, max_relative_positions=6, pos_att_type=["c2p"], share_att_key=False,
                    norm_rel_ebd="none", position_biased_input=True, type_vocab_size=2, hidden_act="gelu_new",
                    legacy=False),
}
SIZES = dict(vocab_size=211, hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=80,
             max_position_embeddings=64, relative_attention=True, layer_norm_eps=1e-7)


def _batch(seed=0, b=3):
    """Random ids with rows of different lengths (padding 0) and token types 0/1."""
    rng = np.random.default_rng(seed)
    lengths = [SEQ, SEQ - 7, 9][:b]
    ids = np.zeros((b, SEQ), np.int32)
    mask = np.zeros((b, SEQ), np.int32)
    types = np.zeros((b, SEQ), np.int32)
    for row, length in enumerate(lengths):
        ids[row, :length] = rng.integers(5, SIZES["vocab_size"], length)
        mask[row, :length] = 1
        types[row, length // 2:length] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def _ours(enc):
    b, s = enc["input_ids"].shape
    return {"input_ids": enc["input_ids"], "segment_ids": enc["token_type_ids"], "sequence_ids": enc["attention_mask"],
            "input_mask": enc["attention_mask"], "position_ids": np.broadcast_to(np.arange(s, dtype=np.int32), (b, s)),
            "masked_lm_positions": np.zeros((b, 1), np.int32)}


def _torch(enc):
    return {k: torch.from_numpy(v.astype(np.int64)) for k, v in enc.items()}


def _real(x, enc):
    return np.asarray(x)[enc["attention_mask"].astype(bool)]


def _apply(module, variables, *args, method=None):
    """``module.apply`` compiled (one XLA program instead of op-by-op dispatch)."""
    return jax.jit(lambda v, *a: module.apply(v, *a, method=method))(variables, *args)


def _perturb(model):
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model.eval()


@pytest.fixture(scope="module", params=sorted(HF_CONFIGS))
def hf_mlm(request, tmp_path_factory):
    """A perturbed random ``DebertaV2ForMaskedLM`` saved with ``save_pretrained``."""
    torch.manual_seed(0)
    config = transformers.DebertaV2Config(**SIZES, **HF_CONFIGS[request.param])
    model = _perturb(transformers.DebertaV2ForMaskedLM(config))
    path = tmp_path_factory.mktemp(f"deberta_{request.param}")
    model.save_pretrained(path)
    return request.param, path, model


def test_log_buckets_match_transformers():
    for length, buckets, max_position in ((1024, 256, 512), (40, 8, 32), (700, 64, 128)):
        rel = torch.arange(length)[:, None] - torch.arange(length)[None, :]
        want = modeling_deberta_v2.make_log_bucket_position(rel, buckets, max_position).long().numpy()
        table = deberta.log_bucket_table(length, buckets, max_position)
        np.testing.assert_array_equal(table[rel.numpy() + length - 1], want)


@pytest.mark.parametrize("scan_layers", [False, True], ids=["looped", "scanned"])
def test_import_matches_transformers_masked_lm_and_model(hf_mlm, scan_layers):
    name, path, model = hf_mlm
    cfg, params, report = hf_files.load_hf_checkpoint(path, scan_layers=scan_layers)
    assert cfg.architecture == "deberta_v2" and cfg.scan_layers == scan_layers
    assert report.missing_heads == ("bert/pooler",) and report.unused == () and report.warnings == ()
    dummy = np.zeros((1, 1), np.int32)
    expected = unbox(jax.eval_shape(PreTrainingModel(cfg).init, jax.random.key(0), dict(
        input_ids=dummy, segment_ids=dummy, sequence_ids=dummy + 1, position_ids=dummy, masked_lm_positions=dummy)))
    assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, expected["params"])

    enc = _batch()
    with torch.no_grad():
        logits_ref = model(**_torch(enc)).logits.numpy()
        hidden_ref = model.deberta(**_torch(enc)).last_hidden_state.numpy()
    for impl in ("reference", None):  # the einsum core and jax.nn.dot_product_attention(bias=...)
        run_cfg = cfg.replace(attention_impl=impl)
        logits = _apply(PreTrainingModel(run_cfg), {"params": params}, _ours(enc),
                        method=PreTrainingModel.all_position_logits)
        np.testing.assert_allclose(_real(logits, enc), _real(logits_ref, enc), rtol=0, atol=ATOL)
        hidden, _ = _apply(DebertaV2Model(run_cfg), {"params": params["bert"]}, enc["input_ids"],
                           enc["token_type_ids"], enc["attention_mask"])
        np.testing.assert_allclose(_real(hidden, enc), _real(hidden_ref, enc), rtol=0, atol=ATOL)


def _noisy(params, seed):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    noisy = [np.asarray(x + 0.1 * jax.random.normal(k, x.shape)) for x, k in zip(leaves, keys)]
    return jax.tree.unflatten(treedef, noisy)


def _config(name, **overrides):
    hf = {**SIZES, **HF_CONFIGS[name], "model_type": "deberta-v2"}
    return hf_deberta.hf_config_to_model_config(hf, **overrides)


@pytest.mark.parametrize("name", sorted(HF_CONFIGS))
def test_export_loads_in_transformers_with_equal_outputs(name, tmp_path):
    cfg = _config(name)
    params = _noisy(hf_convert.init_pretraining_params(cfg, jax.random.key(3)), seed=4)
    out = export.export_hf(hf_convert.stack_layers(params), cfg.replace(scan_layers=True), tmp_path / "mlm")
    assert json.loads((out / "config.json").read_text())["architectures"] == ["DebertaV2ForMaskedLM"]
    model, info = transformers.DebertaV2ForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info
    enc = _batch(seed=1)
    with torch.no_grad():
        logits_ref = model.eval()(**_torch(enc)).logits.numpy()
    logits = _apply(PreTrainingModel(cfg), {"params": params}, _ours(enc), method=PreTrainingModel.all_position_logits)
    np.testing.assert_allclose(_real(logits, enc), _real(logits_ref, enc), rtol=0, atol=ATOL)

    base = export.export_hf({"bert": params["bert"]}, cfg, tmp_path / "base")
    encoder, info = transformers.DebertaV2Model.from_pretrained(base, output_loading_info=True)
    assert not any(info.values()), info
    assert json.loads((base / "config.json").read_text())["architectures"] == ["DebertaV2Model"]


def test_sequence_classification_export_matches_context_pooler_logits(tmp_path):
    cfg = _config("v3")
    enc = _batch(seed=2)
    model = PooledClassifier(cfg, num_outputs=3)
    params = _noisy(unbox(model.init(jax.random.key(0), _ours(enc)))["params"], seed=7)
    out = export.export_hf(params, cfg, tmp_path / "cls", architecture="DebertaV2ForSequenceClassification",
                           config_extras={"id2label": {"0": "a", "1": "b", "2": "c"},
                                          "label2id": {"a": 0, "b": 1, "c": 2}})
    hf_model, info = transformers.DebertaV2ForSequenceClassification.from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info
    with torch.no_grad():
        logits_ref = hf_model.eval()(**_torch(enc)).logits.numpy()
    logits = _apply(model, {"params": params}, _ours(enc))
    np.testing.assert_allclose(np.asarray(logits), logits_ref, rtol=0, atol=ATOL)
    cfg_back, params_back, report = hf_files.load_hf_checkpoint(out)  # and back, the head with it
    assert report.task_heads == ("classifier",) and report.missing_heads == ("mlm_head",)
    logits_back = _apply(model, {"params": {k: params_back[k] for k in ("bert", "classifier")}}, _ours(enc))
    np.testing.assert_allclose(np.asarray(logits_back), logits_ref, rtol=0, atol=ATOL)
    assert cfg_back == cfg


def test_config_errors_name_the_field():
    hf = {**SIZES, **HF_CONFIGS["v3"], "model_type": "deberta-v2"}
    for bad, match in (({"conv_kernel_size": 3}, "conv_kernel_size=3"), ({"relative_attention": False},
                       "relative_attention"), ({"embedding_size": 32}, "embedding_size=32"),
                       ({"model_type": "bert"}, "model_type='bert'")):
        with pytest.raises(ValueError, match=match):
            hf_deberta.hf_config_to_model_config({**hf, **bad})
    with pytest.raises(ValueError, match="model.pos_att_type='c2q'"):
        ModelConfig.from_size("tiny", architecture="deberta_v2", pos_att_type="c2q")
    with pytest.raises(ValueError, match="position_biased_input"):
        ModelConfig.from_size("tiny", architecture="deberta_v2", enhanced_mask_decoder=True, position_biased_input=True)


def test_enhanced_mask_decoder_reuses_the_last_layer_at_the_masked_positions():
    """EMD: two passes of the last layer (its weights), queries ``H + P`` at the masked positions only,
    keys/values the second-to-last hidden states; same logits as computing it at every position."""
    cfg = ModelConfig.from_size("tiny", architecture="deberta_v2", vocab_size=SIZES["vocab_size"], hidden_size=32,
                                num_heads=2, intermediate_size=64, max_position_embeddings=64, position_buckets=8,
                                type_vocab_size=0, enhanced_mask_decoder=True)
    enc = _batch(seed=3)
    batch = {**_ours(enc), "masked_lm_positions": np.array([[1, 5, 20], [0, 3, 16], [2, 8, 0]], np.int32)}
    model = PreTrainingModel(cfg)
    params = unbox(model.init(jax.random.key(0), batch))["params"]
    assert params["bert"]["embeddings"]["position_embeddings"].shape == (64, 32)
    masked = _apply(model, {"params": params}, batch)["mlm_logits"]
    every = _apply(model, {"params": params}, batch, method=PreTrainingModel.all_position_logits)
    want = np.take_along_axis(np.asarray(every), batch["masked_lm_positions"][..., None], axis=1)
    np.testing.assert_allclose(np.asarray(masked), want, rtol=0, atol=1e-5)
    plain = PreTrainingModel(cfg.replace(enhanced_mask_decoder=False))
    no_emd = _apply(plain, {"params": {**params, "bert": {**params["bert"], "embeddings": {
        k: v for k, v in params["bert"]["embeddings"].items() if k != "position_embeddings"}}}}, batch)["mlm_logits"]
    assert np.isfinite(np.asarray(masked)).all()
    assert np.abs(np.asarray(no_emd) - np.asarray(masked)).max() > 1e-3  # the decoder changes the logits
    scanned = _apply(PreTrainingModel(cfg.replace(scan_layers=True)), {"params": hf_convert.stack_layers(params)},
                     batch)["mlm_logits"]
    np.testing.assert_allclose(np.asarray(scanned), np.asarray(masked), rtol=0, atol=1e-5)


def test_layouts_match_one_device():
    assert_layouts_match_one_device(ModelConfig.from_size(
        "tiny", architecture="deberta_v2", vocab_size=128, hidden_size=32, num_heads=4, intermediate_size=64,
        max_position_embeddings=64, position_buckets=8, type_vocab_size=0, enhanced_mask_decoder=True))
