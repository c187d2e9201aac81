"""RoBERTa through the real pipeline: its configs, a short pretraining run (byte-level BPE trained on the
sample corpus, packed ``<s> ... </s>`` rows, MLM only), the 8-device layouts, and a local-text
classification fine-tuned from that run and exported as ``RobertaForSequenceClassification``."""

import json
import os

import numpy as np
import pytest
import torch
import transformers

from bert_jax import finetune, run_config, train
from bert_jax.config import ModelConfig
from bert_jax.heads import PooledClassifier
from bert_jax.interop import export
from configs import demo, finetune_local, pretrain
from data_pipelines import rows
from data_pipelines import tokenizer as tokenizer_lib
from tests.helpers import LOCAL_ROWS, TINY, _jsonl, _small, _write, assert_layouts_match_one_device, tiny_overrides

ATOL = 1e-5


@pytest.mark.parametrize("variant", ["size=base,arch=roberta", "size=base,phase=2,arch=roberta",
                                     "size=tiny,arch=roberta,ablation=wwm"])
def test_pretraining_variant_validates(variant):
    config = pretrain.get_config(variant)
    run_config.validate(config, num_devices=8, tokenizer_vocab_size=config.model.vocab_size)
    model = run_config.model_config_from(config)
    assert (model.architecture, model.type_vocab_size, model.pad_token_id) == ("roberta", 1, 1)
    assert model.max_position_embeddings == 514 and config.tokenizer.kind == "bpe"
    assert (config.data.nsp, config.data.packing, config.data.masking, config.task.nsp_weight) == (
        False, True, "dynamic", 0.0)


def test_demo_variant_validates_and_bert_is_unchanged():
    config = demo.get_config("arch=roberta")
    run_config.validate(config, num_devices=2, tokenizer_vocab_size=config.model.vocab_size)
    assert config.model.max_position_embeddings == config.data.max_seq_length + 2
    assert config.tokenizer.vocab_file.endswith("bpe/tokenizer.json") and config.tokenizer.build_if_missing
    assert demo.get_config().model.architecture == "bert" and demo.get_config().task.nsp_weight == 1.0
    with pytest.raises(ValueError, match="arch='gpt'"):
        pretrain.get_config("arch=gpt")


def test_layouts_match_one_device():
    assert_layouts_match_one_device(ModelConfig(architecture="roberta", vocab_size=256, type_vocab_size=1,
                                                pad_token_id=1, **TINY))


@pytest.fixture(scope="module")
def pretraining_run(sample_corpus, tmp_path_factory) -> str:
    """4 steps of the tiny ``configs/demo.py:arch=roberta``, its BPE vocabulary trained on the corpus."""
    root = tmp_path_factory.mktemp("roberta")
    config = demo.get_config("arch=roberta")
    config.update_from_flattened_dict({
        **tiny_overrides(str(root / "bpe" / "tokenizer.json"), sample_corpus.spec),
        "model.vocab_size": 1000, "tokenizer.vocab_size": 1000, "tokenizer.build_if_missing": True,
        "model.max_position_embeddings": 34, "train.num_steps": 4, "train.eval_every": 4, "train.eval_batches": 1,
        "train.checkpoint_every": 4, "train.async_checkpoint": False, "train.plot": False,
        "train.tensorboard": False})
    workdir = str(root / "pretraining")
    train.run(config, workdir)
    return workdir


def test_pretraining_runs_mlm_only_on_s_rows(pretraining_run):
    summary = json.loads(open(os.path.join(pretraining_run, train.FINAL_SUMMARY_FILE)).read())
    text = json.dumps(summary)
    assert "mlm_accuracy" in text and "nsp" not in text
    run = export.load_run(pretraining_run)
    assert set(run.params) == {"bert", "mlm_head"} and run.model_config.architecture == "roberta"
    tokenizer = tokenizer_lib.load_tokenizer(run.tokenizer_spec)
    assert tokenizer.kind == "bpe" and (tokenizer.cls_id, tokenizer.pad_id, tokenizer.sep_id) == (0, 1, 2)


def test_fine_tuned_classifier_exports_as_roberta_for_sequence_classification(pretraining_run, tmp_path):
    _write(f"{tmp_path}/local/train.jsonl", _jsonl(LOCAL_ROWS))
    _write(f"{tmp_path}/local/validation.jsonl", _jsonl(LOCAL_ROWS[:4]))
    config = _small(finetune_local.get_config(), pretraining_run, tmp_path / "local", num_steps=2)
    config.data.max_seq_length = 32
    (run,) = finetune.run(config, str(tmp_path / "finetuned"))["runs"]
    out_dir = export.export_run(run["workdir"], tmp_path / "exported")
    assert json.loads((out_dir / "config.json").read_text())["architectures"] == ["RobertaForSequenceClassification"]

    model, info = transformers.RobertaForSequenceClassification.from_pretrained(
        out_dir, attn_implementation="eager", output_loading_info=True)
    assert not any(info.values()), info
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(out_dir)
    texts = [text for text, _ in LOCAL_ROWS[:4]]
    enc = hf_tokenizer(texts, padding=True, return_tensors="np")
    saved = export.load_run(run["workdir"])
    tokenizer = tokenizer_lib.load_tokenizer(saved.tokenizer_spec)
    ours = rows.encoder_rows(tokenizer.encode_batch(texts), length=enc["input_ids"].shape[1], cls_id=tokenizer.cls_id,
                             sep_id=tokenizer.sep_id, pad_id=tokenizer.pad_id, positions=True)
    np.testing.assert_array_equal(ours["input_ids"], enc["input_ids"])  # <s> text </s> <pad>...
    logits = PooledClassifier(saved.model_config, 2).apply({"params": saved.params}, ours)
    with torch.no_grad():
        reference = model.eval()(input_ids=torch.from_numpy(enc["input_ids"]),
                                 attention_mask=torch.from_numpy(enc["attention_mask"])).logits.numpy()
    np.testing.assert_allclose(np.asarray(logits), reference, rtol=0, atol=ATOL)
