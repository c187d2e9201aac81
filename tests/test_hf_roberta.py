"""RoBERTa against transformers' PyTorch ``Roberta*`` classes, both directions, fp32, 1e-5.

A random odd-sized configuration (hidden 48, 3 heads, 3 layers, padding id 1, one token type) with
every weight perturbed (LayerNorms and biases too), on a right-padded batch of rows of different
lengths: every position is compared, padding included, so a wrong position offset cannot pass.
"""

import json
import shutil

import jax
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers

from bert_jax import attention, finetune, run_config
from bert_jax.config import ModelConfig
from bert_jax.heads import PooledClassifier, PreTrainingModel
from bert_jax.interop import export, hf_convert, hf_files, hf_roberta
from bert_jax.models.roberta import RobertaModel, roberta_positions
from configs import finetune_glue, pretrain
from data_pipelines import bpe, vocab_training
from data_pipelines.finetune import features, squad
from tests.helpers import MRPC_PAIRS, SQUAD_ARTICLES, _squad_file

ATOL = 1e-5
VOCAB, PAD, BOS, EOS = 120, 1, 0, 2
HF_SIZES = dict(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=3, num_attention_heads=3,
                intermediate_size=80, max_position_embeddings=40, type_vocab_size=1, pad_token_id=PAD,
                bos_token_id=BOS, eos_token_id=EOS, layer_norm_eps=1e-5)
LENGTHS = (17, 9, 5, 12)


@pytest.fixture(scope="module")
def enc() -> dict[str, np.ndarray]:
    """``<s> ... </s>`` rows of different lengths, right-padded with id 1."""
    rng = np.random.default_rng(0)
    s = max(LENGTHS)
    ids = np.full((len(LENGTHS), s), PAD, np.int32)
    for row, length in enumerate(LENGTHS):
        ids[row, :length] = rng.integers(5, VOCAB, size=length)
        ids[row, 0], ids[row, length - 1] = BOS, EOS
    mask = (ids != PAD).astype(np.int32)
    return {"input_ids": ids, "attention_mask": mask}


def _ours(enc):
    b, s = enc["input_ids"].shape
    return {"input_ids": enc["input_ids"], "segment_ids": np.zeros((b, s), np.int32),
            "sequence_ids": enc["attention_mask"], "input_mask": enc["attention_mask"],
            "position_ids": np.broadcast_to(np.arange(s, dtype=np.int32), (b, s)),
            "masked_lm_positions": np.zeros((b, 1), np.int32)}


def _torch(enc):
    return {k: torch.from_numpy(v.astype(np.int64)) for k, v in enc.items()}


def _perturb(model):
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model.eval()


def _random_params(cfg: ModelConfig, seed: int, num_labels: int | None = None):
    """Our init with noise on every leaf; with ``num_labels`` a ``classifier`` head too."""
    params = hf_convert.init_pretraining_params(cfg, jax.random.key(seed))
    if num_labels:
        params["classifier"] = {"kernel": np.zeros((cfg.hidden_size, num_labels), np.float32),
                                "bias": np.zeros((num_labels,), np.float32)}
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    return jax.tree.unflatten(treedef, [np.asarray(x + 0.1 * jax.random.normal(k, np.shape(x)))
                                        for x, k in zip(leaves, keys)])


def _mlm_logits(cfg, params, enc):
    return np.asarray(PreTrainingModel(cfg).apply({"params": params}, _ours(enc),
                                                  method=PreTrainingModel.all_position_logits))


def _encoder(cfg, params, enc):
    batch = _ours(enc)
    hidden, pooled = RobertaModel(cfg).apply({"params": params["bert"]}, batch["input_ids"], batch["segment_ids"],
                                             batch["sequence_ids"], batch["position_ids"])
    return np.asarray(hidden), np.asarray(pooled)


def _classifier_logits(cfg, params, enc, num_labels):
    return np.asarray(PooledClassifier(cfg, num_labels).apply(
        {"params": {"bert": params["bert"], "classifier": params["classifier"]}}, _ours(enc)))


