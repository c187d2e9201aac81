"""Smoke test of the pretraining-step benchmark (bench/bench_step.py, bench/step_runners.py, bench/device_check.sh).

No timing is asserted: the records must be complete and finite, the losses those of an untrained BERT,
the random batch a realistic contract batch (also packed), FLOPs/token the formula of docs/benchmarks.md
computed from the parameters the model really has, every architecture's runner pair the same first loss
from the same parameters, and the device check's tiny CPU mode a complete table.
"""

import math

import jax
import numpy as np
import pytest

from bench import bench_step, step_runners, torch_runner
from bert_jax.config import ModelConfig
from bert_jax.tasks import get_task
from data_pipelines import batch as batch_contract

CONFIG = ModelConfig.from_size("tiny")
SHAPE = dict(batch_size=4, seq_len=32, max_predictions=5, steps=2, warmup=1)
# An untrained model predicts uniformly: MLM cross-entropy ~ ln(V), NSP ~ ln(2).
UNTRAINED_LOSS = math.log(CONFIG.vocab_size) + math.log(2)
# The smoke test times nothing that matters: compile quickly (~2x faster than the default level).
FAST_COMPILE = {"xla_backend_optimization_level": 0}
POSITIVE_FIELDS = ("step_time_median_s", "step_time_mean_s", "step_time_min_s", "tokens_per_s",
                   "sequences_per_s", "compile_s", "peak_memory_bytes", "flops_per_token", "achieved_tflops",
                   "cpu_cores_used")


def _check_record(record, framework):
    assert record["framework"] == framework
    assert record["timed_steps"] == SHAPE["steps"]
    for field in POSITIVE_FIELDS:
        assert math.isfinite(record[field]) and record[field] > 0, (field, record[field])
    assert record["step_time_min_s"] <= record["step_time_median_s"] <= record["step_time_max_s"]
    assert record["tokens_per_s"] == pytest.approx(
        SHAPE["batch_size"] * SHAPE["seq_len"] / record["step_time_median_s"])
    assert record["mfu"] is None  # CPU: no known peak
    assert "RSS" in record["peak_memory_source"]
    assert abs(record["loss"] - UNTRAINED_LOSS) < 0.5, record["loss"]
    assert record["page_faults_per_step"] >= 0 and record["system_s_per_step"] >= 0


def test_flops_per_token_counts_the_real_encoder_parameters():
    task = get_task("pretraining", CONFIG, max_predictions=SHAPE["max_predictions"])
    params = jax.eval_shape(task.init_params, jax.random.PRNGKey(0))
    encoder = sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(params["bert"]["encoder"]))
    h, v, s, p, layers = CONFIG.hidden_size, CONFIG.vocab_size, 128, 20, CONFIG.num_layers
    expected = 6 * encoder + 12 * layers * s * h + (p / s) * 6 * (h * h + h * v)
    assert CONFIG.non_embedding_params() == encoder
    assert CONFIG.train_flops_per_token(s, p) == pytest.approx(expected)


def test_random_batch_is_a_realistic_contract_batch():
    batch = step_runners.random_pretraining_batch(batch_size=64, seq_len=128, max_predictions=20,
                                                vocab_size=CONFIG.vocab_size, seed=3)
    assert batch_contract.validate_batch(batch) == {"B": 64, "S": 128, "P": 20}
    real = batch["input_mask"].astype(bool)
    assert 0 < (~real.all(axis=1)).sum() < 64  # some rows padded, not all
    assert (batch["input_ids"][~real] == step_runners.PAD_ID).all()
    assert (batch["input_ids"][:, 0] == step_runners.CLS_ID).all()
    assert (batch["segment_ids"][real] == 1).any() and (batch["segment_ids"][~real] == 0).all()
    predicted = batch["masked_lm_weights"].sum()
    assert 0.13 < predicted / real.sum() < 0.16  # ~15% of the real tokens, capped at P
    targets = batch["masked_lm_ids"][batch["masked_lm_weights"] > 0]
    assert targets.min() >= step_runners.FIRST_REAL_ID and targets.max() < CONFIG.vocab_size
    rows, cols = np.nonzero(batch["masked_lm_weights"])
    assert real[rows, batch["masked_lm_positions"][rows, cols]].all()  # predictions sit on real tokens
    masked_share = (batch["input_ids"] == step_runners.MASK_ID).sum() / predicted
    assert 0.7 < masked_share < 0.9  # the 80% [MASK] of 80/10/10


def test_random_batch_rejects_a_vocabulary_without_real_word_pieces():
    with pytest.raises(ValueError, match="vocab_size=500"):
        step_runners.random_pretraining_batch(batch_size=2, seq_len=16, max_predictions=2, vocab_size=500)


def test_parse_mesh():
    assert bench_step.parse_mesh("data=-1") == {"data": -1}
    assert bench_step.parse_mesh("data=2, tensor=4") == {"data": 2, "tensor": 4}
    with pytest.raises(ValueError, match="axis=size"):
        bench_step.parse_mesh("data")


