"""A TFDS builder for a local MediaWiki XML dump (``*-pages-articles*.xml[.bz2]``), and its source.

Spec (``name: 'wikipedia_dump'``):

=============== =================================================================================
``dump_path``    the dump file (``.xml`` or ``.xml.bz2``, multistream is fine); only its file name
                 is needed to *read* a prepared dataset, the file itself only to build one
``config``       optional dataset config name (default: derived from the dump's file name; the
                 dataset records the dump's fingerprint, so another dump under the same name
                 rebuilds it or is refused: see ``data_pipelines.sources.fingerprint``)
``data_dir``     where the ArrayRecord dataset lives (default ``./data``)
``prepare``      ``True``: build it when missing (default ``False``: raise naming the command)
``num_workers``  processes that clean wikitext while building (default 1; 0 = all CPU cores)
=============== =================================================================================

Building streams the dump (``xml.etree.ElementTree.iterparse``, each page and the root's children
cleared after use), so the parser's memory does not grow with the dump. It keeps namespace-0,
non-redirect pages, cleans their wikitext with ``data_pipelines.text.clean_wikitext`` (BERT recipe:
prose only; lists, tables, headings dropped; headings become paragraph boundaries; links into the
media, file and category namespaces dropped by the names the dump's ``<siteinfo>`` lists), skips
articles left empty, and writes one example per article with features ``id`` (int64 page id),
``title`` and ``text``. A summary (pages seen, redirects, other namespaces, empty, kept) is logged
and saved in the dataset's ``metadata.json``, with the source fingerprint. A file that is not a
readable dump raises ``DumpFormatError`` naming it (and the XML line) and what was expected. TFDS's
writer buffers serialized examples in memory up to 1 GB before spilling to temporary bucket files,
so peak memory stays bounded for any dump size.
"""

from __future__ import annotations

import bz2
import collections
import contextlib
import concurrent.futures
import dataclasses
import functools
import importlib.util
import itertools
import logging
import multiprocessing
import os
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from data_pipelines.sources import fingerprint
from data_pipelines.sources.tfds_text import (
    DEFAULT_DATA_DIR, TfdsTextSource, open_built_source, safe_config_name,
)
from data_pipelines.text import CLEANING_VERSION, clean_wikitext, dropped_link_namespaces

SPEC_FIELDS = frozenset({"dump_path", "config", "data_dir", "prepare", "num_workers"})
DEMO_DUMP_RELATIVE_PATH = (
    "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
)
_PAGES_PER_TASK = 32  # pages sent to a cleaning worker at once

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DumpPage:
    """One ``<page>`` of a dump (``wikitext`` is the latest revision's ``<text>``)."""

    page_id: int
    title: str
    namespace: int
    is_redirect: bool
    wikitext: str


@dataclasses.dataclass
class DumpSummary:
    """What the builder did with the dump's pages (``pages_seen`` = the sum of the others)."""

    pages_seen: int = 0
    redirects: int = 0
    other_namespaces: int = 0
    empty: int = 0
    kept: int = 0


class DumpFormatError(ValueError):
    """The dump file is not a (complete) MediaWiki XML dump; the message names the file."""


def _dump_elements(dump_path: str | os.PathLike) -> Iterator[tuple[str, ElementTree.Element]]:
    """``iterparse`` events of a dump, with unreadable input turned into :class:`DumpFormatError`.

    Raises:
      FileNotFoundError: no such file.
      DumpFormatError: not bzip2 (for ``.bz2``), truncated, not XML, or its root is not
        ``<mediawiki>``: one line naming the file (and the XML line) and what was expected.
    """
    compressed = str(dump_path).endswith(".bz2")
    expected = ("a MediaWiki pages-articles XML dump" + (" compressed with bzip2" if compressed else "")
                + " (https://dumps.wikimedia.org/)")
    with epath.Path(dump_path).open("rb") as raw, (
            bz2.BZ2File(raw) if compressed else contextlib.nullcontext(raw)) as stream:
        events = ElementTree.iterparse(stream, events=("start", "end"))
        try:
            event, root = next(events)
            if _local_name(root.tag) != "mediawiki":
                raise DumpFormatError(f"{dump_path}: root element is <{_local_name(root.tag)}>, not "
                                      f"<mediawiki>; expected {expected}")
            yield event, root
            yield from events
        except ElementTree.ParseError as error:
            line = error.position[0]
            raise DumpFormatError(f"{dump_path}:{line}: not valid XML ({error}); expected {expected}") from None
        except EOFError as error:  # bz2: the compressed stream ends early
            raise DumpFormatError(f"{dump_path}: truncated ({error}); expected {expected}") from None
        except OSError as error:  # bz2: "Invalid data stream"
            raise DumpFormatError(f"{dump_path}: cannot be decompressed ({error}); expected {expected}") from None