def test_positions_equal_transformers_numbering(enc):
    ours = roberta_positions(_ours(enc)["position_ids"], enc["attention_mask"], PAD)
    theirs = transformers.models.roberta.modeling_roberta.RobertaEmbeddings.create_position_ids_from_input_ids(
        torch.from_numpy(enc["input_ids"].astype(np.int64)), PAD)
    np.testing.assert_array_equal(np.asarray(ours), theirs.numpy())
    packed = roberta_positions(np.array([[0, 1, 2, 0, 1, 0]]), np.array([[1, 1, 1, 2, 2, 0]]), PAD)
    np.testing.assert_array_equal(np.asarray(packed), [[2, 3, 4, 2, 3, 1]])  # restarts per packed sequence


@pytest.fixture(scope="module")
def hf_masked_lm(tmp_path_factory):
    torch.manual_seed(0)
    model = _perturb(transformers.RobertaForMaskedLM(transformers.RobertaConfig(hidden_act="gelu", **HF_SIZES)))
    root = tmp_path_factory.mktemp("roberta_mlm")
    model.save_pretrained(root)
    return root, model


@pytest.mark.parametrize("scan_layers", [False, True], ids=["looped", "scanned"])
def test_random_roberta_for_masked_lm_imports_with_equal_logits(hf_masked_lm, enc, scan_layers):
    root, model = hf_masked_lm
    cfg, params, report = hf_files.load_hf_checkpoint(root, scan_layers=scan_layers)
    assert (cfg.architecture, cfg.pad_token_id, cfg.type_vocab_size) == ("roberta", PAD, 1)
    assert set(params) == {"bert", "mlm_head"}  # no NSP head
    assert report.missing_heads == ("bert/pooler",) and report.unused == () and report.warnings == ()
    with torch.no_grad():
        out = model(**_torch(enc), output_hidden_states=True)
    np.testing.assert_allclose(_mlm_logits(cfg, params, enc), out.logits.numpy(), rtol=0, atol=ATOL)
    hidden, _ = _encoder(cfg, params, enc)
    np.testing.assert_allclose(hidden, out.hidden_states[-1].numpy(), rtol=0, atol=ATOL)  # padding too


def test_random_roberta_model_imports_with_equal_hidden_states_and_pooler(tmp_path, enc):
    torch.manual_seed(1)
    model = _perturb(transformers.RobertaModel(transformers.RobertaConfig(**HF_SIZES)))
    model.save_pretrained(tmp_path)
    cfg, params, report = hf_files.load_hf_checkpoint(tmp_path)
    assert report.missing_heads == ("mlm_head",) and report.unused == ()
    with torch.no_grad():
        out = model(**_torch(enc))
    hidden, pooled = _encoder(cfg, params, enc)
    np.testing.assert_allclose(hidden, out.last_hidden_state.numpy(), rtol=0, atol=ATOL)
    np.testing.assert_allclose(pooled, out.pooler_output.numpy(), rtol=0, atol=ATOL)


def test_roberta_sequence_classifier_imports_with_equal_logits(tmp_path, enc):
    torch.manual_seed(2)
    model = _perturb(transformers.RobertaForSequenceClassification(
        transformers.RobertaConfig(num_labels=3, **HF_SIZES)))
    model.save_pretrained(tmp_path)
    cfg, params, report = hf_files.load_hf_checkpoint(tmp_path)
    assert report.task_heads == ("classifier",) and report.missing_heads == ("mlm_head",)
    assert report.unused == ()  # classifier.dense is our pooler, classifier.out_proj our classifier
    with torch.no_grad():
        reference = model(**_torch(enc)).logits.numpy()
    np.testing.assert_allclose(_classifier_logits(cfg, params, enc, 3), reference, rtol=0, atol=ATOL)


def _load(cls, directory):
    model, info = cls.from_pretrained(directory, attn_implementation="eager", output_loading_info=True)
    assert not any(info.values()), info
    return model.eval()


