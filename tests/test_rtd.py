"""Replaced-token detection (task ``rtd``): sampling and labels, the loss and its weighting, GDES gradients,
the AUC sums, a short run through the real trainer, init_from into fine-tuning, and the Hugging Face
ELECTRA classes both ways (tiny BERT encoders; a padded batch; 1e-5)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from sklearn.metrics import roc_auc_score

from bert_jax import checkpoint, finetune, models, train
from bert_jax.config import ModelConfig
from bert_jax.interop import export, hf_electra, hf_files
from bert_jax.models.layers import unbox
from bert_jax.tasks import get_task
from bert_jax.tasks import replaced_token_detection as rtd
from bert_jax.tasks.base import safe_divide
from configs import demo, finetune_glue
from data_pipelines import vocab_training
from tests.helpers import MASK, _small, random_pretraining_batch, tiny_overrides

V, P = 300, 5
CFG = ModelConfig(vocab_size=V, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                  max_position_embeddings=64, hidden_dropout=0.0, attention_dropout=0.0)
WORD_EMBEDDINGS = ("embeddings", "word_embeddings")


def _batch(seed=0, batch_size=4, seq_len=32):
    return {k: jnp.asarray(v) for k, v in random_pretraining_batch(seed, batch_size, seq_len, P, V).items()}


def _perturbed(params, seed=3, scale=0.05):
    """Random non-zero values everywhere (so zero-initialised biases and E_delta take part)."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree.unflatten(tree, [x + scale * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)])


@pytest.fixture(scope="module")
def tasks():
    return {sharing: get_task("rtd", CFG, max_predictions=P, embedding_sharing=sharing)
            for sharing in rtd.SHARINGS}


@pytest.fixture(scope="module")
def params(tasks):
    """One perturbed initialisation in each sharing's stored layout (one init, so one compile)."""
    ees = _perturbed(unbox(tasks["ees"].init_params(jax.random.PRNGKey(0))))
    table = ees["bert"]["embeddings"]["word_embeddings"]
    delta = {"embeddings": {"word_embeddings": 0.05 * jax.random.normal(jax.random.PRNGKey(9), table.shape)}}
    generator = {**ees["generator"], "bert": {**ees["generator"]["bert"], "embeddings": {
        **ees["generator"]["bert"]["embeddings"], "word_embeddings": table + 0.01}}}
    return {"ees": ees, "gdes": {**ees, "bert_delta": delta}, "none": {**ees, "generator": generator}}


# ----------------------------------------------------------------------------------------------------
# Mechanics


def test_the_stored_tree_keeps_the_shared_table_once(tasks, params):
    ees, gdes, none = params["ees"], params["gdes"], params["none"]
    assert sorted(ees) == ["bert", "discriminator_predictions", "generator"]
    assert sorted(gdes) == ["bert", "bert_delta", "discriminator_predictions", "generator"]
    assert "word_embeddings" not in ees["generator"]["bert"]["embeddings"]
    assert "word_embeddings" in none["generator"]["bert"]["embeddings"]
    assert gdes["bert_delta"]["embeddings"]["word_embeddings"].shape == (V, CFG.hidden_size)
    for sharing in ("gdes", "none"):  # the fixture's trees have the layout each task initialises
        shapes = jax.eval_shape(tasks[sharing].init_params, jax.random.PRNGKey(0))
        assert jax.tree.structure(unbox(shapes)) == jax.tree.structure(params[sharing]), sharing
    delta = unbox(tasks["gdes"].init_params(jax.random.PRNGKey(0)))["bert_delta"]
    assert not np.any(delta["embeddings"]["word_embeddings"])  # E_delta starts at zero
    assert tasks["ees"].generator_config.num_layers == CFG.num_layers // 2  # DeBERTa-v3: half the depth
    assert set(tasks["ees"].head_names) == {"discriminator_predictions", "generator"}