def read_namespaces(dump_path: str | os.PathLike) -> dict[int, tuple[str, ...]]:
    """The namespace names of the wiki a dump comes from, from its ``<siteinfo><namespaces>``.

    Reads only the dump's head (``<siteinfo>`` comes before the first page).

    Args:
      dump_path: ``.xml`` or ``.xml.bz2`` dump.

    Returns:
      Namespace number -> its names: the local name (``'Категория'``, ``'분류'``) and, where the
      ``<namespace>`` element carries one, its ``canonical`` English name. ``{}`` when the dump has
      no siteinfo (cleaning then knows the English names only).

    Raises:
      DumpFormatError: see :func:`_dump_elements`.
    """
    namespaces: dict[int, tuple[str, ...]] = {}
    for event, element in _dump_elements(dump_path):
        name = _local_name(element.tag)
        if event == "end" and name == "namespace":
            try:
                key = int(element.get("key", ""))
            except ValueError:
                raise DumpFormatError(f"{dump_path}: <namespace key={element.get('key')!r}> is not an "
                                      "integer; expected a MediaWiki siteinfo block") from None
            names = (element.text or "", element.get("canonical") or "")
            namespaces[key] = tuple(dict.fromkeys(n.strip() for n in names if n.strip()))
        if (event == "end" and name == "siteinfo") or (event == "start" and name == "page"):
            break
    return namespaces


def iter_dump_pages(dump_path: str | os.PathLike) -> Iterator[DumpPage]:
    """Streams every page of a MediaWiki XML dump; memory does not grow with the dump size.

    Args:
      dump_path: ``.xml`` or ``.xml.bz2`` file in the public dump format (any export schema
        version; tags are matched without their XML namespace).

    Yields:
      ``DumpPage`` per ``<page>``, in file order, redirects and all namespaces included.

    Raises:
      DumpFormatError: see :func:`_dump_elements`; also a page whose ``<id>`` is not an integer.
    """
    root = None
    for event, element in _dump_elements(dump_path):
        if root is None:
            root = element  # <mediawiki>; completed pages stay its children until cleared
        if event != "end" or _local_name(element.tag) != "page":
            continue
        title = element.findtext("{*}title") or ""
        try:
            page_id, namespace = int(element.findtext("{*}id")), int(element.findtext("{*}ns") or 0)
        except (TypeError, ValueError):
            raise DumpFormatError(
                f"{dump_path}: page {title!r} has <id> {element.findtext('{*}id')!r} and <ns> "
                f"{element.findtext('{*}ns')!r}; expected integers") from None
        yield DumpPage(
            page_id=page_id,
            title=title,
            namespace=namespace,
            is_redirect=element.find("{*}redirect") is not None,
            wikitext=element.findtext("{*}revision/{*}text") or "",
        )
        element.clear()
        root.clear()