def test_export_loads_in_transformers_with_equal_outputs(tmp_path, enc):
    cfg = hf_roberta.hf_config_to_model_config(dict(model_type="roberta", **HF_SIZES))
    params = _random_params(cfg, seed=5)
    mlm_dir = export.export_hf(params, cfg, tmp_path / "mlm")  # default class: RobertaForMaskedLM
    base_dir = export.export_hf({"bert": params["bert"]}, cfg, tmp_path / "base")
    config = json.loads((mlm_dir / "config.json").read_text())
    assert (config["architectures"], config["model_type"], config["pad_token_id"]) == (
        ["RobertaForMaskedLM"], "roberta", PAD)
    assert hf_roberta.hf_config_to_model_config(config) == cfg

    mlm = _load(transformers.RobertaForMaskedLM, mlm_dir)
    assert set(safetensors.numpy.load_file(mlm_dir / hf_files.SAFETENSORS_FILE)) == set(mlm.state_dict())
    base = _load(transformers.RobertaModel, base_dir)
    with torch.no_grad():
        logits = mlm(**_torch(enc)).logits.numpy()
        out = base(**_torch(enc))
    np.testing.assert_allclose(_mlm_logits(cfg, params, enc), logits, rtol=0, atol=ATOL)
    hidden, pooled = _encoder(cfg, params, enc)
    np.testing.assert_allclose(hidden, out.last_hidden_state.numpy(), rtol=0, atol=ATOL)
    np.testing.assert_allclose(pooled, out.pooler_output.numpy(), rtol=0, atol=ATOL)


def test_classifier_export_loads_as_roberta_for_sequence_classification(tmp_path, enc):
    cfg = hf_roberta.hf_config_to_model_config(dict(model_type="roberta", **HF_SIZES))
    params = _random_params(cfg, seed=7, num_labels=4)
    out_dir = export.export_hf({"bert": params["bert"], "classifier": params["classifier"]}, cfg, tmp_path,
                               architecture="RobertaForSequenceClassification",
                               config_extras={"id2label": {str(i): f"c{i}" for i in range(4)}})
    state = safetensors.numpy.load_file(out_dir / hf_files.SAFETENSORS_FILE)
    assert "classifier.dense.weight" in state and "roberta.pooler.dense.weight" not in state
    model = _load(transformers.RobertaForSequenceClassification, out_dir)
    with torch.no_grad():
        reference = model(**_torch(enc)).logits.numpy()
    np.testing.assert_allclose(_classifier_logits(cfg, params, enc, 4), reference, rtol=0, atol=ATOL)


def test_config_mapping_errors():
    with pytest.raises(ValueError, match="model_type='bert'"):
        hf_roberta.hf_config_to_model_config(dict(HF_SIZES, model_type="bert"))
    cfg = ModelConfig.from_size("tiny", architecture="roberta", pad_token_id=1)
    with pytest.raises(ValueError, match="pads with id 3"):
        hf_roberta.model_config_to_hf_config(cfg, pad_token_id=3)
    with pytest.raises(ValueError, match=r"pad_token_id=5000 must be in \[0, vocab_size=5000\)"):
        ModelConfig.from_size("tiny", architecture="roberta", vocab_size=5000, pad_token_id=5000)


# ----------------------------------------------------------------------------------------------------
# Sentence pairs: RoBERTa's tokenizer writes <s> a </s></s> b </s>; our fine-tuning rows must too.


@pytest.fixture(scope="module")
def bpe_tokenizers(tmp_path_factory):
    """A byte-level BPE vocabulary trained here on the MRPC and SQuAD texts: ours, and transformers'
    ``RobertaTokenizerFast`` built from its ``vocab.json`` + ``merges.txt`` alone."""
    texts = [t for _, a, b in MRPC_PAIRS for t in (a, b)]
    texts += [t for _, context, questions in SQUAD_ARTICLES for t in (context, *(q for q, _ in questions))]
    out = tmp_path_factory.mktemp("bpe")
    ours = vocab_training.train_tokenizer(texts * 3, {"kind": "bpe", "vocab_size": 400}, str(out))
    only = tmp_path_factory.mktemp("vocab_merges")
    for name in (bpe.VOCAB_FILE, bpe.MERGES_FILE):
        shutil.copy(out / name, only)
    return ours, transformers.RobertaTokenizerFast.from_pretrained(only)


