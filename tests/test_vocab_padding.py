"""Vocabulary padding (``ModelConfig.vocab_pad_multiple``): padded rows, masked logits, the same loss as the
unpadded model, Hugging Face import (pads) and export (slices), and unpadded checkpoints still loading.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from bert_jax import run_config
from bert_jax.config import LAYOUT_MODEL_FIELDS, ModelConfig
from bert_jax.heads import PreTrainingModel
from bert_jax.interop import export, hf_bert, hf_convert, hf_files, init_source
from bert_jax.models import layers
from bert_jax.tasks.base import classification_sums
from configs import common, pretrain
from tests.helpers import random_pretraining_batch

VOCAB = 1000  # pads to 1,024 at a multiple of 128
CONFIG = ModelConfig.from_size("tiny", vocab_size=VOCAB, hidden_dropout=0.0, attention_dropout=0.0)
PADDED = CONFIG.replace(vocab_pad_multiple=128)


def _pad_params(params, padded_rows):
    """``params`` of the unpadded model with its vocabulary rows zero-padded (what an HF import does)."""
    params = jax.tree.map(np.asarray, params)
    pad = lambda x: np.pad(x, [(0, padded_rows - x.shape[0])] + [(0, 0)] * (x.ndim - 1))  # noqa: E731
    embeddings = dict(params["bert"]["embeddings"], word_embeddings=pad(params["bert"]["embeddings"]["word_embeddings"]))
    return {**params, "bert": {**params["bert"], "embeddings": embeddings},
            "mlm_head": {**params["mlm_head"], "output_bias": pad(params["mlm_head"]["output_bias"])}}


@functools.cache
def _compiled_logits(cfg):
    model = PreTrainingModel(cfg)
    return jax.jit(lambda p, b: (model.apply({"params": p}, b)["mlm_logits"],
                                 model.apply({"params": p}, b, method=PreTrainingModel.all_position_logits)))


def _logits(cfg, params, batch):
    """(MLM logits at the masked positions [B, P, V], at every position [B, S, V]), one compiled call."""
    return _compiled_logits(cfg)(params, batch)


@pytest.fixture(scope="module")
def unpadded_params():
    return hf_convert.init_pretraining_params(CONFIG, jax.random.key(0))


def test_padded_sizes_and_validation():
    assert (CONFIG.padded_vocab_size, PADDED.padded_vocab_size) == (1000, 1024)
    assert ModelConfig().padded_vocab_size == 30522  # off by default: saved runs keep their shapes
    assert ModelConfig(vocab_pad_multiple=128).padded_vocab_size == 30592 == 239 * 128
    assert ModelConfig(vocab_size=1024, vocab_pad_multiple=128).padded_vocab_size == 1024
    with pytest.raises(ValueError, match="model.vocab_pad_multiple=0"):
        ModelConfig(vocab_pad_multiple=0)
    # FLOPs count the real vocabulary: padding is not useful work.
    assert PADDED.train_flops_per_token(128, 20) == CONFIG.train_flops_per_token(128, 20)
    config = pretrain.get_config("size=base")
    assert run_config.model_config_from(config).padded_vocab_size % 8 == 0  # tensor=2/4/8 split the vocab


def test_padded_model_has_the_unpadded_loss_and_never_predicts_padding(unpadded_params):
    padded_params = hf_convert.init_pretraining_params(PADDED, jax.random.key(0))
    assert padded_params["bert"]["embeddings"]["word_embeddings"].shape == (1024, CONFIG.hidden_size)
    assert padded_params["mlm_head"]["output_bias"].shape == (1024,)
    assert not np.asarray(padded_params["bert"]["embeddings"]["word_embeddings"][VOCAB:]).any()  # padding rows 0

    batch = random_pretraining_batch(0, batch_size=4, seq_len=32, max_predictions=5, vocab_size=VOCAB)
    losses, logits = {}, {}
    for name, cfg, params in (("unpadded", CONFIG, unpadded_params),
                              ("padded", PADDED, _pad_params(unpadded_params, 1024))):
        masked, logits[name] = _logits(cfg, params, batch)
        loss_sum, _, weight = classification_sums(masked, batch["masked_lm_ids"], batch["masked_lm_weights"])
        losses[name] = float(loss_sum / weight)
        logits[name] = np.asarray(logits[name])
    assert losses["padded"] == pytest.approx(losses["unpadded"], rel=1e-6)
    assert logits["padded"].shape[-1] == 1024
    np.testing.assert_allclose(logits["padded"][..., :VOCAB], logits["unpadded"], rtol=0, atol=1e-6)
    assert (logits["padded"][..., VOCAB:] == layers.PADDED_VOCAB_LOGIT).all()
    probabilities = jax.nn.softmax(jnp.asarray(logits["padded"]), axis=-1)
    assert float(probabilities[..., VOCAB:].max()) == 0.0
    # Even with the padding rows trained to favour them, a padding id is never the argmax.
    boosted = _pad_params(unpadded_params, 1024)
    boosted["mlm_head"]["output_bias"][VOCAB:] = 1e4
    top = _logits(PADDED, boosted, batch)[1]
    assert int(jnp.argmax(top, -1).max()) < VOCAB


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, max_position_embeddings=64)
    model = transformers.BertForPreTraining(config)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    directory = tmp_path_factory.mktemp("hf") / "model"
    model.eval().save_pretrained(directory)
    return directory, model


def _hf_logits(model, batch):
    inputs = dict(input_ids=batch["input_ids"], token_type_ids=batch["segment_ids"], attention_mask=batch["input_mask"])
    with torch.no_grad():
        return model(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in inputs.items()}).prediction_logits.numpy()


def test_hf_import_pads_and_export_slices_back(hf_model, tmp_path):
    directory, model = hf_model
    cfg, params, _ = hf_files.load_hf_checkpoint(directory, model_config_overrides={"vocab_pad_multiple": 128})
    assert (cfg.vocab_size, cfg.padded_vocab_size) == (VOCAB, 1024)
    embeddings = params["bert"]["embeddings"]["word_embeddings"]
    assert embeddings.shape == (1024, 64) and not embeddings[VOCAB:].any()
    batch = random_pretraining_batch(1, batch_size=3, seq_len=24, max_predictions=4, vocab_size=VOCAB)
    ours = np.asarray(_logits(cfg, params, batch)[1])
    reference = _hf_logits(model, batch)
    np.testing.assert_allclose(ours[..., :VOCAB], reference, rtol=0, atol=1e-5)

    out = export.export_hf(params, cfg, tmp_path / "exported")
    reloaded = transformers.BertForPreTraining.from_pretrained(out).eval()
    assert reloaded.config.vocab_size == VOCAB
    assert tuple(reloaded.bert.embeddings.word_embeddings.weight.shape) == (VOCAB, 64)
    np.testing.assert_allclose(_hf_logits(reloaded, batch), reference, rtol=0, atol=1e-5)
    state = hf_convert.params_to_state_dict(hf_bert.CONVERSION, params, cfg)
    assert state["cls.predictions.bias"].shape == (VOCAB,)


def test_unpadded_checkpoints_keep_their_shapes_and_hf_sources_take_the_runs_padding():
    config = pretrain.get_config("size=tiny")
    assert config.model.vocab_pad_multiple == 128 and "vocab_pad_multiple" in LAYOUT_MODEL_FIELDS
    saved_before_padding = {k: v for k, v in ModelConfig.from_size("tiny").to_dict().items()
                            if k not in ("vocab_pad_multiple", "remat_policy")}  # a run saved before the fields
    checkpoint = init_source.InitSource("checkpoint", "/x/checkpoints/1", saved_before_padding)
    restored = init_source.model_config_for(config, checkpoint)
    assert restored.vocab_pad_multiple == 1 and restored.padded_vocab_size == 30522
    hf = init_source.InitSource("hf", "/x/hf", ModelConfig.from_size("tiny").to_dict())
    assert init_source.model_config_for(config, hf).padded_vocab_size == 30592
    assert common.model_section("tiny").vocab_pad_multiple == 1  # fine-tuning from scratch: as the dataclass
