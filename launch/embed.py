"""Sentence embeddings (mean pooling) and nearest-neighbour search over a file of sentences.

    python -m launch.embed --init_from=DIR --input=sentences.txt --output=embeddings.npy
    python -m launch.embed --init_from=DIR --input=sentences.txt --query="a charming, funny film" --k=5

``--input``: one sentence a line (``.txt``; fastText ``__label__`` prefixes are dropped), or ``.tsv`` /
``.jsonl`` with a ``text`` column. ``--output`` saves the float32 ``[N, hidden]`` matrix (``.npy``);
each ``--query`` prints its ``--k`` most similar sentences by cosine similarity (faiss).
"""

from __future__ import annotations

import numpy as np
from absl import flags

from bert_jax import entry, inference

_INIT_FROM = flags.DEFINE_string("init_from", None, "Model directory (Hugging Face or a workdir).", required=True)
_INPUT = flags.DEFINE_string("input", None, "File of sentences.", required=True)
_ENCODING = flags.DEFINE_string("encoding", "utf-8", "Text encoding of --input (gensim's polarity file: cp1252).")
_OUTPUT = flags.DEFINE_string("output", None, "Where to save the embeddings (.npy).")
_NORMALIZE = flags.DEFINE_boolean("normalize", False, "L2-normalise the saved embeddings.")
_QUERY = flags.DEFINE_multi_string("query", [], "Sentence to search for (repeat the flag for more).")
_K = flags.DEFINE_integer("k", 5, "Neighbours per query.")


@entry.main()
def main(argv):
    entry.no_arguments(argv)
    model = inference.load_model(_INIT_FROM.value)  # a bad directory or file: one line, exit 2
    sentences = inference.read_sentences(_INPUT.value, _ENCODING.value)
    vectors = inference.embed(model, sentences, normalize=_NORMALIZE.value)
    if _OUTPUT.value:
        np.save(_OUTPUT.value, vectors)
        print(f"saved {vectors.shape[0]} embeddings of size {vectors.shape[1]} to {_OUTPUT.value}")
    if _QUERY.value:
        index = inference.NearestNeighbours(vectors)
        scores, indices = index.search(inference.embed(model, _QUERY.value), _K.value)
        for query, row_scores, row_indices in zip(_QUERY.value, scores, indices):
            print(query)
            for score, i in zip(row_scores, row_indices):
                print(f"  {score:.4f}  [{i}] {sentences[i]}")


if __name__ == "__main__":
    main.run()