def _local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def cleaned_articles(
    dump_path: str | os.PathLike, summary: DumpSummary, num_workers: int = 1
) -> Iterator[tuple[DumpPage, str]]:
    """Streams ``(page, plain_text)`` for the kept articles of a dump, counting into ``summary``.

    Args:
      dump_path: the dump file.
      summary: updated in place as pages are seen (complete once the iterator is exhausted).
      num_workers: processes cleaning wikitext; 1 cleans inline. At most ``2 * num_workers`` tasks
        of ``_PAGES_PER_TASK`` pages are in flight, so memory stays bounded.

    Yields:
      Namespace-0, non-redirect pages with non-empty cleaned text, in dump order. Links into the
      media, file and category namespaces are dropped by the names the dump's siteinfo gives them.
    """
    clean = functools.partial(
        clean_wikitext, dropped_namespaces=dropped_link_namespaces(read_namespaces(dump_path))
    )
    articles = _select_articles(iter_dump_pages(dump_path), summary)
    if num_workers <= 1:
        cleaned = ((page, clean(page.wikitext)) for page in articles)
    else:
        cleaned = _clean_in_processes(articles, num_workers, clean)
    for page, text in cleaned:
        if text:
            summary.kept += 1
            yield page, text
        else:
            summary.empty += 1


def _select_articles(pages: Iterable[DumpPage], summary: DumpSummary) -> Iterator[DumpPage]:
    for page in pages:
        summary.pages_seen += 1
        if page.namespace != 0:
            summary.other_namespaces += 1
        elif page.is_redirect:
            summary.redirects += 1
        else:
            yield page


def _clean_in_processes(
    pages: Iterable[DumpPage], num_workers: int, clean: Callable[[str], str]
) -> Iterator[tuple[DumpPage, str]]:
    context = multiprocessing.get_context("spawn")  # no fork of a threaded TFDS process
    pending: collections.deque = collections.deque()
    with concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=context) as pool:
        batches = iter(lambda: list(itertools.islice(pages, _PAGES_PER_TASK)), [])
        for batch in batches:
            # One task per batch; only the texts and the clean_wikitext partial are pickled.
            texts = [page.wikitext for page in batch]
            pending.append((batch, pool.map(clean, texts, chunksize=len(texts))))
            if len(pending) >= 2 * num_workers:
                done_batch, results = pending.popleft()
                yield from zip(done_batch, results)
        while pending:
            done_batch, results = pending.popleft()
            yield from zip(done_batch, results)


def config_name_for_dump(dump_path: str | os.PathLike) -> str:
    """Dataset config name from a dump's file name: ``enwiki-20230601-pages-articles.xml.bz2`` ->
    ``enwiki-20230601-pages-articles``."""
    stem = Path(dump_path).name
    for suffix in (".bz2", ".xml"):
        stem = stem.removesuffix(suffix)
    name = safe_config_name(stem)
    if not name:
        raise ValueError(f"cannot derive a dataset config name from dump path {dump_path!r}")
    return name


@dataclasses.dataclass
class WikipediaDumpConfig(tfds.core.BuilderConfig):
    """Which dump to build: ``dump_path`` (needed only to build) and cleaning parallelism."""

    dump_path: str = ""
    num_workers: int = 1


