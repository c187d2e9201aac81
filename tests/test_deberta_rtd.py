"""DeBERTa-v3's recipe end to end at test size: a 2-step replaced-token-detection run (gdes) on a DeBERTa encoder
with a DeBERTa SentencePiece vocabulary trained on the sample Wikipedia corpus; its export as ``DebertaV2Model``
with the head in ``discriminator_head.safetensors`` (and the generator as ``DebertaV2ForMaskedLM``), equal to
ours within 1e-5 on a padded batch of real sentences; a classification model initialises from that directory
(``train.init_from``) with the discriminator's encoder."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import torch
import transformers

from bert_jax import finetune, models, train
from bert_jax.config import ModelConfig
from bert_jax.interop import export, hf_convert, hf_electra
from bert_jax.tasks import get_task
from bert_jax.tasks import replaced_token_detection as rtd
from configs import demo, finetune_glue
from data_pipelines import deberta_spm, rows
from data_pipelines.sources import get_source
from tests.helpers import _mrpc_dir, _small, tiny_overrides

ATOL = 1e-5
HEAD_KEYS = sorted(f"discriminator_predictions.{name}.{kind}" for name in ("dense", "dense_prediction")
                   for kind in ("weight", "bias"))


@pytest.fixture(scope="module")
def deberta_rtd_run(sample_corpus, tmp_path_factory):
    """(workdir, tokenizer, real sentences) of ``configs/demo.py:arch=deberta_v2,objective=rtd,sharing=gdes``
    made tiny (2 discriminator layers, 1 generator layer, 2 steps) on a DeBERTa SentencePiece vocabulary."""
    root = tmp_path_factory.mktemp("deberta_rtd")
    source = get_source(sample_corpus.spec, "train")
    texts = [source[i] for i in range(min(40, len(source)))]
    tokenizer = deberta_spm.train_deberta_spm(texts, 600, str(root / "spm"), input_sentence_size=1000)
    config = demo.get_config("arch=deberta_v2,objective=rtd,sharing=gdes")
    config.update_from_flattened_dict({
        **tiny_overrides("", sample_corpus.spec), "tokenizer.kind": "sentencepiece",
        "tokenizer.model_file": tokenizer.spec["model_file"], "tokenizer.lowercase": False,
        "model.vocab_size": tokenizer.vocab_size, "tokenizer.vocab_size": tokenizer.vocab_size,
        "model.num_layers": 2, "model.dtype": "float32", "model.position_buckets": 8,
        "train.num_steps": 2, "train.eval_every": 2, "train.eval_batches": 1, "train.checkpoint_every": 2,
        "train.async_checkpoint": False, "train.plot": False, "train.tensorboard": False, "train.worker_count": 0})
    config.tokenizer.convention = "deberta"
    workdir = str(root / "run")
    train.run(config, workdir)
    lines = [line.strip() for text in texts[-20:] for line in text.splitlines() if len(line.split()) > 3]
    sentences = [" ".join(line.split()[:n]) for line, n in zip(lines, (4, 40, 9, 25, 6, 60))]
    return workdir, tokenizer, sentences


@pytest.fixture(scope="module")
def exported(deberta_rtd_run, tmp_path_factory):
    """(discriminator dir, generator dir, the run read back, its RTD task)."""
    workdir, _, _ = deberta_rtd_run
    root = tmp_path_factory.mktemp("deberta_rtd_export")
    export.export_run(workdir, root / "disc", generator_dir=root / "gen")
    run = export.load_run(workdir)
    return root / "disc", root / "gen", run, get_task("rtd", run.model_config, max_predictions=5,
                                                       embedding_sharing="gdes")


def _padded_batch(tokenizer, sentences, length=32):
    """Our rows of ``sentences`` (``[CLS] ... [SEP]``, truncated, right-padded), int32 ``[B, length]``."""
    ids = [x[:length - 2] for x in tokenizer.encode_batch(sentences)]
    batch = rows.encoder_rows(ids, length=length, cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id,
                              pad_id=tokenizer.pad_id, positions=True)
    return {name: jnp.asarray(value) for name, value in batch.items()}


def _torch_inputs(batch):
    return {"input_ids": torch.tensor(np.asarray(batch["input_ids"]), dtype=torch.long),
            "attention_mask": torch.tensor(np.asarray(batch["input_mask"]), dtype=torch.long)}


def test_discriminator_exports_as_deberta_v2_model_with_its_head_beside_it(deberta_rtd_run, exported):
    _, tokenizer, sentences = deberta_rtd_run
    disc_dir, _, run, task = exported
    assert json.loads((disc_dir / "config.json").read_text())["architectures"] == ["DebertaV2Model"]
    model, info = transformers.DebertaV2Model.from_pretrained(disc_dir, output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched keys
    head = safetensors.numpy.load_file(disc_dir / hf_electra.DISCRIMINATOR_HEAD_FILE)
    assert sorted(head) == HEAD_KEYS and head["discriminator_predictions.dense_prediction.weight"].shape == (1, 32)
    card = (disc_dir / "README.md").read_text()
    assert hf_electra.DISCRIMINATOR_HEAD_FILE in card and all(f"`{key}`" in card for key in HEAD_KEYS)
    assert "Pretraining objective: replaced-token detection" in card
    # The run's tokenizer came along: transformers' DebertaV2Tokenizer lays out the same rows.
    theirs = transformers.AutoTokenizer.from_pretrained(disc_dir)
    assert type(theirs).__name__ == "DebertaV2Tokenizer"
    batch = _padded_batch(tokenizer, sentences)
    hf_rows = theirs(sentences, max_length=32, truncation=True, padding="max_length")
    np.testing.assert_array_equal(np.asarray(batch["input_ids"]), hf_rows["input_ids"])
    real = np.asarray(batch["input_mask"]) > 0
    assert (real.sum(1) < 32).sum() >= 3  # padded rows

    discriminator = task.discriminator_params(run.params)  # E + E_delta folded in
    ours_states, _ = models.encoder(run.model_config).apply(
        {"params": discriminator["bert"]}, batch["input_ids"], batch["segment_ids"], batch["sequence_ids"],
        batch["position_ids"], deterministic=True)
    ours_logits = task.model.apply({"params": task.module_params(run.params)}, batch, method="discriminator_logits")
    weights = {key: torch.from_numpy(value) for key, value in head.items()}
    with torch.no_grad():  # the model card's recipe
        hidden = model.eval()(**_torch_inputs(batch)).last_hidden_state
        x = torch.nn.functional.linear(hidden, weights["discriminator_predictions.dense.weight"],
                                       weights["discriminator_predictions.dense.bias"])
        x = transformers.activations.ACT2FN[model.config.hidden_act](x)
        logits = torch.nn.functional.linear(x, weights["discriminator_predictions.dense_prediction.weight"],
                                            weights["discriminator_predictions.dense_prediction.bias"])[..., 0]
    np.testing.assert_allclose(np.asarray(ours_states)[real], hidden.numpy()[real], rtol=0, atol=ATOL)
    np.testing.assert_allclose(np.asarray(ours_logits)[real], logits.numpy()[real], rtol=0, atol=ATOL)


def test_generator_exports_as_deberta_v2_for_masked_lm(deberta_rtd_run, exported):
    _, tokenizer, sentences = deberta_rtd_run
    _, gen_dir, run, task = exported
    model, info = transformers.DebertaV2ForMaskedLM.from_pretrained(gen_dir, output_loading_info=True)
    assert not any(info.values()), info
    assert model.config.num_hidden_layers == 1 and model.config.vocab_size == tokenizer.vocab_size
    batch = _padded_batch(tokenizer, sentences)
    ours = rtd.Generator(task.generator_config).apply({"params": task.generator_params(run.params)}, batch,
                                                      method="all_position_logits")
    with torch.no_grad():
        theirs = model.eval()(**_torch_inputs(batch)).logits.numpy()
    real = np.asarray(batch["input_mask"]) > 0
    np.testing.assert_allclose(np.asarray(ours)[..., :tokenizer.vocab_size][real], theirs[real], rtol=0, atol=ATOL)


def test_fine_tuning_starts_from_the_exported_discriminator(deberta_rtd_run, exported, tmp_path):
    _, tokenizer, _ = deberta_rtd_run
    disc_dir, _, run, _ = exported
    glue = _mrpc_dir(tmp_path / "glue")
    config, source, got_tokenizer = finetune.prepare(_small(finetune_glue.get_config("task=mrpc"), disc_dir, glue))
    assert source.kind == "hf" and config.model.architecture == "deberta_v2"
    assert got_tokenizer.spec["convention"] == "deberta" and got_tokenizer.mask_id == tokenizer.mask_id
    task = get_task("classification", ModelConfig(**config.model), num_labels=2)
    trainer, _, fresh = finetune.init_trainer(config, task, str(tmp_path / "init"), source)
    got = jax.device_get(trainer.state.params)
    trainer.close()
    assert fresh == ["classifier"]
    expected = models.fold_encoder_delta(run.params)["bert"]
    for path, value in hf_convert.flatten(got["bert"]).items():
        if path[0] == "pooler":  # DebertaV2Model has none: fresh
            continue
        want = hf_convert.get_path(expected, path)
        rows_ = tokenizer.vocab_size if path[-1] == "word_embeddings" else None
        np.testing.assert_array_equal(np.asarray(value)[:rows_], np.asarray(want)[:rows_], err_msg=str(path))
