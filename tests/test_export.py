"""Export of every kind of run to Hugging Face, checked with plain transformers; and the heads imported back.

One tiny real pretraining run (2 steps on the sample Wikipedia corpus, MiniLM's vocabulary) and one tiny
fine-tuning run per task kind from it (1 step each: MRPC, STS-B, SQuAD v1.1, CoNLL-2003, SWAG, with the
data of tests/test_finetune_run.py) are built once for the module. Each export must load with
``AutoModelFor...`` with no missing, unexpected or mismatched keys, give our model's logits within 1e-5
(fp32, every position), tokenize as our tokenizer does, and run in transformers' own ``pipeline()``.
"""

import csv
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
import transformers

from bert_jax import finetune, finetune_inputs, inference, predict, run_config, train
from bert_jax.config import ModelConfig
from bert_jax.tasks import finetune_task
from bert_jax.interop import export
from bert_jax.heads import PreTrainingModel
from bert_jax.tasks.classification import PooledClassifier
from bert_jax.tasks.multiple_choice import MultipleChoiceModel
from bert_jax.tasks.span import SpanModel
from bert_jax.tasks.tagging import TokenClassifier
from configs import demo, finetune_glue, finetune_local, finetune_ner, finetune_squad, finetune_swag
from data_pipelines.finetune import conll, get_finetune_reader
from data_pipelines.tokenizer import load_tokenizer
from tests.helpers import (CONLL_TRAIN, LOCAL_ROWS, MRPC_PAIRS, STSB_HEADER, STSB_ROWS, SWAG_HEADER,
                           SWAG_ROWS, SQUAD_ARTICLES, VOCAB, _jsonl, _mrpc_dir, _small,
                           _squad_file, _tsv, _write, tiny_overrides)

ATOL = 1e-5
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SENTENCES = ["The cat sat quietly on the old mat.", "Quantum chromodynamics describes the strong interaction.",
             "Leicestershire beat Somerset by an innings in London on Friday."]


@pytest.fixture(scope="module")
def pretraining_run(sample_corpus, tmp_path_factory) -> str:
    """2 real pretraining steps (MLM + NSP) of a 1-layer model; final_metrics.json included."""
    config = demo.get_config()
    config.update_from_flattened_dict({
        **tiny_overrides(VOCAB, sample_corpus.spec), "model.vocab_size": 30522, "tokenizer.vocab_size": 30522,
        "model.dtype": "float32", "train.num_steps": 2, "train.eval_every": 2, "train.eval_batches": 1,
        "train.checkpoint_every": 2, "train.async_checkpoint": False, "train.plot": False,
        "train.tensorboard": False, "train.worker_count": 0})
    workdir = str(tmp_path_factory.mktemp("export") / "pretraining")
    train.run(config, workdir)
    return workdir


def _swag_dir(root):
    rows = [[f"anetv_{i}", i, f"{c} {s}", c, s, "gold", *endings, label]
            for i, (c, s, endings, label) in enumerate(SWAG_ROWS)]
    os.makedirs(root, exist_ok=True)
    for name in ("train.csv", "val.csv"):
        with open(os.path.join(root, name), "w", encoding="utf-8", newline="") as f:
            csv.writer(f).writerows([SWAG_HEADER, *rows, *rows])
    return root


def _trainer(config, kind, label_names, run_dir):
    """A fine-tuning ``Trainer`` for ``config`` restored from its init_from as ``finetune.run`` does it."""
    config, source, tokenizer = finetune.prepare(config)
    reader = get_finetune_reader(config.task.name, **finetune_inputs.reader_options(config))
    train_split = finetune_inputs.featurize(config, reader, tokenizer, "train", finetune_inputs.read_examples(
        config, reader, config.data.train_split), training=True)
    task = finetune_task(kind).for_data(ModelConfig(**config.model), label_names=label_names,
                              train_features=train_split.features, pooling=config.task.pooling)
    trainer, _, fresh = finetune.init_trainer(config, task, str(run_dir), source, label_names=label_names)
    return config, trainer, fresh


