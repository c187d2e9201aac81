"""Longformer: parity with transformers' Longformer both ways (global attention included), linear memory.

The reference is a small random ``transformers`` Longformer with every weight perturbed, windows that
differ per layer (8 and 4 tokens) and a padded batch of 37 tokens (which transformers pads to a multiple
of the window); comparisons are fp32 at every position, padding included.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from bert_jax.config import ModelConfig
from bert_jax.heads import PreTrainingModel
from bert_jax.interop import export, hf_convert, hf_files, hf_longformer
from bert_jax.models import longformer
from bert_jax.models.layers import unbox

ATOL = 1e-5
VOCAB, PAD, SEQ = 300, 1, 37
LENGTHS = (37, 30, 21)
HF_SIZES = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                max_position_embeddings=SEQ + 2 + 8, type_vocab_size=2, pad_token_id=PAD, attention_window=[8, 4])


def _inputs():
    """A padded batch (ids, attention mask, token types, global attention mask), int32 numpy."""
    rng = np.random.default_rng(0)
    ids = rng.integers(3, VOCAB, size=(len(LENGTHS), SEQ)).astype(np.int32)
    mask = np.zeros_like(ids)
    types = np.zeros_like(ids)
    for row, length in enumerate(LENGTHS):
        ids[row, 0], ids[row, length - 1] = 0, 2
        ids[row, length:] = PAD
        mask[row, :length] = 1
        types[row, length // 2:length] = 1
    glob = np.zeros_like(ids)
    glob[:, 0] = 1
    glob[0, [5, 17, 36]] = 1
    glob[2, [3, 20, 30]] = 1  # 30 is padding: no effect
    return ids, mask, types, glob


def _our_batch(ids, mask, types, glob=None):
    b, s = ids.shape
    batch = {"input_ids": ids, "segment_ids": types, "sequence_ids": mask, "input_mask": mask,
             "position_ids": np.broadcast_to(np.arange(s, dtype=np.int32), (b, s)),
             "masked_lm_positions": np.zeros((b, 1), np.int32)}
    if glob is not None:
        batch["global_attention_mask"] = glob
    return batch


def _torch(x):
    return torch.from_numpy(np.asarray(x).astype(np.int64))


def _perturb(model):
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model.eval()


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A perturbed random ``LongformerForMaskedLM`` (pooler too, via a LongformerModel) saved to disk."""
    torch.manual_seed(0)
    config = transformers.LongformerConfig(**HF_SIZES)
    mlm = _perturb(transformers.LongformerForMaskedLM(config))
    base = _perturb(transformers.LongformerModel(config))
    base.embeddings.load_state_dict(mlm.longformer.embeddings.state_dict())
    base.encoder.load_state_dict(mlm.longformer.encoder.state_dict())
    root = tmp_path_factory.mktemp("hf_longformer")
    state = {**mlm.state_dict(), **{f"longformer.{k}": v for k, v in base.state_dict().items() if "pooler" in k}}
    mlm.save_pretrained(root / "mlm")
    import safetensors.torch
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()
                                 if k not in ("lm_head.decoder.weight", "lm_head.decoder.bias")},
                                str(root / "mlm" / "model.safetensors"), metadata={"format": "pt"})
    return root / "mlm", mlm, base


@pytest.fixture(scope="module")
def imported(hf_dir):
    directory, _, _ = hf_dir
    cfg, params, report = hf_files.load_hf_checkpoint(directory)
    return cfg, params, report


def test_import_matches_transformers(hf_dir, imported):
    _, mlm, base = hf_dir
    cfg, params, report = imported
    assert cfg.architecture == "longformer" and cfg.attention_window == (8, 4) and cfg.pad_token_id == PAD
    assert report.missing_heads == () and report.unused == () and report.warnings == ()
    ids, mask, types, glob = _inputs()
    model = PreTrainingModel(cfg)
    for g in (glob, None):  # explicit global tokens; the default (first token) vs transformers' <s>-only
        hf_glob = glob if g is not None else (np.arange(SEQ)[None] == 0).astype(np.int32).repeat(len(LENGTHS), 0)
        with torch.no_grad():
            hf_out = base(_torch(ids), attention_mask=_torch(mask), token_type_ids=_torch(types),
                          global_attention_mask=_torch(hf_glob))
            hf_logits = mlm(_torch(ids), attention_mask=_torch(mask), token_type_ids=_torch(types),
                            global_attention_mask=_torch(hf_glob)).logits.numpy()
        batch = _our_batch(ids, mask, types, g)
        logits = model.apply({"params": params}, batch, method=PreTrainingModel.all_position_logits)
        np.testing.assert_allclose(np.asarray(logits), hf_logits, rtol=0, atol=ATOL)
        hidden, pooled = longformer.LongformerModel(cfg).apply(
            {"params": params["bert"]}, ids, types, mask, batch["position_ids"], global_attention_mask=hf_glob)
        np.testing.assert_allclose(np.asarray(hidden), hf_out.last_hidden_state.numpy(), rtol=0, atol=ATOL)
        np.testing.assert_allclose(np.asarray(pooled), hf_out.pooler_output.numpy(), rtol=0, atol=ATOL)