def test_replacements_only_at_masked_positions_with_correct_labels():
    batch = _batch()
    original = np.asarray(rtd.original_ids(batch))
    weights = np.asarray(batch["masked_lm_weights"])
    rows, cols = np.nonzero(weights)
    positions = np.asarray(batch["masked_lm_positions"])[rows, cols]
    np.testing.assert_array_equal(original[rows, positions], np.asarray(batch["masked_lm_ids"])[rows, cols])
    assert not np.any(original == MASK)
    # A generator sure of token 7 at even predictions, uniform at the others.
    logits = np.zeros((4, P, V), np.float32)
    logits[:, ::2, 7] = 100.0
    corrupted, replaced = map(np.asarray, rtd.replace_with_samples(batch, jnp.asarray(logits), jax.random.PRNGKey(1)))
    masked = np.zeros_like(original, bool)
    masked[rows, positions] = True
    np.testing.assert_array_equal(corrupted[~masked], original[~masked])  # padding predictions write nothing
    sure = [(r, p) for r, c, p in zip(rows, cols, positions) if c % 2 == 0]
    assert all(corrupted[r, p] == 7 for r, p in sure)
    np.testing.assert_array_equal(replaced, (corrupted != original) & (np.asarray(batch["input_mask"]) > 0))
    assert replaced[~masked].sum() == 0 and replaced.sum() > len(sure) // 2
    # A generator sure of the original token replaces nothing (ELECTRA labels such samples "original").
    logits = 100.0 * np.eye(V, dtype=np.float32)[np.asarray(batch["masked_lm_ids"])]
    corrupted, replaced = rtd.replace_with_samples(batch, jnp.asarray(logits), jax.random.PRNGKey(2))
    np.testing.assert_array_equal(np.asarray(corrupted), original)
    assert int(replaced.sum()) == 0


def test_the_loss_is_generator_mlm_plus_lambda_times_the_discriminator_loss(tasks, params):
    batch, key = _batch(1), jax.random.PRNGKey(5)
    task = tasks["ees"]
    loss, sums = jax.jit(lambda p: task.loss_and_metrics(p, batch, key, deterministic=False))(params["ees"])
    outputs = jax.jit(lambda p: task.apply(p, batch, key, deterministic=False))(params["ees"])
    logits, labels = np.asarray(outputs["rtd_logits"], np.float64), np.asarray(outputs["is_replaced"])
    real = np.asarray(batch["input_mask"]) > 0
    bce = np.logaddexp(0, logits) - labels * logits  # -log sigmoid for 1, -log(1 - sigmoid) for 0
    np.testing.assert_allclose(float(sums["rtd_loss_sum"]) / real.sum(), bce[real].mean(), rtol=1e-5)
    assert float(sums["rtd_tokens"]) == real.sum() and float(sums["replaced_count"]) == labels[real].sum()
    mlm = float(sums["mlm_loss_sum"] / sums["mlm_weight"])
    np.testing.assert_allclose(float(loss), mlm + 50.0 * bce[real].mean(), rtol=1e-5)
    light = get_task("rtd", CFG, max_predictions=P, rtd_weight=1.0)
    light_loss = jax.jit(lambda p: light.loss_and_metrics(p, batch, key, False)[0])(params["ees"])
    np.testing.assert_allclose(float(light_loss), mlm + bce[real].mean(), rtol=1e-5)
    # Evaluation samples with a fixed key: repeatable.
    evaluate = jax.jit(lambda p: task.loss_and_metrics(p, batch, None, True)[1])
    first, again = evaluate(params["ees"]), evaluate(params["ees"])
    assert float(first["replaced_count"]) == float(again["replaced_count"]) > 0


def _grads(task, params, part):
    """Gradients of the generator's MLM loss (``"mlm"``) or of the discriminator's loss (``"rtd"``)."""
    batch, key = _batch(2), jax.random.PRNGKey(6)

    def loss(p):
        sums = task.metric_sums(task.apply(p, batch, key, deterministic=False), batch)
        return safe_divide(sums[f"{part}_loss_sum"], sums["mlm_weight" if part == "mlm" else "rtd_tokens"])

    return jax.jit(jax.grad(loss))(params)


def _norm(tree):
    return float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(tree)))