class WikipediaDump(tfds.core.GeneratorBasedBuilder):
    """One example per article of a local Wikipedia XML dump (see the module docstring)."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "Articles cleaned with mwparserfromhell, BERT-recipe prose only.",
        "1.1.0": "Link namespaces from the dump's siteinfo; lines of a paragraph joined; the source "
                 "fingerprint stored with the dataset.",
    }

    def source_fingerprint(self) -> dict | None:
        """What this config's dump is now (see ``data_pipelines.sources.fingerprint``)."""
        return dump_fingerprint(self.builder_config.dump_path, str(self.VERSION))

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Plain-text articles (namespace 0, no redirects) of the MediaWiki XML dump "
                f"{Path(self.builder_config.dump_path).name or self.builder_config.name}, "
                "cleaned with data_pipelines.text.clean_wikitext."
            ),
            features=tfds.features.FeaturesDict({
                "id": tfds.features.Scalar(dtype=np.int64),
                "title": tfds.features.Text(),
                "text": tfds.features.Text(),
            }),
            metadata=tfds.core.MetadataDict(),
            homepage="https://dumps.wikimedia.org/",
        )

    def _split_generators(self, dl_manager):
        dump_path = self.builder_config.dump_path
        if not dump_path or not Path(dump_path).is_file():
            raise FileNotFoundError(
                f"Wikipedia dump {dump_path!r} not found; expected a MediaWiki "
                "pages-articles .xml or .xml.bz2 file (https://dumps.wikimedia.org/)"
            )
        return {"train": self._generate_examples(dump_path)}

    def _generate_examples(self, dump_path: str):
        summary = DumpSummary()
        self.info.metadata[fingerprint.METADATA_KEY] = self.source_fingerprint()
        for page, text in cleaned_articles(dump_path, summary, self.builder_config.num_workers):
            yield page.page_id, {"id": page.page_id, "title": page.title, "text": text}
        self.info.metadata["summary"] = dataclasses.asdict(summary)
        self.info.metadata["dump_file"] = Path(dump_path).name
        log.info(
            "Wikipedia dump %s: %d pages seen, %d redirects, %d other namespaces, %d empty "
            "articles skipped, %d articles kept",
            dump_path, summary.pages_seen, summary.redirects, summary.other_namespaces,
            summary.empty, summary.kept,
        )
        if not summary.kept:
            raise ValueError(f"no articles kept from Wikipedia dump {dump_path!r}: {summary}")


def dump_fingerprint(dump_path: str, version: str) -> dict | None:
    """A dump's path, size, modification time and head/tail SHA-256 (None: no such file here)."""
    if not dump_path or not epath.Path(dump_path).is_file():
        return None
    location = dump_path if "://" in dump_path else str(Path(dump_path).resolve())
    state = {**fingerprint.file_state(dump_path), "edge_sha256": fingerprint.edge_digest(dump_path)}
    return fingerprint.make_fingerprint(
        kind=f"wikipedia_dump {version}", location=location, files={"": state},
        options={"cleaning": CLEANING_VERSION},
        description=(f"dump {fingerprint.describe_files(location, [state], '')} "
                     f"with head/tail sha256 {state['edge_sha256'][:12]}"),
    )


def builder_for(spec: Mapping) -> WikipediaDump:
    """The builder a ``wikipedia_dump`` spec names (not built yet)."""
    dump_path = spec.get("dump_path")
    config_name = spec.get("config") or (dump_path and config_name_for_dump(dump_path))
    if not config_name:
        raise ValueError(f"wikipedia_dump source spec {dict(spec)!r} needs 'dump_path' (or 'config')")
    num_workers = int(spec.get("num_workers", 1)) or os.cpu_count() or 1
    config = WikipediaDumpConfig(
        name=config_name, dump_path=str(dump_path or ""), num_workers=num_workers
    )
    return WikipediaDump(config=config, data_dir=spec.get("data_dir", DEFAULT_DATA_DIR))


def prepare_command(spec: Mapping) -> str:
    """The shell command that builds the dataset a ``wikipedia_dump`` spec names."""
    dump_path = spec.get("dump_path") or "<path/to/the/dump.xml.bz2>"
    data_dir = spec.get("data_dir", DEFAULT_DATA_DIR)
    return (
        f"python -m launch.prepare_data --source=wikipedia_dump --dump_path={dump_path} "
        f"--data_dir={data_dir}"
    )


def open_source(spec: Mapping) -> TfdsTextSource:
    """All articles of the prepared dump dataset a spec names (built first if ``prepare``)."""
    return open_built_source(builder_for, spec, "wikipedia_dump", prepare_command(spec))


def demo_dump_path() -> str:
    """The real English Wikipedia dump excerpt (206 pages, CC BY-SA) that gensim 4.4.0 ships.

    Raises:
      FileNotFoundError: gensim is not installed, or its wheel lacks the file.
    """
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the demo corpus is the Wikipedia dump excerpt inside gensim's test data, but gensim is "
            "not installed: pip install gensim==4.4.0 (see requirements.txt)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEMO_DUMP_RELATIVE_PATH
    if not path.is_file():
        raise FileNotFoundError(f"gensim is installed but {path} is missing; install gensim==4.4.0")
    return str(path)