def test_command_line_rejects_bad_arguments(capsys):
    for bad in (["--framework=jax,tf"], ["--steps=0"], ["--mode=parallel"], ["--torch_mlm=all"]):
        with pytest.raises(SystemExit):
            bench_step.main(bad)
    assert "--framework='jax,tf'" in capsys.readouterr().err


def test_alternating_jax_and_torch_measurement():
    shape = {key: SHAPE[key] for key in ("batch_size", "seq_len", "max_predictions")}
    runners = [
        step_runners.make_jax_runner(CONFIG, **shape, mesh={"data": 1}, devices=jax.devices()[:1],
                                   compiler_options=FAST_COMPILE),
        torch_runner.make_torch_runner(CONFIG, **shape, num_threads=1, device="cpu"),
    ]
    records = step_runners.time_runners(runners, config=CONFIG, **SHAPE)
    assert list(records) == ["jax", "torch"]
    for framework, record in records.items():
        _check_record(record, framework)
    assert records["jax"]["alternated_with"] == ["torch"]
    assert records["jax"]["num_devices"] == 1 and records["jax"]["lower_s"] < records["jax"]["compile_s"]
    assert records["torch"]["attn_implementation"] == "sdpa" and records["torch"]["mlm"] == "gather"


def test_worker_failure_is_raised_in_the_parent():
    kwargs = dict(config=CONFIG, batch_size=4, seq_len=32, max_predictions=5, mesh={"data": 3})  # of 8 devices
    with pytest.raises(RuntimeError, match="the jax worker failed") as raised:
        with bench_step.worker_runners(["jax"], {"jax": kwargs}):
            pass
    assert "8 are available" in str(raised.value.__cause__)


def test_torch_full_sequence_mlm_loss_matches_the_gathered_one():
    """Hugging Face's -100 labels path and the masked-position gather give the same loss (same seed)."""
    losses = {}
    for mlm in step_runners.TORCH_MLM_MODES:
        runner = torch_runner.make_torch_runner(
            CONFIG.replace(hidden_dropout=0.0, attention_dropout=0.0), batch_size=4, seq_len=32,
            max_predictions=5, mlm=mlm, num_threads=1, device="cpu")
        losses[mlm] = runner.last_loss()  # the first step's loss, before any update
        assert runner.info["mlm"] == mlm
    assert losses["full"] == pytest.approx(losses["gather"], rel=1e-5)


def test_matmul_benchmark_reports_a_rate_per_framework_and_dtype(capsys):
    from bench import bench_matmul

    rates = bench_matmul.main(["--m=64", "--k=32", "--n=48", "--repeats=2"])
    assert sorted(rates) == [(f, d) for f in ("jax", "torch") for d in ("bfloat16", "float32")]
    assert all(math.isfinite(rate) and rate > 0 for rate in rates.values())
    assert "[64, 32] x [32, 48]" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench_matmul.main(["--dtypes=float16"])


@pytest.mark.parametrize("architecture, over", [("bert", 1.15), ("modernbert", 1.15), ("deberta_v2", 1.15),
                                                ("longformer", 1.6)])
def test_layer_stack_flops_match_the_compilers_count(architecture, over):
    """Each architecture's counted FLOPs (``models.layer_stack_flops``) against XLA's own count of the encoder's
    forward pass, with windows and relative-position spans shorter than the row. XLA also counts softmax,
    LayerNorm and activations (~7% at this size), and Longformer's blocked band computes keys outside the
    window (each block of queries against three blocks of keys), so its compiled count is higher."""
    from bert_jax import models

    cfg = ModelConfig.from_size("tiny", architecture=architecture).replace(
        dtype="float32", vocab_size=128, position_buckets=16, attention_window=(32,), local_attention=32)
    seq_len = 256
    encoder = models.encoder(cfg)
    ids = np.ones((2, seq_len), np.int32)
    params = jax.eval_shape(encoder.init, jax.random.PRNGKey(0), ids)
    cost = jax.jit(lambda p, i: encoder.apply(p, i)[0]).lower(params, ids).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    compiled = cost["flops"] / ids.size
    counted = models.layer_stack_flops(cfg, seq_len)
    assert counted <= compiled <= over * counted, (compiled, counted)
    if architecture in ("modernbert", "longformer"):  # windowed layers count their window, not the row
        wide = cfg.replace(attention_window=(1024,), local_attention=1024)
        growth = models.layer_stack_flops(cfg, 512) - models.layer_stack_flops(cfg, 256)
        assert growth < models.layer_stack_flops(wide, 512) - models.layer_stack_flops(wide, 256)


def test_random_packed_batch_holds_whole_sequences():
    batch = step_runners.random_pretraining_batch(batch_size=16, seq_len=64, max_predictions=10,
                                                vocab_size=CONFIG.vocab_size, seed=1, packed=True)
    assert batch_contract.validate_batch(batch) == {"B": 16, "S": 64, "P": 10}
    assert batch["sequence_ids"].max() > 1  # some rows hold several sequences
    starts = batch["position_ids"] == 0
    real = batch["sequence_ids"] > 0
    assert (batch["input_ids"][starts & real] == step_runners.CLS_ID).all()
    assert (starts & real).sum() == sum(len(set(row[row > 0])) for row in batch["sequence_ids"])
    assert (batch["segment_ids"] == 0).all()
    assert (batch["input_mask"] == real).all()