def test_gdes_gives_the_shared_table_only_the_generator_gradient(tasks, params):
    rtd_grads = _grads(tasks["gdes"], params["gdes"], "rtd")
    assert _norm(rtd_grads["bert"]["embeddings"]["word_embeddings"]) == 0.0  # stop_gradient(E)
    assert _norm(rtd_grads["bert_delta"]) > 0  # ... + E_delta
    assert _norm(rtd_grads["generator"]) == 0.0  # no gradient through the sampling
    assert _norm(rtd_grads["bert"]["encoder"]) > 0
    mlm_grads = _grads(tasks["gdes"], params["gdes"], "mlm")
    assert _norm(mlm_grads["bert"]["embeddings"]["word_embeddings"]) > 0  # the generator trains E
    assert _norm(mlm_grads["bert_delta"]) == 0.0 and _norm(mlm_grads["discriminator_predictions"]) == 0.0
    # ELECTRA's sharing: both losses train E.
    ees_grads = _grads(tasks["ees"], params["ees"], "rtd")
    assert _norm(ees_grads["bert"]["embeddings"]["word_embeddings"]) > 0
    assert _norm(ees_grads["generator"]) == 0.0


def test_auc_sums_match_sklearn_with_ties_and_padding():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=(6, 40))
    scores = np.round(labels * 0.7 + rng.normal(size=labels.shape), 1)  # rounded: many ties
    weights = (rng.random(labels.shape) > 0.2).astype(np.float32)
    concordant, pairs = rtd.auc_sums(jnp.asarray(scores), jnp.asarray(labels), jnp.asarray(weights))
    keep = weights > 0
    np.testing.assert_allclose(float(concordant / pairs), roc_auc_score(labels[keep], scores[keep]), rtol=1e-6)
    assert float(pairs) == (labels[keep] == 1).sum() * (labels[keep] == 0).sum()


@pytest.mark.parametrize("kwargs, message", [
    ({"embedding_sharing": "tied"}, r"task.embedding_sharing='tied'"),
    ({"nsp_weight": 1.0}, r"task.nsp_weight=1.0: task.name='rtd' has no NSP head"),
    ({"rtd_weight": 0.0}, r"task.rtd_weight=0.0 must be > 0"),
    ({"generator_hidden_size": 16}, r"task.generator_hidden_size=16 differs from model.hidden_size=32"),
])
def test_bad_task_options_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        get_task("rtd", CFG, max_predictions=P, **kwargs)
    narrow = get_task("rtd", CFG, max_predictions=P, embedding_sharing="none", generator_hidden_size=16)
    assert (narrow.generator_config.hidden_size, narrow.generator_config.num_heads) == (16, 1)


# ----------------------------------------------------------------------------------------------------
# Hugging Face ELECTRA, both ways


def _discriminator_logits(task, params, batch):
    """Our discriminator's logits on ``batch["input_ids"]`` as given (float32 ``[B, S]``)."""
    return jax.jit(lambda p: task.model.apply({"params": task.module_params(p)}, batch,
                                              method="discriminator_logits"))(params)


def _torch_logits(model, batch):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(np.asarray(batch["input_ids"])),
                    attention_mask=torch.tensor(np.asarray(batch["input_mask"])),
                    token_type_ids=torch.tensor(np.asarray(batch["segment_ids"])))
    return out.logits.numpy()


def test_discriminator_exports_to_electra_for_pretraining(tasks, params, tmp_path):
    task, batch = tasks["gdes"], _batch(3, seq_len=24)
    ours = _discriminator_logits(task, params["gdes"], batch)
    export.export_hf(task.discriminator_params(params["gdes"]), CFG, tmp_path, conversion=hf_electra.CONVERSION,
                     architecture="ElectraForPreTraining")
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["ElectraForPreTraining"]
    theirs = _torch_logits(transformers.ElectraForPreTraining.from_pretrained(tmp_path).eval(), batch)
    real = np.asarray(batch["input_mask"]) > 0
    np.testing.assert_allclose(np.asarray(ours)[real], theirs[real], atol=1e-5)


def test_generator_exports_to_electra_for_masked_lm(tasks, params, tmp_path):
    task, batch = tasks["ees"], _batch(4, seq_len=24)
    generator = task.generator_params(params["ees"])
    ours = jax.jit(lambda g: rtd.Generator(task.generator_config).apply(
        {"params": g}, batch, method="all_position_logits"))(generator)
    export.export_hf(generator, task.generator_config, tmp_path, conversion=hf_electra.CONVERSION,
                     architecture="ElectraForMaskedLM")
    theirs = _torch_logits(transformers.ElectraForMaskedLM.from_pretrained(tmp_path).eval(), batch)
    real = np.asarray(batch["input_mask"]) > 0
    np.testing.assert_allclose(np.asarray(ours)[real], theirs[real], atol=1e-5)


