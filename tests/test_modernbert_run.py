"""ModernBERT through the pipeline: recipe configs, real pretraining steps, layouts, fine-tuning and export."""

import json

import numpy as np
import pytest
import torch
import transformers

from bert_jax import finetune, run_config, train
from bert_jax.config import ModelConfig
from bert_jax.heads import PooledClassifier, SpanModel, TokenClassifier
from bert_jax.interop import export
from configs import demo, finetune_glue, finetune_ner, finetune_squad, pretrain
from data_pipelines.finetune import conll, get_finetune_reader
from tests import test_export as export_tests  # _trainer: a fine-tuning trainer restored as finetune.run does
from tests.helpers import (CONLL_TRAIN, MRPC_PAIRS, SQUAD_ARTICLES, VOCAB, _mrpc_dir, _small, _squad_file, _write,
                           assert_layouts_match_one_device, tiny_overrides)

# 2 layers (global, then local with 4 keys each side: narrower than the 32-token rows, so banded).
TINY_MODERNBERT = {"model.num_layers": 2, "model.local_attention": 8, "model.global_attn_every_n_layers": 2}


@pytest.mark.parametrize("arg, layers, hidden, length", [
    ("arch=modernbert,size=base", 22, 768, 1024),
    ("arch=modernbert,size=large,phase=long", 28, 1024, 8192),
])
def test_recipe_configs_build_modernbert(arg, layers, hidden, length):
    config = pretrain.get_config(arg)
    model = ModelConfig(**config.model)
    assert (model.architecture, model.num_layers, model.hidden_size) == ("modernbert", layers, hidden)
    assert config.data.max_seq_length == length and config.data.masked_lm_prob == 0.30
    assert config.task.nsp_weight == 0.0 and not config.data.nsp and config.data.packing
    assert ModelConfig(**demo.get_config("arch=modernbert").model).architecture == "modernbert"
    with pytest.raises(ValueError, match="phase=2 with arch=modernbert"):
        pretrain.get_config("arch=modernbert,phase=2")


def test_layouts_match_one_device():
    assert_layouts_match_one_device(ModelConfig.from_size(
        "tiny", architecture="modernbert", vocab_size=512, num_layers=2, local_attention=8,
        global_attn_every_n_layers=2))


@pytest.fixture(scope="module")
def pretraining_run(sample_corpus, tmp_path_factory) -> str:
    """2 real pretraining steps (MLM on packed rows) of the ModernBERT demo config, made tiny."""
    config = demo.get_config("arch=modernbert")
    config.update_from_flattened_dict({
        **tiny_overrides(VOCAB, sample_corpus.spec), **TINY_MODERNBERT, "model.vocab_size": 30522,
        "tokenizer.vocab_size": 30522, "model.dtype": "float32", "train.num_steps": 2, "train.eval_every": 2,
        "train.eval_batches": 1, "train.checkpoint_every": 2, "train.async_checkpoint": False, "train.plot": False,
        "train.tensorboard": False, "train.worker_count": 0, "data.max_predictions_per_seq": 10})
    workdir = str(tmp_path_factory.mktemp("modernbert") / "pretraining")
    train.run(config, workdir)
    return workdir


def test_pretraining_runs_and_exports_masked_lm(pretraining_run, tmp_path):
    metrics = json.load(open(f"{pretraining_run}/final_metrics.json"))
    assert metrics["step"] == 2 and "nsp_loss" not in metrics["eval"]
    assert 0.0 < metrics["eval"]["mlm_loss"] < 2 * np.log(30522)  # finite, about ln(V) at the start
    out = export.export_run(pretraining_run, tmp_path / "mlm")
    model, info = transformers.ModernBertForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info


