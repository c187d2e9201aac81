"""DeBERTa-v2/v3 through the real pipeline: the demo's ``arch=deberta_v2`` MLM pretraining (2 trainer steps,
the Enhanced Mask Decoder on), a one-step MRPC fine-tuning from it, and both exports loaded by plain transformers."""

import json
import os

import numpy as np
import pytest
import torch
import transformers

from bert_jax import finetune, train
from bert_jax.interop import export
from bert_jax.tasks.classification import PooledClassifier
from configs import demo, finetune_glue
from data_pipelines.finetune import get_finetune_reader
from tests.helpers import MRPC_PAIRS, VOCAB, _mrpc_dir, _small, tiny_overrides

ATOL = 1e-5


def test_demo_config_selects_the_architecture():
    config = demo.get_config("arch=deberta_v2")
    assert config.model.architecture == "deberta_v2" and config.task.nsp_weight == 0.0 and not config.data.nsp
    assert config.model.position_buckets == 256 and config.model.type_vocab_size == 0
    assert demo.get_config().model.architecture == "bert"


@pytest.fixture(scope="module")
def deberta_runs(sample_corpus, tmp_path_factory):
    """(pretraining workdir, fine-tuning run workdir) of a 1-layer DeBERTa."""
    config = demo.get_config("arch=deberta_v2")
    config.update_from_flattened_dict({
        **tiny_overrides(VOCAB, sample_corpus.spec), "model.vocab_size": 30522, "tokenizer.vocab_size": 30522,
        "model.dtype": "float32", "model.position_buckets": 8, "model.enhanced_mask_decoder": True,
        "train.num_steps": 2, "train.eval_every": 2, "train.eval_batches": 1, "train.checkpoint_every": 2,
        "train.async_checkpoint": False, "train.plot": False, "train.tensorboard": False, "train.worker_count": 0})
    root = tmp_path_factory.mktemp("deberta_pipeline")
    pretraining = str(root / "pretraining")
    train.run(config, pretraining)
    finetuning = _small(finetune_glue.get_config("task=mrpc"), pretraining, _mrpc_dir(root / "glue"), num_steps=1)
    (run,) = finetune.run(finetuning, str(root / "mrpc"))["runs"]
    return pretraining, run["workdir"]


def test_pretraining_trains_and_exports_masked_lm(deberta_runs, tmp_path):
    pretraining, _ = deberta_runs
    metrics = json.load(open(os.path.join(pretraining, "final_metrics.json")))
    assert metrics and "nan" not in json.dumps(metrics).lower()
    out = export.export_run(pretraining, tmp_path / "mlm")
    assert json.load(open(out / "config.json"))["architectures"] == ["DebertaV2ForMaskedLM"]
    model, info = transformers.DebertaV2ForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info


def test_finetuned_classifier_exports_with_equal_logits(deberta_runs, tmp_path):
    _, workdir = deberta_runs
    out = export.export_run(workdir, tmp_path / "cls")
    model, info = transformers.AutoModelForSequenceClassification.from_pretrained(out, output_loading_info=True)
    assert type(model).__name__ == "DebertaV2ForSequenceClassification" and not any(info.values()), info
    names = get_finetune_reader("glue/mrpc").label_names()
    assert model.config.id2label == dict(enumerate(names))
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    enc = tokenizer([a for _, a, _ in MRPC_PAIRS[:3]], [b for _, _, b in MRPC_PAIRS[:3]], padding=True,
                    return_tensors="np")
    b, s = enc["input_ids"].shape
    batch = {"input_ids": enc["input_ids"], "segment_ids": enc["token_type_ids"], "input_mask": enc["attention_mask"],
             "sequence_ids": enc["attention_mask"], "position_ids": np.broadcast_to(np.arange(s), (b, s))}
    run = export.load_run(workdir)
    cfg = run.model_config.replace(dtype="float32")
    logits = PooledClassifier(cfg, len(names)).apply({"params": run.params}, {k: np.asarray(v, np.int32)
                                                                              for k, v in batch.items()})
    with torch.no_grad():
        ref = model.eval()(**{k: torch.from_numpy(enc[k].astype(np.int64)) for k in
                              ("input_ids", "token_type_ids", "attention_mask")}).logits.numpy()
    np.testing.assert_allclose(np.asarray(logits), ref, rtol=0, atol=ATOL)