LABELS = {"classification": get_finetune_reader("glue/mrpc").label_names(), "tagging": conll.NER_TAGS}


@pytest.fixture(scope="module")
def finetuned(pretraining_run, tmp_path_factory) -> dict:
    """kind -> (config, run workdir) of a fine-tuning from the pretraining run.

    MRPC is a real one-step ``finetune.run`` (its summary goes into the model card); the other kinds
    are their runs at step 0 (encoder restored from the pretraining run, head at its initialisation,
    checkpoint and run config saved as a run saves them), which is all an export reads.
    """
    root = tmp_path_factory.mktemp("finetuned")
    meta = ["main-captions", "MSRvid", "2012test", "0001", "none", "none"]
    stsb = [[i, *meta, a, b, f"{score:.3f}"] for i, (a, b, score) in enumerate(STSB_ROWS)]
    _write(f"{root}/glue/STS-B/train.tsv", _tsv(STSB_HEADER + ["score"], stsb))
    _squad_file(f"{root}/squad/train-v1.1.json", version_2=False)
    _write(f"{root}/conll/train.txt", CONLL_TRAIN)
    configs = {
        "classification": _small(finetune_glue.get_config("task=mrpc"), pretraining_run, _mrpc_dir(root / "glue"),
                                 num_steps=1),
        "regression": _small(finetune_glue.get_config("task=stsb"), pretraining_run, root / "glue"),
        "span": _small(finetune_squad.get_config("version=v1.1"), pretraining_run, root / "squad"),
        "tagging": _small(finetune_ner.get_config(), pretraining_run, root / "conll"),
        "multiple_choice": _small(finetune_swag.get_config(), pretraining_run, _swag_dir(root / "swag")),
    }
    configs["span"].data.featurize_options.update(doc_stride=16, max_query_length=16)
    (run,) = finetune.run(configs["classification"], str(root / "classification"))["runs"]
    runs = {"classification": (configs["classification"], run["workdir"])}
    for kind in ("regression", "span", "tagging", "multiple_choice"):
        config, trainer, _ = _trainer(configs[kind], kind, LABELS.get(kind), root / kind)
        trainer.checkpointer.save(0, trainer.state, force=True)
        trainer.close()
        run_config.save_config(config, str(root / kind))
        runs[kind] = (configs[kind], str(root / kind))
    return runs


@pytest.fixture(scope="module")
def exported(finetuned, tmp_path_factory) -> dict:
    """kind -> the exported directory of each fine-tuning run."""
    root = tmp_path_factory.mktemp("exported")
    return {kind: str(export.export_run(workdir, root / kind)) for kind, (_, workdir) in finetuned.items()}


def _fp32(run):
    cfg = run.model_config.replace(dtype="float32", param_dtype="float32")
    return cfg, jax.tree.map(lambda x: np.asarray(x, np.float32), run.params)


def _assert_loads_cleanly(auto_class, out_dir, architecture):
    assert json.load(open(os.path.join(out_dir, "config.json")))["architectures"] == [architecture]
    model, info = auto_class.from_pretrained(out_dir, attn_implementation="eager", output_loading_info=True)
    assert type(model).__name__ == architecture
    assert not any(info.values()), info
    return model.eval()


def _assert_tokenizer_matches(out_dir, spec, pairs=False):
    """AutoTokenizer on the export gives our tokenizer's ids ([CLS] a [SEP] (b [SEP]))."""
    ours = load_tokenizer(spec)
    theirs = transformers.AutoTokenizer.from_pretrained(out_dir)
    for first, second in zip(SENTENCES, SENTENCES[1:] + SENTENCES[:1]):
        a, b = (ours.encode_batch([first, second]))
        expected = [ours.cls_id, *a.tolist(), ours.sep_id] + ([*b.tolist(), ours.sep_id] if pairs else [])
        got = theirs(first, second) if pairs else theirs(first)
        assert got["input_ids"] == expected
        if pairs:
            assert got["token_type_ids"] == [0] * (len(a) + 2) + [1] * (len(b) + 1)
    return theirs


