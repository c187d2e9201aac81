"""Longformer through the fine-tuning pipeline: MRPC and SQuAD runs from a tiny Longformer "pretraining run",
each task's global tokens, and exports that plain transformers loads with our logits.

Classification puts global attention on ``[CLS]`` (what ``LongformerForSequenceClassification`` does by
itself); span (QA) on ``[CLS]`` and the question. Windows of 8 tokens on 48-token rows, so the local
attention is really local.
"""

import json
import os

import jax
import numpy as np
import pytest
import torch
import transformers

from bert_jax import attention, checkpoint, finetune, optim, run_config, sharding, steps
from bert_jax.config import ModelConfig
from bert_jax.heads import PooledClassifier, SpanModel
from bert_jax.interop import export, hf_convert
from bert_jax.tasks.pretraining import PretrainingTask
from configs import finetune_glue, finetune_squad
from configs import pretrain as pretrain_configs
from tests.helpers import MRPC_PAIRS, TINY, VOCAB, _mrpc_dir, _small, _squad_file

ATOL = 1e-5
LONGFORMER = dict(TINY, architecture="longformer", num_layers=2, attention_window=[8, 4], max_position_embeddings=65)


@pytest.fixture(scope="module")
def longformer_workdir(tmp_path_factory):
    """A tiny Longformer pretraining run: saved run config and one checkpoint (params perturbed at init)."""
    workdir = tmp_path_factory.mktemp("longformer_pretraining")
    config = pretrain_configs.get_config("size=tiny,arch=longformer")
    config.model.update(LONGFORMER, dtype="float32")
    config.tokenizer.vocab_file = VOCAB
    config.data.max_seq_length = 64
    task = PretrainingTask(ModelConfig(**config.model), max_predictions=4, nsp_weight=0.0)
    state, _ = steps.create_train_state(task, optim.make_optimizer(config.optimizer),
                                        sharding.make_mesh(config.sharding.mesh), config.sharding.rules,
                                        rng=7, batch_size=1, seq_len=8)
    saver = checkpoint.Checkpointer(workdir / "checkpoints", save_every=1, keep=1, async_save=False)
    saver.save(3, state, force=True)
    saver.close()
    run_config.save_config(config, str(workdir))
    return str(workdir)


def _pairs(tokenizer, questions=False):
    first, second = zip(*[(a, b) for _, a, b in MRPC_PAIRS[:3]])
    enc = tokenizer(list(first), list(second), padding=True, return_tensors="np")
    b, s = enc["input_ids"].shape
    ours = {"input_ids": enc["input_ids"], "segment_ids": enc["token_type_ids"], "input_mask": enc["attention_mask"],
            "sequence_ids": enc["attention_mask"], "position_ids": np.broadcast_to(np.arange(s), (b, s))}
    ours = {k: v.astype(np.int32) for k, v in ours.items()}
    theirs = {k: torch.from_numpy(enc[k].astype(np.int64)) for k in ("input_ids", "token_type_ids", "attention_mask")}
    return ours, theirs


def test_classification_run_exports_longformer_for_sequence_classification(longformer_workdir, tmp_path):
    config = _small(finetune_glue.get_config("task=mrpc"), longformer_workdir, _mrpc_dir(tmp_path / "glue"),
                    num_steps=1)
    (run,) = finetune.run(config, str(tmp_path / "mrpc"))["runs"]
    out = export.export_run(run["workdir"], tmp_path / "exported")
    assert json.load(open(os.path.join(out, "config.json")))["architectures"] == ["LongformerForSequenceClassification"]
    model, info = transformers.AutoModelForSequenceClassification.from_pretrained(out, output_loading_info=True)
    assert type(model).__name__ == "LongformerForSequenceClassification" and not any(info.values()), info
    saved = export.load_run(run["workdir"])
    ours, theirs = _pairs(transformers.AutoTokenizer.from_pretrained(out))
    assert ours["input_ids"].shape[1] > 2 * 8  # longer than the windows
    logits = PooledClassifier(saved.model_config, 2).apply({"params": saved.params}, ours)
    with torch.no_grad():
        reference = model.eval()(**theirs).logits.numpy()  # its own default: global attention on <s>
    np.testing.assert_allclose(np.asarray(logits), reference, rtol=0, atol=ATOL)


def test_span_run_puts_global_attention_on_the_question_and_exports(longformer_workdir, tmp_path):
    for prefix in ("train", "dev"):
        _squad_file(f"{tmp_path}/squad/{prefix}-v1.1.json", version_2=False)
    config = _small(finetune_squad.get_config("version=v1.1"), longformer_workdir, tmp_path / "squad")
    config.data.featurize_options.update(doc_stride=16, max_query_length=16)
    (run,) = finetune.run(config, str(tmp_path / "squad_run"))["runs"]
    assert "validation" in run["metrics"]
    out = export.export_run(run["workdir"], tmp_path / "exported")
    model, info = transformers.AutoModelForQuestionAnswering.from_pretrained(out, output_loading_info=True)
    assert type(model).__name__ == "LongformerForQuestionAnswering" and not any(info.values()), info

    saved = export.load_run(run["workdir"])
    ours, theirs = _pairs(transformers.AutoTokenizer.from_pretrained(out))
    question = np.asarray(attention.global_tokens("question", ours["segment_ids"], ours["sequence_ids"],
                                                  ours["position_ids"]))
    first_sep = np.argmax(ours["input_ids"] == 102, axis=1)  # [CLS] question [SEP] ...: before the first [SEP]
    np.testing.assert_array_equal(question, (np.arange(question.shape[1])[None] < first_sep[:, None]).astype(int))
    logits = SpanModel(saved.model_config).apply({"params": saved.params}, ours)
    with torch.no_grad():
        reference = model.eval()(**theirs, global_attention_mask=torch.from_numpy(question.astype(np.int64)))
    np.testing.assert_allclose(np.asarray(logits["start_logits"]), reference.start_logits.numpy(), rtol=0, atol=ATOL)
    np.testing.assert_allclose(np.asarray(logits["end_logits"]), reference.end_logits.numpy(), rtol=0, atol=ATOL)


def test_long_rows_fit_up_to_the_positions():
    config = pretrain_configs.get_config("size=tiny,arch=longformer")
    model = ModelConfig(**config.model)
    assert config.data.max_seq_length == model.max_position_embeddings - model.pad_token_id - 1 == 4096
    assert not run_config.shared_problems(config, model, jax.device_count())
    config.data.max_seq_length = 4097
    (problem,) = [p for p in run_config.shared_problems(config, model, jax.device_count()) if "max_seq_length" in p]
    assert "less the 1 position rows before the first token" in problem  # pad_token_id 0, + 1
    assert hf_convert.for_architecture(model).task_architectures["span"] == "LongformerForQuestionAnswering"