def test_finetuned_classifier_exports_to_modernbert_for_sequence_classification(pretraining_run, tmp_path):
    config = _small(finetune_glue.get_config("task=mrpc"), pretraining_run, _mrpc_dir(tmp_path / "glue"),
                    num_steps=1)
    (run,) = finetune.run(config, str(tmp_path / "run"))["runs"]
    out = export.export_run(run["workdir"], tmp_path / "hf")
    model, info = transformers.AutoModelForSequenceClassification.from_pretrained(
        out, attn_implementation="eager", output_loading_info=True)
    assert not any(info.values()), info
    assert type(model).__name__ == "ModernBertForSequenceClassification"

    saved = export.load_run(run["workdir"])
    cfg = saved.model_config.replace(dtype="float32")
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    first, second = [a for _, a, _ in MRPC_PAIRS[:3]], [b for _, _, b in MRPC_PAIRS[:3]]
    enc = tokenizer(first, second, padding=True, return_tensors="np")
    mask = enc["attention_mask"].astype(np.int32)
    batch = {"input_ids": enc["input_ids"].astype(np.int32), "segment_ids": np.zeros_like(mask),
             "sequence_ids": mask, "input_mask": mask,
             "position_ids": np.broadcast_to(np.arange(mask.shape[1], dtype=np.int32), mask.shape)}
    names = get_finetune_reader("glue/mrpc").label_names()
    ours = np.asarray(PooledClassifier(cfg, len(names)).apply({"params": saved.params}, batch))
    with torch.no_grad():
        ref = model.eval()(input_ids=torch.from_numpy(enc["input_ids"]),
                           attention_mask=torch.from_numpy(enc["attention_mask"])).logits.numpy()
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)


# Token-level kind -> (config, its data files, transformers' auto class, the class the export must be).
TOKEN_KINDS = {
    "tagging": (finetune_ner.get_config, "AutoModelForTokenClassification", "ModernBertForTokenClassification"),
    "span": (lambda: finetune_squad.get_config("version=v1.1"), "AutoModelForQuestionAnswering",
             "ModernBertForQuestionAnswering"),
}


@pytest.mark.parametrize("kind", list(TOKEN_KINDS))
def test_tagging_and_span_runs_export_to_modernbert_classes_with_our_logits(pretraining_run, tmp_path, kind):
    """A CoNLL / SQuAD run from the ModernBERT pretraining (restored as ``finetune.run`` restores it, saved at step 0
    as test_export's runs), exported: transformers' auto class loads the task class (prediction head on every
    token) with no missing or unexpected keys and gives our logits at every real token."""
    get_config, auto_class, expected = TOKEN_KINDS[kind]
    if kind == "tagging":
        _write(f"{tmp_path}/data/train.txt", CONLL_TRAIN)
    else:
        _squad_file(f"{tmp_path}/data/train-v1.1.json", version_2=False)
    config = _small(get_config(), pretraining_run, tmp_path / "data")
    if kind == "span":
        config.data.featurize_options.update(doc_stride=16, max_query_length=16)
    labels = conll.NER_TAGS if kind == "tagging" else None
    config, trainer, _ = export_tests._trainer(config, kind, labels, tmp_path / "run")
    trainer.checkpointer.save(0, trainer.state, force=True)
    trainer.close()
    run_config.save_config(config, str(tmp_path / "run"))
    out = export.export_run(tmp_path / "run", tmp_path / "hf")
    model, info = getattr(transformers, auto_class).from_pretrained(out, attn_implementation="eager",
                                                                    output_loading_info=True)
    assert type(model).__name__ == expected and not any(info.values()), info

    saved = export.load_run(str(tmp_path / "run"))
    cfg = saved.model_config.replace(dtype="float32")
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    questions, contexts = [c[2][0][0] for c in SQUAD_ARTICLES], [c[1] for c in SQUAD_ARTICLES]
    enc = tokenizer(questions, contexts, padding=True, return_tensors="np")
    mask = enc["attention_mask"].astype(np.int32)
    batch = {"input_ids": enc["input_ids"].astype(np.int32), "segment_ids": np.zeros_like(mask),  # no token types
             "sequence_ids": mask, "input_mask": mask,
             "position_ids": np.broadcast_to(np.arange(mask.shape[1], dtype=np.int32), mask.shape)}
    with torch.no_grad():
        ref = model.eval()(input_ids=torch.from_numpy(enc["input_ids"]),
                           attention_mask=torch.from_numpy(enc["attention_mask"]))
    if kind == "tagging":
        assert model.config.id2label == dict(enumerate(conll.NER_TAGS))
        ours = np.asarray(TokenClassifier(cfg, len(labels)).apply({"params": saved.params}, batch))
        ref = ref.logits.numpy()
    else:
        logits = SpanModel(cfg).apply({"params": saved.params}, batch)
        ours = np.stack([logits["start_logits"], logits["end_logits"]], -1)
        ref = np.stack([ref.start_logits.numpy(), ref.end_logits.numpy()], -1)
    np.testing.assert_allclose(ours[mask > 0], ref[mask > 0], rtol=0, atol=1e-5)