def test_bench_model_config_takes_the_recipe_fields():
    roberta = step_runners.bench_model_config("roberta", "tiny", seq_len=128)
    assert (roberta.architecture, roberta.pad_token_id, roberta.type_vocab_size, roberta.vocab_size) == (
        "roberta", 1, 1, 50265)
    assert roberta.num_layers == CONFIG.num_layers  # the named size, not the recipe's
    modern = step_runners.bench_model_config("modernbert", "tiny", seq_len=16384, attention_window=64)
    assert (modern.local_attention, modern.hidden_dropout, modern.max_position_embeddings) == (64, 0.0, 16384)
    longformer = step_runners.bench_model_config("longformer", "tiny", seq_len=128, attention_window=32)
    assert longformer.attention_window == (32,) and longformer.max_position_embeddings == 4097
    with pytest.raises(ValueError, match="bert has no local attention window"):
        step_runners.bench_model_config("bert", "tiny", seq_len=128, attention_window=32)
    with pytest.raises(ValueError, match="--arch='electra'"):
        step_runners.bench_model_config("electra", "tiny", seq_len=128)
    cfg = step_runners.bench_model_config("longformer", "tiny", seq_len=32)
    with pytest.raises(ValueError, match="LongformerForMaskedLM cannot keep packed"):
        torch_runner.make_torch_runner(cfg, batch_size=2, seq_len=32, max_predictions=4, packed=True, device="cpu")


# (architecture, packed): every architecture's runner pair, ModernBERT also on packed rows (its sliding layer
# windowed below the row length, so the per-layer-type masks are both exercised).
PAIRS = [("bert", False), ("roberta", False), ("deberta_v2", False), ("longformer", False), ("modernbert", False),
         ("modernbert", True)]


@pytest.mark.parametrize("architecture, packed", PAIRS, ids=[f"{a}{'-packed' if p else ''}" for a, p in PAIRS])
def test_runner_pair_starts_from_the_same_loss(architecture, packed):
    """The JAX runner's initial parameters exported to the transformers class give the same first loss (fp32,
    dropout 0) on the same batch, and both sides take a second step."""
    window = 16 if step_runners.TORCH_ARCHS[architecture].window_field else None
    layers = 2 if architecture == "modernbert" else 1  # ModernBERT: a global and a local layer
    cfg = step_runners.bench_model_config(architecture, "tiny", seq_len=32, attention_window=window, dtype="float32",
                                          vocab_size=1024, hidden_dropout=0.0, attention_dropout=0.0, num_layers=layers)
    shape = dict(batch_size=2, seq_len=32, max_predictions=4, packed=packed)
    jax_runner = step_runners.make_jax_runner(cfg, **shape, mesh={"data": 1}, devices=jax.devices()[:1],
                                              compiler_options=FAST_COMPILE)
    jax_runner.run_step()
    pytorch = torch_runner.make_torch_runner(cfg, **shape, params=jax_runner.initial_params(), num_threads=1,
                                             device="cpu")
    assert abs(jax_runner.last_loss() - pytorch.last_loss()) < 1e-4, (jax_runner.last_loss(), pytorch.last_loss())
    untrained = math.log(1024) + (math.log(2) if architecture == "bert" else 0.0)  # MLM ~ ln(V), NSP ~ ln(2)
    assert abs(jax_runner.last_loss() - untrained) < 0.5
    jax_runner.run_step()
    pytorch.run_step()
    assert abs(jax_runner.last_loss() - pytorch.last_loss()) < 1e-3
    assert pytorch.info["hf_class"] == step_runners.TORCH_ARCHS[architecture].hf_class
    assert jax_runner.info["architecture"] == architecture and pytorch.info["packed"] == packed


def test_device_check_tiny_cpu_mode_prints_every_row(tmp_path):
    """bench/device_check.sh in its tiny CPU mode: the table has a row per framework and shape, all numbers."""
    import os
    import subprocess
    import sys

    out = tmp_path / "device_check.jsonl"
    env = dict(os.environ, DEVICE_CHECK_TINY="1", DEVICE_CHECK_OUT=str(out), PYTHON=sys.executable)
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "device_check.sh")
    done = subprocess.run(["bash", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    table = done.stdout.split("=== device check")[-1].splitlines()[1:]
    assert table[0].split() == ["arch", "size", "S", "packed", "framework", "tokens/s", "MFU", "compile", "s",
                                "peak", "MiB", "loss"]
    rows = [line.split() for line in table[1:] if line.strip()]
    assert sorted((r[2], r[3], r[4]) for r in rows) == [("32", "no", "jax"), ("32", "no", "torch"),
                                                         ("64", "yes", "jax"), ("64", "yes", "torch")]
    for row in rows:
        numbers = [float(cell.rstrip("%")) for cell in row[5:]]
        assert all(math.isfinite(n) and n > 0 for n in numbers), row