def test_bpe_sentence_pairs_equal_roberta_tokenizer_fast_with_truncation(bpe_tokenizers):
    ours, theirs = bpe_tokenizers
    assert ours.pair_separator == (ours.sep_id, ours.sep_id)
    examples = [features.TextPairExample(f"mrpc:{i}", i, a, b, label) for i, (label, a, b) in enumerate(MRPC_PAIRS)]
    firsts, seconds = [e.text_a for e in examples], [e.text_b for e in examples]
    for length in (96, 20):  # 20: every pair is cut (longest first), the row keeps 20 tokens as transformers'
        arrays = features.featurize_text_pairs(examples, ours, length).arrays
        want = theirs(firsts, seconds, truncation="longest_first", max_length=length)["input_ids"]
        got = [row[mask > 0].tolist() for row, mask in zip(arrays["input_ids"], arrays["input_mask"])]
        assert got == want, length
        assert all(row[:3] != [ours.sep_id] * 3 for row in got)
    assert all(len(row) == 20 for row in want)
    # The single-text rows keep one </s>: <s> a </s>.
    single = features.encoder_row(ours.encode(firsts[0]), None, 96, ours)
    assert single["input_ids"][single["input_mask"] > 0].tolist() == theirs(firsts[0])["input_ids"]


def test_bpe_squad_rows_equal_roberta_tokenizer_fast_and_label_the_answer(bpe_tokenizers, tmp_path):
    ours, theirs = bpe_tokenizers
    _squad_file(str(tmp_path / "train.json"), version_2=False)
    examples = squad.read_squad_json(str(tmp_path / "train.json"))
    whole = squad.featurize_squad(examples, ours, max_seq_length=256, is_training=True)
    assert len(whole) == len(examples)
    for example, row in zip(examples, (whole[i] for i in range(len(whole)))):
        want = theirs(example.question, example.context)["input_ids"]
        assert row["input_ids"][row["input_mask"] > 0].tolist() == want
    # Longformer's question tokens (global attention) are those before the first </s>, as transformers picks them.
    rows = whole.rows(np.arange(len(whole)))
    first_sep = np.argmax(rows["input_ids"] == ours.sep_id, axis=1)
    expected = (np.arange(rows["input_ids"].shape[1])[None, :] < first_sep[:, None]).astype(np.int32)
    got = attention.global_tokens("question", rows["segment_ids"], rows["sequence_ids"], rows["position_ids"])
    np.testing.assert_array_equal(np.asarray(got), expected)
    windows = squad.featurize_squad(examples, ours, max_seq_length=40, doc_stride=8, max_query_length=12,
                                    is_training=True)
    assert len(windows) > len(examples) and windows.stats["cls_labelled_windows"] < len(windows)
    for i in range(len(windows)):
        row = windows[i]
        assert row["input_mask"].sum() <= 40
        if row["start_positions"] > 0:  # the labelled tokens decode to the answer
            answer = examples[row["example_index"]].answers[0].text
            span = row["input_ids"][row["start_positions"]:row["end_positions"] + 1]
            assert ours.decode(span).strip() == answer


def test_runs_refuse_a_tokenizer_that_pads_with_another_id_than_the_model():
    """RoBERTa's positions count from model.pad_token_id; rows pad with the tokenizer's id: both must agree."""
    config = pretrain.get_config("size=tiny,arch=roberta")
    vocab = config.model.vocab_size
    run_config.validate(config, num_devices=1, tokenizer_vocab_size=vocab, tokenizer_pad_id=1)
    message = (r"model.pad_token_id=1 differs from the tokenizer's pad id 0 \(vocab/roberta/tokenizer.json\); "
               r"set --config.model.pad_token_id=0")
    with pytest.raises(run_config.ConfigError, match=message):
        run_config.validate(config, num_devices=1, tokenizer_vocab_size=vocab, tokenizer_pad_id=0)
    tuning = finetune_glue.get_config("task=mrpc")
    tuning.tokenizer = config.tokenizer
    with pytest.raises(run_config.ConfigError, match=message):
        finetune.validate(tuning, run_config.model_config_from(config), vocab, 1, tokenizer_pad_id=0)