def _encode(tokenizer, *texts):
    enc = tokenizer(*texts, padding=True, return_tensors="np")
    b, s = enc["input_ids"].shape
    ours = {"input_ids": enc["input_ids"], "segment_ids": enc["token_type_ids"], "input_mask": enc["attention_mask"],
            "sequence_ids": enc["attention_mask"], "position_ids": np.broadcast_to(np.arange(s), (b, s))}
    torch_inputs = {k: torch.from_numpy(enc[k].astype(np.int64)) for k in ("input_ids", "token_type_ids",
                                                                "attention_mask")}
    return {k: v.astype(np.int32) for k, v in ours.items()}, torch_inputs


# ----------------------------------------------------------------------------------------------------
# Pretraining runs


def test_pretraining_workdir_exports_bert_for_pretraining_by_the_command(pretraining_run, tmp_path):
    out = tmp_path / "hf"
    result = subprocess.run([sys.executable, "-m", "launch.export_hf", f"--init_from={pretraining_run}",
                             f"--out={out}"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"})
    assert result.returncode == 0, result.stderr[-3000:]
    run = export.load_run(pretraining_run)
    model = _assert_loads_cleanly(transformers.AutoModelForPreTraining, out, "BertForPreTraining")
    tokenizer = _assert_tokenizer_matches(out, run.tokenizer_spec, pairs=True)
    batch, inputs = _encode(tokenizer, SENTENCES, SENTENCES[::-1])
    cfg, params = _fp32(run)
    ours = PreTrainingModel(cfg)
    with torch.no_grad():
        reference = model(**inputs)
    mlm = ours.apply({"params": params}, batch, method=PreTrainingModel.all_position_logits)
    assert cfg.padded_vocab_size > cfg.vocab_size  # the recipe pads the vocabulary; the export holds the real one
    assert np.all(np.asarray(mlm)[..., cfg.vocab_size:] <= -1e8)
    np.testing.assert_allclose(np.asarray(mlm)[..., :cfg.vocab_size], reference.prediction_logits.numpy(),
                               rtol=0, atol=ATOL)
    nsp = ours.apply({"params": params}, {**batch, "masked_lm_positions": np.zeros((3, 1), np.int32)})["nsp_logits"]
    np.testing.assert_allclose(np.asarray(nsp), reference.seq_relationship_logits.numpy(), rtol=0, atol=ATOL)

    texts = ["Paris is the [MASK] of France.", "The river flows into the [MASK]."]
    pipe = transformers.pipeline("fill-mask", model=str(out), top_k=5, device="cpu")
    for text, (candidates,) in zip(texts, inference.fill_mask(inference.load_model(pretraining_run), texts)):
        assert [c["token"] for c in pipe(text)] == [c["token_id"] for c in candidates]

    card = (out / "README.md").read_text()
    final = json.load(open(os.path.join(pretraining_run, train.FINAL_SUMMARY_FILE)))
    assert "pipeline_tag: fill-mask" in card and "BertForPreTraining" in card and "Steps: 2" in card
    assert f"| mlm_accuracy | {final['eval']['mlm_accuracy']:.4f} |" in card
    assert "wikipedia_dump" in card


def test_mlm_only_pretraining_exports_bert_for_masked_lm(pretraining_run, tmp_path):
    """A run with task.nsp_weight=0 (its checkpoint is the pretraining run's, its config says MLM only)."""
    workdir = tmp_path / "mlm_only"
    shutil.copytree(os.path.join(pretraining_run, "checkpoints"), workdir / "checkpoints")
    saved = json.load(open(os.path.join(pretraining_run, "config.json")))
    saved["task"]["nsp_weight"] = 0.0
    (workdir / "config.json").write_text(json.dumps(saved))
    out = export.export_run(str(workdir / "checkpoints" / "2"), tmp_path / "hf")  # a checkpoint dir works too
    model = _assert_loads_cleanly(transformers.AutoModelForMaskedLM, out, "BertForMaskedLM")
    run = export.load_run(str(workdir))
    batch, inputs = _encode(_assert_tokenizer_matches(out, run.tokenizer_spec), SENTENCES)
    cfg, params = _fp32(run)
    mlm = PreTrainingModel(cfg).apply({"params": params}, batch, method=PreTrainingModel.all_position_logits)
    with torch.no_grad():
        np.testing.assert_allclose(np.asarray(mlm)[..., :cfg.vocab_size], model(**inputs).logits.numpy(), rtol=0,
                                   atol=ATOL)
    assert "No final summary" in (out / "README.md").read_text()


# ----------------------------------------------------------------------------------------------------
# Fine-tuning runs


def test_classification_exports_with_its_labels_and_runs_in_text_classification(finetuned, exported):
    out, (_, workdir) = exported["classification"], finetuned["classification"]
    model = _assert_loads_cleanly(transformers.AutoModelForSequenceClassification, out,
                                  "BertForSequenceClassification")
    names = get_finetune_reader("glue/mrpc").label_names()
    assert model.config.id2label == dict(enumerate(names)) and model.config.problem_type == (
        "single_label_classification")
    run = export.load_run(workdir)
    tokenizer = _assert_tokenizer_matches(out, run.tokenizer_spec, pairs=True)
    first, second = [a for _, a, _ in MRPC_PAIRS[:3]], [b for _, _, b in MRPC_PAIRS[:3]]
    batch, inputs = _encode(tokenizer, first, second)
    cfg, params = _fp32(run)
    logits = np.asarray(PooledClassifier(cfg, len(names)).apply({"params": params}, batch))
    with torch.no_grad():
        np.testing.assert_allclose(logits, model(**inputs).logits.numpy(), rtol=0, atol=ATOL)
    pipe = transformers.pipeline("text-classification", model=out, device="cpu")
    for row, (a, b) in enumerate(zip(first, second)):
        (best,) = [pipe({"text": a, "text_pair": b})] if isinstance(pipe({"text": a, "text_pair": b}), dict) else pipe(
            {"text": a, "text_pair": b})
        assert best["label"] == names[int(np.argmax(logits[row]))]
        assert best["score"] == pytest.approx(float(np.max(jax.nn.softmax(logits[row]))), abs=ATOL)
    card = open(os.path.join(out, "README.md")).read()
    (summary,) = json.load(open(os.path.join(workdir, finetune.SUMMARY_FILE)))["runs"]  # a single-run workdir
    assert "pipeline_tag: text-classification" in card and ", ".join(names) in card
    assert f"| validation/accuracy | {summary['metrics']['validation']['accuracy']:.4f} |" in card


def test_regression_exports_problem_type_regression_and_scores_unsquashed(finetuned, exported):
    out, (_, workdir) = exported["regression"], finetuned["regression"]
    model = _assert_loads_cleanly(transformers.AutoModelForSequenceClassification, out,
                                  "BertForSequenceClassification")
    assert model.config.problem_type == "regression" and model.config.num_labels == 1
    run = export.load_run(workdir)
    tokenizer = _assert_tokenizer_matches(out, run.tokenizer_spec, pairs=True)
    first, second = [a for a, _, _ in STSB_ROWS[:3]], [b for _, b, _ in STSB_ROWS[:3]]
    batch, inputs = _encode(tokenizer, first, second)
    cfg, params = _fp32(run)
    scores = np.asarray(PooledClassifier(cfg, 1).apply({"params": params}, batch))
    with torch.no_grad():
        np.testing.assert_allclose(scores, model(**inputs).logits.numpy(), rtol=0, atol=ATOL)
    pipe = transformers.pipeline("text-classification", model=out, device="cpu")
    result = pipe({"text": first[0], "text_pair": second[0]})
    result = result[0] if isinstance(result, list) else result
    assert result["score"] == pytest.approx(float(scores[0, 0]), abs=ATOL)  # no sigmoid/softmax on a regression


def test_span_exports_bert_for_question_answering_and_answers_in_the_pipeline(finetuned, exported):
    out, (_, workdir) = exported["span"], finetuned["span"]
    model = _assert_loads_cleanly(transformers.AutoModelForQuestionAnswering, out, "BertForQuestionAnswering")
    run = export.load_run(workdir)
    tokenizer = _assert_tokenizer_matches(out, run.tokenizer_spec, pairs=True)
    _, context, questions = SQUAD_ARTICLES[0]
    batch, inputs = _encode(tokenizer, [q for q, _ in questions], [context] * len(questions))
    cfg, params = _fp32(run)
    logits = SpanModel(cfg).apply({"params": params}, batch)
    with torch.no_grad():
        reference = model(**inputs)
    np.testing.assert_allclose(np.asarray(logits["start_logits"]), reference.start_logits.numpy(), rtol=0, atol=ATOL)
    np.testing.assert_allclose(np.asarray(logits["end_logits"]), reference.end_logits.numpy(), rtol=0, atol=ATOL)
    # transformers 5 removed the question-answering pipeline (its task name now raises a KeyError), so
    # the span logits above are the check; the card keeps the Hub tag but shows no pipeline call.
    card = open(os.path.join(out, "README.md")).read()
    assert "pipeline_tag: question-answering" in card and "transformers.pipeline(" not in card


def test_tagging_exports_the_tag_set_and_the_pipeline_tags_as_our_logits_do(finetuned, exported):
    out, (_, workdir) = exported["tagging"], finetuned["tagging"]
    model = _assert_loads_cleanly(transformers.AutoModelForTokenClassification, out, "BertForTokenClassification")
    assert model.config.id2label == dict(enumerate(conll.NER_TAGS))
    run = export.load_run(workdir)
    tokenizer = _assert_tokenizer_matches(out, run.tokenizer_spec)
    batch, inputs = _encode(tokenizer, SENTENCES)
    cfg, params = _fp32(run)
    logits = np.asarray(TokenClassifier(cfg, len(conll.NER_TAGS)).apply({"params": params}, batch))
    with torch.no_grad():
        np.testing.assert_allclose(logits, model(**inputs).logits.numpy(), rtol=0, atol=ATOL)
    pipe = transformers.pipeline("token-classification", model=out, device="cpu", ignore_labels=[])
    tokens = pipe(SENTENCES[2])
    assert [t["index"] for t in tokens] == list(range(1, int(batch["input_mask"][2].sum()) - 1))
    assert [t["entity"] for t in tokens] == [conll.NER_TAGS[int(np.argmax(logits[2, t["index"]]))] for t in tokens]


def test_multiple_choice_exports_bert_for_multiple_choice_with_equal_logits(finetuned, exported):
    out, (_, workdir) = exported["multiple_choice"], finetuned["multiple_choice"]
    model = _assert_loads_cleanly(transformers.AutoModelForMultipleChoice, out, "BertForMultipleChoice")
    run = export.load_run(workdir)
    tokenizer = _assert_tokenizer_matches(out, run.tokenizer_spec, pairs=True)
    context, start, endings, _ = SWAG_ROWS[2]
    batch, inputs = _encode(tokenizer, [context] * 4, [f"{start} {e}" for e in endings])
    cfg, params = _fp32(run)
    logits = MultipleChoiceModel(cfg, 1).apply({"params": params}, {k: v[None] for k, v in batch.items()})
    with torch.no_grad():
        reference = model(**{k: v[None] for k, v in inputs.items()}).logits.numpy()
    assert reference.shape == (1, 4)
    np.testing.assert_allclose(np.asarray(logits), reference, rtol=0, atol=ATOL)


def test_a_workdir_of_several_runs_names_them_and_a_mean_pooled_head_is_refused(finetuned, tmp_path):
    _, workdir = finetuned["classification"]
    for seed in ("seed_0", "seed_1"):
        shutil.copytree(workdir, tmp_path / "runs" / seed)
    with pytest.raises(ValueError, match=r"holds 2 runs \(seed_0, seed_1\); export one of them"):
        export.export_run(str(tmp_path / "runs"), tmp_path / "out")
    saved = json.load(open(os.path.join(workdir, "config.json")))
    saved["task"]["pooling"] = "mean"
    (tmp_path / "runs" / "seed_0" / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="task.pooling='mean'; transformers' BertForSequenceClassification reads"):
        export.export_run(str(tmp_path / "runs" / "seed_0"), tmp_path / "out")


# ----------------------------------------------------------------------------------------------------
# Import back: a Hugging Face task directory as init_from


def _init_params(config, kind, label_names, run_dir):
    _, trainer, fresh = _trainer(config, kind, label_names, run_dir)
    params = jax.device_get(trainer.state.params)
    trainer.close()
    return params, fresh


@pytest.mark.parametrize("kind", ["classification", "span", "tagging"])
def test_a_hugging_face_head_of_the_same_task_is_kept(kind, finetuned, exported, tmp_path):
    config, workdir = finetuned[kind]
    config = config.copy_and_resolve_references()
    config.train.init_from = exported[kind]
    config.train.seed = 1  # a fresh head other than the exported one (the step-0 runs hold seed 0's)
    params, fresh = _init_params(config, kind, LABELS.get(kind), tmp_path / "run")
    head = "qa_outputs" if kind == "span" else "classifier"
    assert head not in fresh
    np.testing.assert_array_equal(params[head]["kernel"], np.asarray(export.load_run(workdir).params[head]["kernel"]))


def test_a_hugging_face_head_of_another_task_or_label_set_is_dropped_by_name(finetuned, exported, tmp_path, caplog):
    config, _ = finetuned["tagging"]
    config = config.copy_and_resolve_references()
    config.train.init_from = exported["classification"]
    with caplog.at_level("WARNING"):
        _, fresh = _init_params(config, "tagging", conll.NER_TAGS, tmp_path / "tagging")
    assert fresh == ["classifier"]
    assert "dropped its BertForSequenceClassification head classifier (a BertForSequenceClassification head " \
           "(classification), this run is tagging)" in caplog.text
    _write(f"{tmp_path}/local/train.jsonl", _jsonl(LOCAL_ROWS))
    _write(f"{tmp_path}/local/validation.jsonl", _jsonl(LOCAL_ROWS[:4]))
    local = _small(finetune_local.get_config(), exported["classification"], tmp_path / "local")
    caplog.clear()
    with caplog.at_level("WARNING"):
        _, fresh = _init_params(local, "classification", ("neg", "pos"), tmp_path / "local_run")
    assert fresh == ["classifier"]
    names = list(get_finetune_reader("glue/mrpc").label_names())
    assert f"(labels {names} there, ['neg', 'pos'] here)" in caplog.text


PREDICT_INPUTS = {
    "classification": [{"text": SENTENCES[0], "text_b": SENTENCES[1]}, {"text": SENTENCES[2], "text_b": SENTENCES[2]}],
    "regression": [{"text": SENTENCES[0], "text_b": SENTENCES[1]}, {"text": SENTENCES[2], "text_b": SENTENCES[2]}],
    "tagging": [{"text": SENTENCES[2]}, {"text": SENTENCES[0]}],
    "span": [{"id": "q0", "question": "Who beat Somerset?", "context": SENTENCES[2]},
             {"id": "q1", "question": "Where did the cat sit?", "context": SENTENCES[0]}],
    "multiple_choice": [{"context": c, "question": s, "endings": e} for c, s, e, _ in SWAG_ROWS[:2]],
}


def _same_records(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], dict):
                assert a[key].keys() == b[key].keys()
                np.testing.assert_allclose([b[key][k] for k in a[key]], list(a[key].values()), atol=1e-4)
            elif isinstance(a[key], float) or (isinstance(a[key], list) and a[key] and isinstance(a[key][0], float)):
                np.testing.assert_allclose(b[key], a[key], atol=1e-4)
            else:
                assert a[key] == b[key], key


@pytest.mark.parametrize("kind", ["classification", "regression", "tagging", "span", "multiple_choice"])
def test_predict_on_the_exported_directory_gives_the_runs_records(kind, finetuned, exported):
    config, workdir = finetuned[kind]
    ours = predict.predict(workdir, PREDICT_INPUTS[kind], progress=False)
    theirs = predict.predict(exported[kind], PREDICT_INPUTS[kind], progress=False,
                             max_seq_length=config.data.max_seq_length)
    _same_records(ours, theirs)
    assert ours[0].keys() >= {"id"}