def test_electra_for_pretraining_imports_as_a_bert_discriminator(tasks, params, tmp_path):
    hf_cfg = transformers.ElectraConfig(vocab_size=V, embedding_size=32, hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.ElectraForPreTraining(hf_cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(tmp_path)
    cfg, imported, report = hf_files.load_hf_checkpoint(tmp_path)
    assert cfg.architecture == "bert" and "bert/pooler" in report.missing_heads and not report.unused
    task, batch = tasks["none"], _batch(5, seq_len=24)
    ours = _discriminator_logits(task, {**params["none"], "bert": imported["bert"],
                                        "discriminator_predictions": imported["discriminator_predictions"]}, batch)
    real = np.asarray(batch["input_mask"]) > 0
    np.testing.assert_allclose(np.asarray(ours)[real], _torch_logits(model, batch)[real], atol=1e-5)


# ----------------------------------------------------------------------------------------------------
# Through the real trainer, then init_from into fine-tuning and export_run


@pytest.fixture(scope="module")
def rtd_run(sample_corpus, tmp_path_factory):
    """``configs/demo.py:objective=rtd,sharing=gdes`` made tiny: 40 steps on the sample Wikipedia corpus."""
    root = tmp_path_factory.mktemp("rtd_run")
    tokenizer = vocab_training.build_vocab_from_source(
        sample_corpus.spec, {"kind": "wordpiece", "vocab_size": 2000, "lowercase": True}, str(root / "vocab"))
    config = demo.get_config("objective=rtd,sharing=gdes")
    config.update_from_flattened_dict({
        **tiny_overrides(tokenizer.spec["vocab_file"], sample_corpus.spec),
        "model.num_layers": 2, "train.num_steps": 40, "train.eval_every": 40, "train.checkpoint_every": 40,
        "train.log_every": 5, "optimizer.learning_rate": 2e-3, "optimizer.warmup_steps": 4,
        "train.async_checkpoint": False, "train.tensorboard": False, "train.plot": False})
    workdir = str(root / "run")
    summary = train.run(config, workdir)
    return workdir, summary


def test_a_short_rtd_run_trains_the_discriminator(rtd_run):
    workdir, summary = rtd_run
    records = [json.loads(line) for line in open(f"{workdir}/metrics.jsonl")]
    train_records = [r for r in records if r["split"] == "train"]
    first, last = train_records[0], train_records[-1]
    assert last["rtd_accuracy"] > first["rtd_accuracy"] + 0.1, (first, last)
    assert last["rtd_loss"] < first["rtd_loss"], (first, last)
    assert summary["eval"]["rtd_auc"] > 0.55, summary["eval"]
    assert 0.0 < summary["eval"]["replaced_fraction"] < 0.2


def test_fine_tuning_starts_from_the_discriminator(rtd_run, tmp_path):
    workdir, _ = rtd_run
    config, source, _ = finetune.prepare(_small(finetune_glue.get_config("task=mrpc"), workdir, tmp_path))
    config.tokenizer.vocab_file = source.tokenizer_spec["vocab_file"]
    task = get_task("classification", ModelConfig(**config.model), num_labels=2)
    trainer, _, fresh = finetune.init_trainer(config, task, str(tmp_path / "run"), source)
    got = jax.device_get(trainer.state.params)
    trainer.close()
    saved = export.load_run(workdir)
    assert set(got) == {"bert", "classifier"} and fresh == ["classifier"]
    expected = models.fold_encoder_delta(saved.params)["bert"]  # E + E_delta: what the discriminator used
    assert checkpoint.tree_equal(got["bert"], expected)
    assert not checkpoint.tree_equal(got["bert"]["embeddings"], saved.params["bert"]["embeddings"])


def test_export_run_writes_the_discriminator_and_generator(rtd_run, tmp_path):
    workdir, _ = rtd_run
    export.export_run(workdir, tmp_path / "disc", generator_dir=tmp_path / "gen")
    disc = transformers.ElectraForPreTraining.from_pretrained(tmp_path / "disc").eval()
    gen = transformers.ElectraForMaskedLM.from_pretrained(tmp_path / "gen").eval()
    assert gen.config.num_hidden_layers == 1 and disc.config.num_hidden_layers == 2
    assert (tmp_path / "disc" / "vocab.txt").exists() and "replaced-token detection" in (
        tmp_path / "disc" / "README.md").read_text()
    run = export.load_run(workdir)
    task = get_task("rtd", run.model_config, max_predictions=5, embedding_sharing="gdes")
    batch = _batch(6, seq_len=24)
    batch["input_ids"] = jnp.minimum(batch["input_ids"], run.model_config.vocab_size - 1)
    ours = _discriminator_logits(task, run.params, batch)
    real = np.asarray(batch["input_mask"]) > 0
    np.testing.assert_allclose(np.asarray(ours)[real], _torch_logits(disc, batch)[real], atol=1e-5)
    # an exported discriminator is also a valid init_from (a BERT encoder, pooler fresh)
    cfg, imported, _ = hf_files.load_hf_checkpoint(tmp_path / "disc")
    assert cfg.architecture == "bert"
    folded = models.fold_encoder_delta(run.params)["bert"]["embeddings"]["word_embeddings"]
    assert folded.shape[0] == run.model_config.padded_vocab_size  # the export holds the real vocabulary rows
    np.testing.assert_allclose(imported["bert"]["embeddings"]["word_embeddings"], folded[:run.model_config.vocab_size])


@pytest.mark.parametrize("arg", ["size=base,objective=rtd", "size=large,phase=2,objective=rtd,sharing=gdes",
                                 "size=small,objective=rtd,sharing=none"])
def test_rtd_config_variants_validate_and_build_their_task(arg):
    from bert_jax import run_config, step_builder  # pylint: disable=import-outside-toplevel
    from configs import pretrain  # pylint: disable=import-outside-toplevel

    config = pretrain.get_config(arg)
    run_config.validate(config, num_devices=8)
    assert config.task.name == "rtd" and not config.data.nsp and config.task.nsp_weight == 0
    task = step_builder.task_from_config(config)
    assert task.embedding_sharing == config.variant.sharing and task.rtd_weight == 50.0
    assert task.generator_config.num_layers == config.model.num_layers // 2
    with pytest.raises(ValueError, match="objective='electra'"):
        pretrain.get_config("objective=electra")


def test_gdes_on_the_deberta_encoder_through_the_registry():
    """The same task on another registered architecture (DeBERTa-v3's recipe: arch=deberta_v2, gdes)."""
    from bert_jax import step_builder  # pylint: disable=import-outside-toplevel
    from configs import pretrain  # pylint: disable=import-outside-toplevel

    config = pretrain.get_config("size=tiny,arch=deberta_v2,objective=rtd,sharing=gdes")
    config.model.update(vocab_size=V, hidden_size=32, num_heads=2, intermediate_size=64, max_position_embeddings=64)
    task = step_builder.task_from_config(config)
    assert task.model_config.architecture == task.generator_config.architecture == "deberta_v2"
    params = unbox(task.init_params(jax.random.PRNGKey(0)))
    assert "word_embeddings" not in params["generator"]["bert"]["embeddings"]
    grads = _grads(task, params, "rtd")
    assert _norm(grads["bert"]["embeddings"]["word_embeddings"]) == 0.0 and _norm(grads["bert_delta"]) > 0


def test_each_encoder_architecture_has_its_rtd_export_layout():
    electra = hf_electra.rtd_layout(CFG)
    assert (electra.discriminator, electra.generator, electra.head_file) == (
        "ElectraForPreTraining", "ElectraForMaskedLM", None)
    deberta = hf_electra.rtd_layout(CFG.replace(architecture="deberta_v2"))
    assert (deberta.discriminator, deberta.generator, deberta.head_file) == (
        "DebertaV2Model", "DebertaV2ForMaskedLM", "discriminator_head.safetensors")
    assert "discriminator_predictions.dense.weight" in hf_electra.discriminator_head_card(CFG, deberta)
    assert hf_electra.discriminator_head_card(CFG, electra) == ""  # its class holds the head
    with pytest.raises(ValueError, match=r"model.architecture='modernbert': a replaced-token-detection run exports "
                                         r"for \['bert', 'deberta_v2'\] encoders only"):
        hf_electra.rtd_layout(CFG.replace(architecture="modernbert"))
