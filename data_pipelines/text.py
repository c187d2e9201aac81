"""Plain-text helpers for pretraining corpora: wikitext cleaning, document normalisation, sentences.

Everything here is pure Python (plus ``mwparserfromhell`` for wikitext) so it runs offline and inside
data-loader worker processes. Conventions shared by every source in ``data_pipelines.sources``:

  * A *document* is one ``str``; ``'\\n'`` separates its paragraphs (or, for sentence-per-line
    corpora, its sentences). There are no blank lines and no leading/trailing whitespace on a line.
  * ``split_sentences(document)`` treats every ``'\\n'`` as a hard boundary and splits each line
    further with rules (see its docstring), so callers never need to know which kind a line is.

Wikitext cleaning follows the original BERT recipe ("text passages only; lists, tables and headers
dropped"): headings become paragraph boundaries, list items, tables, references, math, galleries,
files/images, categories, interlanguage links, templates and comments are dropped, links become their
visible text, and HTML tags are replaced by their contents. Sections whose heading is pure
apparatus (References, External links, See also, ...) are dropped whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import mwparserfromhell
from mwparserfromhell import nodes as wiki_nodes

# ---------------------------------------------------------------------------------------------
# Document normalisation
# ---------------------------------------------------------------------------------------------

_WHITESPACE_RUN = re.compile(r"\s+")


def normalize_document(text: str) -> str:
    """Canonical document form: whitespace runs -> one space per line, empty lines dropped.

    Args:
      text: raw document text; any newline convention.

    Returns:
      The lines of ``text`` with inner whitespace collapsed, stripped, joined by ``'\\n'``; ``''``
      when nothing but whitespace was given.
    """
    lines = (_WHITESPACE_RUN.sub(" ", line).strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line)


# ---------------------------------------------------------------------------------------------
# Wikitext -> plain text
# ---------------------------------------------------------------------------------------------

# Bumped whenever clean_wikitext's output changes: part of a prepared dump's fingerprint.
CLEANING_VERSION = 2

# Tags whose whole content is dropped (not prose, or prose we cannot render faithfully).
_DROPPED_TAGS = frozenset({
    "ref", "references", "table", "math", "chem", "ce", "gallery", "timeline", "imagemap", "score",
    "graph", "templatedata", "mapframe", "maplink", "nowiki", "pre", "source", "syntaxhighlight",
    "hiero", "includeonly", "inputbox", "categorytree", "section", "charinsert", "indicator",
})
# Wiki markup characters that open a list item (bullet, numbered, definition term/description).
_LIST_MARKUP = frozenset({"*", "#", ";", ":"})
# Namespaces whose links are not inline text: Media (-2), File (6), Category (14), by number.
DROPPED_NAMESPACE_KEYS = (-2, 6, 14)
# Their canonical (English) names and aliases, valid on every wiki whatever its language.
CANONICAL_DROPPED_NAMESPACES = frozenset({"media", "file", "image", "category"})
# A link target after a namespace prefix that names a media file (``Usmivka.png``): dropped even
# when the prefix is a local alias the dump's siteinfo does not list (Bulgarian ``Картинка:``).
_MEDIA_FILE_NAME = re.compile(
    r"\.(?:png|jpe?g|gif|svg|tiff?|webp|xcf|bmp|djvu|pdf|ogg|ogv|oga|opus|webm|mp3|mp4|wav|flac|"
    r"midi?|stl)\s*$", re.IGNORECASE
)
# Interlanguage links ``[[de:Foo]]`` (language code, optional variant) -- dropped.
_INTERLANGUAGE_PREFIX = re.compile(r"^[a-z]{2,3}(-[a-z0-9]+)*$")
# Section headings after which the section is apparatus rather than article prose.
_DROPPED_SECTIONS = frozenset({
    "references", "external links", "see also", "further reading", "notes", "bibliography",
    "sources", "footnotes", "citations", "notes and references", "references and notes",
    "works cited", "external sources", "literature",
})
# Inline templates whose output is prose: name -> the positional parameters that make up the text.
_PROSE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "convert": ("1", "2"),
    "cvt": ("1", "2"),
    "lang": ("2",),
    "nowrap": ("1",),
    "nobr": ("1",),
}
_MAGIC_WORD = re.compile(r"__[A-Z]+__")
_STYLE_QUOTES = re.compile(r"'{2,}")  # '' italic '' and ''' bold ''' (parsed with skip_style_tags)
_EMPTY_PARENS = re.compile(r"\(\s*[,;:\u2013\-]*\s*\)")  # "( )", "(; )" left by dropped templates
_DANGLING_PAREN_PUNCT = re.compile(r"\(\s*[,;:]\s*")  # "(; born 1809" -> "(born 1809"
_SPACE_BEFORE_PUNCT = re.compile(r" +([,.;:!?)\]])")
_SPACE_AFTER_OPENING = re.compile(r"([(\[]) +")
# Pre-pass (before parsing): references, comments, and innermost templates that carry no prose.
# The parser would drop all of them anyway; removing them first makes cleaning 2-3x faster.
_REFS_AND_COMMENTS = re.compile(
    r"<ref\b[^>]*?/>|<ref(?:\s[^>]*)?>.*?</ref\s*>|<!--.*?-->", re.DOTALL | re.IGNORECASE
)
_PLAIN_TEMPLATE = re.compile(
    r"\{\{(?!\s*(?:" + "|".join(_PROSE_TEMPLATES) + r")\s*\|)[^{}]*\}\}", re.IGNORECASE
)
# Residual markup that mwparserfromhell left as text (unbalanced templates/tables/links/tags).
# A blank (or whitespace-only) line: MediaWiki's paragraph break. Block markup renders as one too.
_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n\s*")
_BLOCK_BREAK = "\n\n"
_RESIDUAL_MARKUP = re.compile(r"\{\{|\}\}|\[\[|\]\]|\{\||\|\}|<\s*/?\s*ref\b", re.IGNORECASE)


def dropped_link_namespaces(namespaces: Mapping[int, Iterable[str]] | None = None) -> frozenset[str]:
    """The link prefixes (lower case) whose links are dropped: media, files and categories.

    Args:
      namespaces: a dump's ``<siteinfo><namespaces>``, namespace number -> its names (see
        ``data_pipelines.sources.wikipedia_dump.read_namespaces``); None: English names only.

    Returns:
      The canonical English names plus the wiki's own names for namespaces -2, 6 and 14 (e.g.
      ``'категория'``, ``'файл'`` in Bulgarian; ``'분류'``, ``'파일'`` in Korean).
    """
    local = (name for key in DROPPED_NAMESPACE_KEYS for name in (namespaces or {}).get(key, ()))
    return CANONICAL_DROPPED_NAMESPACES | {_namespace_key(name) for name in local if name.strip()}


def _namespace_key(prefix: str) -> str:
    """How a namespace prefix is compared: case-folded, ``_`` as space, one space between words."""
    return " ".join(prefix.replace("_", " ").split()).casefold()


def clean_wikitext(
    wikitext: str, *, prestrip: bool = True,
    dropped_namespaces: frozenset[str] = CANONICAL_DROPPED_NAMESPACES,
) -> str:
    """Turns one article's wikitext into plain prose, paragraphs separated by ``'\\n'``.

    Paragraphs are what MediaWiki renders as paragraphs: the lines of wikitext between blank lines
    (and headings, lists, tables, ``<br>``, a line that held only a dropped link). A single line
    break inside a paragraph renders as a space, so those lines are joined with one space: a
    sentence wrapped over two lines stays one.

    Args:
      wikitext: the ``<text>`` of a MediaWiki revision.
      prestrip: first remove ``<ref>``s, comments and innermost non-prose templates with regular
        expressions (same result as leaving them to the parser, 2-3x faster).
      dropped_namespaces: link prefixes (see :func:`dropped_link_namespaces`) whose links are
        dropped; the default knows the English names only. Links whose target after any prefix is a
        media file name (``X:Name.png``) are dropped too.

    Returns:
      The normalised plain text (see ``normalize_document``); ``''`` if the article has no prose
      (e.g. only lists, tables or templates). Lines that still contain unbalanced markup after
      parsing (``{{``, ``[[``, ``{|``, ``<ref`` ...) are dropped, so no markup reaches training.
    """
    if prestrip:
        wikitext = _strip_before_parsing(wikitext)
    code = mwparserfromhell.parse(wikitext, skip_style_tags=True)
    rendered = _render_top_level(code.nodes, dropped_namespaces)
    rendered = _MAGIC_WORD.sub("", rendered)
    rendered = _STYLE_QUOTES.sub("", rendered)
    paragraphs = (  # a line with unbalanced markup is dropped before its paragraph is joined
        " ".join(line for line in block.split("\n") if not _RESIDUAL_MARKUP.search(line))
        for block in _PARAGRAPH_BREAK.split(rendered)
    )
    lines = []
    for line in normalize_document("\n".join(paragraphs)).split("\n"):
        line = _DANGLING_PAREN_PUNCT.sub("(", _EMPTY_PARENS.sub("", line))
        line = _WHITESPACE_RUN.sub(" ", line)
        line = _SPACE_AFTER_OPENING.sub(r"\1", _SPACE_BEFORE_PUNCT.sub(r"\1", line)).strip()
        if line and not _RESIDUAL_MARKUP.search(line):
            lines.append(line)
    return "\n".join(lines)


def _strip_before_parsing(wikitext: str) -> str:
    wikitext = _REFS_AND_COMMENTS.sub("", wikitext)
    while True:  # innermost templates first, until no plain template is left
        stripped = _PLAIN_TEMPLATE.sub("", wikitext)
        if stripped == wikitext:
            return stripped
        wikitext = stripped


def _render_top_level(node_list: list[wiki_nodes.Node], drop: frozenset[str]) -> str:
    """Renders article-level nodes, dropping list lines and apparatus sections.

    Headings and list lines end the paragraph before them (they render as blocks), so they
    leave :data:`_BLOCK_BREAK` behind; ``drop`` is the link prefixes dropped.
    """
    parts: list[str] = []
    skipping_list_line = False
    dropped_section_level = 0  # > 0 while inside a dropped section of this heading level
    for node in node_list:
        if isinstance(node, wiki_nodes.Heading):
            skipping_list_line = False
            if dropped_section_level and node.level > dropped_section_level:
                continue  # a subsection of a dropped section
            title = normalize_document(_render(node.title.nodes, drop)).lower()
            dropped_section_level = node.level if title in _DROPPED_SECTIONS else 0
            parts.append(_BLOCK_BREAK)
            continue
        if dropped_section_level:
            continue
        if skipping_list_line:
            if isinstance(node, wiki_nodes.Text) and "\n" in node.value:
                parts.append(_BLOCK_BREAK + node.value[node.value.index("\n") + 1:])
                skipping_list_line = False
            continue
        if isinstance(node, wiki_nodes.Tag) and node.wiki_markup in _LIST_MARKUP:
            parts.append(_BLOCK_BREAK)
            skipping_list_line = True
            continue
        parts.append(_render_node(node, drop))
    return "".join(parts)


def _render(node_list: list[wiki_nodes.Node], drop: frozenset[str]) -> str:
    return "".join(_render_node(node, drop) for node in node_list)


def _render_node(node: wiki_nodes.Node, drop: frozenset[str]) -> str:
    """Visible prose of one node (recursively); ``''`` for markup that carries no prose."""
    if isinstance(node, wiki_nodes.Text):
        return node.value
    if isinstance(node, wiki_nodes.Wikilink):
        return _render_wikilink(node, drop)
    if isinstance(node, wiki_nodes.Tag):
        tag = str(node.tag).strip().lower()
        if tag in _DROPPED_TAGS or node.wiki_markup in _LIST_MARKUP:
            return ""
        if tag == "br":
            return _BLOCK_BREAK
        return _render(node.contents.nodes, drop) if node.contents is not None else ""
    if isinstance(node, wiki_nodes.HTMLEntity):
        return node.normalize()
    if isinstance(node, wiki_nodes.ExternalLink):
        return _render(node.title.nodes, drop) if node.title is not None else ""
    if isinstance(node, wiki_nodes.Template):
        return _render_template(node, drop)
    if isinstance(node, wiki_nodes.Heading):
        return _BLOCK_BREAK
    return ""  # Comment, Argument


def _render_wikilink(link: wiki_nodes.Wikilink, drop: frozenset[str]) -> str:
    target = str(link.title).strip()
    inline = target.startswith(":")  # [[:Category:X]] is an inline link, not a categorisation
    target = target.lstrip(":")
    if ":" in target and not inline:
        prefix, name = target.split(":", 1)
        prefix = _namespace_key(prefix)
        if prefix in drop or _INTERLANGUAGE_PREFIX.match(prefix) or _MEDIA_FILE_NAME.search(name):
            return ""
    if link.text is not None:
        return _render(link.text.nodes, drop)
    return target


def _render_template(template: wiki_nodes.Template, drop: frozenset[str]) -> str:
    name = str(template.name).strip().lower()
    wanted = _PROSE_TEMPLATES.get(name)
    if wanted is None:
        return ""
    values = [
        _render(template.get(key).value.nodes, drop).strip() for key in wanted if template.has(key)
    ]
    return " ".join(value for value in values if value)


# ---------------------------------------------------------------------------------------------
# Sentence splitting
# ---------------------------------------------------------------------------------------------

# Abbreviations that are (almost) never sentence-final: a period after them never ends a sentence.
_NON_FINAL_ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "dr", "prof", "st", "mt", "ft", "gen", "col", "lt", "sgt", "capt", "cmdr",
    "adm", "maj", "rev", "hon", "sen", "rep", "gov", "pres", "fr", "no", "nos", "vol",
    "vols", "fig", "figs", "eq", "eqs", "ch", "sec", "pp", "p", "ed", "eds", "vs", "v", "cf", "e.g",
    "i.e", "viz", "approx", "ca", "c", "al", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep",
    "sept", "oct", "nov", "dec", "est", "op", "cit", "ibid", "dept", "univ", "assn", "bros", "ave",
    "blvd", "rd", "hwy", "mx", "messrs", "mme", "mlle", "lit", "illus", "trans", "repr",
})
# Abbreviations that often end a sentence: split only before a typical sentence opener.
_MAYBE_FINAL_ABBREVIATIONS = frozenset({
    "etc", "jr", "sr", "inc", "ltd", "co", "corp", "plc", "llc", "u.s", "u.k", "u.n", "e.u", "u.s.a", "a.m",
    "p.m", "b.c", "a.d", "b.c.e", "c.e", "ph.d", "b.a", "m.a", "d.c", "l.a",
})
# Capitalised words that usually begin a sentence (used after a maybe-final abbreviation).
_SENTENCE_OPENERS = frozenset({
    "the", "a", "an", "he", "she", "it", "they", "we", "i", "you", "this", "that", "these", "those",
    "there", "his", "her", "its", "their", "our", "in", "on", "at", "after", "before", "during",
    "however", "but", "and", "as", "when", "while", "since", "although", "by", "from", "for", "with",
    "some", "many", "most", "other", "both", "each", "one", "two", "today", "later", "then", "also",
    "if", "yet", "according", "following", "despite", "unlike", "like", "what", "who", "why", "how",
})
# Candidate boundary, either
#   * terminal punctuation (Latin, Devanagari danda, Arabic question mark), optional closing
#     quotes/brackets, whitespace, and a next sentence that starts (after optional opening
#     quotes/brackets) with a letter or digit of any script; ``_is_boundary`` then refuses lower-case
#     starts ("e.g. the", "... and", "т.е. это"), so only upper-case letters, digits and letters of
#     scripts without case (Hangul, CJK, kana, Arabic, Hebrew, Devanagari, Thai ...) begin a sentence;
#   * or full-width CJK terminal punctuation (。！？ and full-width ．), optional closing
#     quotes/brackets, and anything but more closing punctuation: Chinese and Japanese put no space
#     after a sentence.
_CLOSING = "\"'\u201d\u2019)\\]\u300d\u300f\uff09\u3011\u300b\u3009\u00bb"
_OPENING = "\"'\u201c\u2018(\\[\u300c\u300e\uff08\u3010\u300a\u3008\u00ab\u201e"
_CANDIDATE_BOUNDARY = re.compile(
    rf"(?P<end>[.!?\u2026\u0964\u061f]+)(?P<close>[{_CLOSING}]*)(?P<space>\s+)"
    rf"(?=[{_OPENING}]*(?P<next>[^\W_a-z]\S*))"  # a-z: English continuations are refused right here
)
# Searched only in lines that contain full-width punctuation (checked first: one fast scan).
_CJK_END = re.compile(r"[\u3002\uff01\uff1f\uff0e]")
_CJK_BOUNDARY = re.compile(rf"[\u3002\uff01\uff1f\uff0e]+[{_CLOSING}]*(?=\s*[^\s{_CLOSING}])")
_WORD_BEFORE = re.compile(r"(\S+)$")


def split_sentences(text: str) -> list[str]:
    """Splits text into sentences with fast, offline rules (no model, no downloads), in any script.

    Every ``'\\n'`` is a hard boundary. Inside a line, a boundary is

    * terminal punctuation (``. ! ? …``, the Devanagari danda ``।``, the Arabic ``؟``; repeated or
      not) followed by optional closing quotes/brackets, whitespace, and a sentence start (optionally
      behind opening quotes/brackets): a digit, an upper-case letter in any cased script (Latin,
      Cyrillic, Greek, Armenian ...), or any letter of a script without case (Hangul, CJK, kana,
      Arabic, Hebrew, Devanagari, Thai ...). Korean ``다. 다음`` therefore splits; a lower-case word
      after a period never starts a sentence.
    * full-width CJK terminal punctuation (``。 ！ ？ ．``) with optional closing brackets
      (``」』）``), whitespace or not: ``今天很好。明天也好。`` is two sentences.

    A period is *not* a boundary when it ends a known non-final abbreviation (``Dr.``, ``e.g.``,
    ``Jan.``, ``No.`` ...), a single-letter initial of any script (``J. R. R. Tolkien``,
    ``А. С. Пушкин``), or a maybe-final abbreviation (``U.S.``, ``etc.``, ``Inc.``) unless the next
    word is a typical sentence opener (``The``, ``He`` ...). Decimals (``3.14``) and dotted names
    have no whitespace after the period and never split. Not handled: the Greek question mark ``;``
    (also a semicolon), Thai (no sentence punctuation), and abbreviations of languages other than
    English (``т.е.``-style ones are lower-case and safe; ``Св.`` is not).

    Args:
      text: a document or paragraph.

    Returns:
      The sentences, stripped, in order; never empty strings.
    """
    sentences: list[str] = []
    has_cjk_stops = _CJK_END.search(text) is not None
    for line in text.split("\n"):
        if not has_cjk_stops:
            _split_line(line, sentences)
            continue
        start = 0
        for match in _CJK_BOUNDARY.finditer(line):
            _split_line(line[start:match.end()], sentences)
            start = match.end()
        _split_line(line[start:], sentences)
    return sentences


def _split_line(line: str, sentences: list[str]) -> None:
    """Appends the sentences of one line (or CJK-delimited piece) to ``sentences``."""
    start = 0
    for match in _CANDIDATE_BOUNDARY.finditer(line):
        if _is_boundary(line, match):
            sentence = line[start:match.start("space")].strip()
            if sentence:
                sentences.append(sentence)
            start = match.end("space")
    tail = line[start:].strip()
    if tail:
        sentences.append(tail)


def _is_boundary(line: str, match: re.Match[str]) -> bool:
    if match.group("next")[0].islower():
        return False  # a lower-case continuation, in any cased script
    if match.group("end") != ".":
        return True  # "!", "?", "…", "..." and "?!" end sentences when a capital follows
    # Look back a bounded distance: searching from the line start would be quadratic in paragraph length.
    previous = _WORD_BEFORE.search(line, max(0, match.start("end") - 64), match.start("end"))
    if previous is None:
        return True
    word = previous.group(1).lstrip("\"'\u201c\u2018([").lower()
    if word in _NON_FINAL_ABBREVIATIONS:
        return False
    if len(word) == 1 and word.isalpha() and word != word.upper():
        return False  # an initial of a cased script: "J. Smith", "А. С. Пушкин" (not Hangul "별.", CJK "字.")
    if word in _MAYBE_FINAL_ABBREVIATIONS:
        opener = match.group("next").strip("\"'\u201c\u2018([,;:").lower()
        return opener in _SENTENCE_OPENERS
    return True