def test_no_global_tokens_and_scanned_layout(hf_dir, imported):
    """No global token at all (transformers' MaskedLM default), and one window for all layers, scanned."""
    _, mlm, _ = hf_dir
    cfg, params, _ = imported
    ids, mask, types, _ = _inputs()
    with torch.no_grad():
        hf_logits = mlm(_torch(ids), attention_mask=_torch(mask), token_type_ids=_torch(types)).logits.numpy()
    batch = _our_batch(ids, mask, types, np.zeros_like(ids))
    logits = PreTrainingModel(cfg).apply({"params": params}, batch, method=PreTrainingModel.all_position_logits)
    np.testing.assert_allclose(np.asarray(logits), hf_logits, rtol=0, atol=ATOL)

    scanned_cfg = cfg.replace(scan_layers=True, attention_window=(8,))
    mlm8 = transformers.LongformerForMaskedLM(transformers.LongformerConfig(**{**HF_SIZES, "attention_window": 8}))
    mlm8.load_state_dict(mlm.state_dict())
    _, _, _, glob = _inputs()
    with torch.no_grad():
        ref = mlm8.eval()(_torch(ids), attention_mask=_torch(mask), token_type_ids=_torch(types),
                          global_attention_mask=_torch(glob)).logits.numpy()
    stacked = hf_convert.stack_layers(params)
    out = PreTrainingModel(scanned_cfg).apply({"params": stacked}, _our_batch(ids, mask, types, glob),
                                              method=PreTrainingModel.all_position_logits)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=0, atol=ATOL)


def _random_params(cfg, seed=0):
    """Our freshly initialised pretraining params with every leaf perturbed (nothing trivial)."""
    params = hf_convert.init_pretraining_params(cfg, jax.random.key(seed))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    return jax.tree.unflatten(tree, [np.asarray(x + 0.1 * jax.random.normal(k, x.shape)) for x, k in zip(leaves, keys)])


def test_export_loads_in_plain_transformers(tmp_path):
    cfg = ModelConfig(architecture="longformer", vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=4,
                      intermediate_size=64, max_position_embeddings=SEQ + 2 + 8, pad_token_id=PAD,
                      attention_window=(4, 8), hidden_act="gelu")
    params = _random_params(cfg)
    ids, mask, types, glob = _inputs()
    batch = _our_batch(ids, mask, types, glob)
    ours = PreTrainingModel(cfg).apply({"params": params}, batch, method=PreTrainingModel.all_position_logits)
    hidden, pooled = longformer.LongformerModel(cfg).apply({"params": params["bert"]}, ids, types, mask,
                                                           batch["position_ids"], global_attention_mask=glob)
    for architecture in ("LongformerForMaskedLM", "LongformerModel"):
        out = export.export_hf(params, cfg, tmp_path / architecture, architecture=architecture)
        cls = getattr(transformers, architecture)
        model, info = cls.from_pretrained(out, output_loading_info=True)
        assert info["missing_keys"] == set() or not info["missing_keys"], info
        assert not info["unexpected_keys"] and not info["mismatched_keys"], info
        with torch.no_grad():
            result = model.eval()(_torch(ids), attention_mask=_torch(mask), token_type_ids=_torch(types),
                                  global_attention_mask=_torch(glob))
        if architecture == "LongformerForMaskedLM":
            np.testing.assert_allclose(result.logits.numpy(), np.asarray(ours), rtol=0, atol=ATOL)
        else:
            np.testing.assert_allclose(result.last_hidden_state.numpy(), np.asarray(hidden), rtol=0, atol=ATOL)
            np.testing.assert_allclose(result.pooler_output.numpy(), np.asarray(pooled), rtol=0, atol=ATOL)


def test_config_round_trip_and_errors():
    cfg = ModelConfig.from_size("tiny", architecture="longformer", attention_window=(16, 32), pad_token_id=1)
    assert hf_longformer.hf_config_to_model_config(hf_longformer.model_config_to_hf_config(cfg)) == cfg.replace(
        max_position_embeddings=cfg.max_position_embeddings)
    ModelConfig.from_size("tiny", architecture="longformer")  # the defaults are valid
    with pytest.raises(ValueError, match="attention_window"):
        ModelConfig.from_size("tiny", architecture="longformer", attention_window=(7,))
    with pytest.raises(ValueError, match="attention_window"):
        ModelConfig.from_size("tiny", architecture="longformer", attention_window=(8, 8, 8))
    with pytest.raises(ValueError, match="model_type='bert'"):
        hf_longformer.hf_config_to_model_config({"model_type": "bert"})


def _peak_temp_bytes(seq_len: int) -> int:
    cfg = ModelConfig(architecture="longformer", vocab_size=64, hidden_size=16, num_layers=1, num_heads=2,
                      intermediate_size=32, max_position_embeddings=seq_len + 2, attention_window=(64,),
                      max_global_tokens=4, hidden_dropout=0.0, attention_dropout=0.0)
    model = PreTrainingModel(cfg)
    batch = {"input_ids": jnp.zeros((1, seq_len), jnp.int32), "segment_ids": jnp.zeros((1, seq_len), jnp.int32),
             "sequence_ids": jnp.ones((1, seq_len), jnp.int32), "input_mask": jnp.ones((1, seq_len), jnp.int32),
             "position_ids": jnp.arange(seq_len, dtype=jnp.int32)[None],
             "masked_lm_positions": jnp.zeros((1, 4), jnp.int32)}
    params = jax.eval_shape(model.init, jax.random.key(0), batch)

    def loss(p):
        return jnp.sum(model.apply(p, batch)["mlm_logits"])

    compiled = jax.jit(jax.grad(loss)).lower(params).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_memory_grows_linearly_in_sequence_length():
    short, long = _peak_temp_bytes(1024), _peak_temp_bytes(4096)
    assert long / short < 6, (short, long)  # full [S, S] attention would be ~16x


def test_layouts_match_one_device():
    """Two pretraining steps on the data / FSDP / tensor meshes equal one device (logical axis names)."""
    from tests.helpers import assert_layouts_match_one_device

    assert_layouts_match_one_device(ModelConfig(architecture="longformer", vocab_size=512, hidden_size=32,
                                                num_layers=2, num_heads=4, intermediate_size=64,
                                                max_position_embeddings=40, attention_window=(8, 4),
                                                max_global_tokens=4))
