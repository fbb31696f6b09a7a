"""Read a JATS article (PubMed Central `.nxml`, publisher or preprint JATS): ids, title, licence, and its figures
with their captions and the sentences of the body that cite them (LLaVA-Med's "inline mentions").

    article = parse_article("PMC123/paper.nxml")
    article.figures[0].caption, article.figures[0].mentions

XML from the internet is untrusted: the parser is expat with every DTD feature that can expand or fetch
something refused (internal DTD subsets, entity declarations, external entities); the public DOCTYPE line
that every PMC file carries is allowed, since nothing is loaded from it. Malformed XML raises `JATSError`
naming the source, line and column.
"""

import re
import xml.parsers.expat
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree.ElementTree import Element, TreeBuilder

MAX_XML_BYTES = 64 * 1024 * 1024  # a real article is well under 2 MB; refuse anything absurd before parsing
XLINK = "http://www.w3.org/1999/xlink"
# Entities a JATS file may use without declaring them (the DTD is never loaded): the HTML ones that occur.
_KNOWN_ENTITIES = {"nbsp": "\u00a0", "ndash": "\u2013", "mdash": "\u2014", "hellip": "\u2026", "times": "\u00d7",
                   "deg": "\u00b0", "plusmn": "\u00b1", "micro": "\u00b5", "copy": "\u00a9"}
_SKIP_TEXT = {"tex-math", "annotation", "annotation-xml", "object-id"}  # duplicates of visible text, or ids
_BLOCKS_NOT_BODY_TEXT = {"fig", "fig-group", "table-wrap", "table-wrap-group", "supplementary-material",
                         "caption", "ref-list", "fn-group", "back"}


class JATSError(ValueError):
    """The file is not a JATS article we can read; the message names the source (and line/column for XML errors)."""


@dataclass
class License:
    type: str | None = None  # the license-type attribute ("open-access", "creative-commons", ...)
    url: str | None = None  # xlink:href of <license> or the ali:license_ref text
    text: str | None = None  # the license paragraph, or the copyright statement where there is no <license>

    @property
    def code(self) -> str | None:
        """A short code in the style of PMC's file list: "CC BY 4.0", "CC BY-NC", "CC0", or None if unknown."""
        if self.url:
            m = re.search(r"creativecommons\.org/(licenses|publicdomain)/([a-z-]+)(?:/([\d.]+))?", self.url)
            if m:
                kind = "CC0" if m.group(2) == "zero" else "CC " + m.group(2).upper()
                return f"{kind} {m.group(3)}" if m.group(3) else kind
        text = (self.text or "").lower()
        if "creative commons" in text and "attribution" in text:
            return "CC BY" + ("-NC" if "noncommercial" in text or "non-commercial" in text else "")
        return None


@dataclass
class Figure:
    fig_id: str
    label: str | None  # "Figure 2", or None when the figure has no <label>
    caption: str  # title and paragraphs of <caption>, inline markup flattened; "" when there is none
    graphic: str | None  # xlink:href of the <graphic> (often without its file extension)
    mentions: list[str] = field(default_factory=list)  # body sentences citing this figure, in document order


@dataclass
class Article:
    pmid: str | None
    pmcid: str | None  # "PMC1234567"
    doi: str | None
    title: str
    license: License
    figures: list[Figure]
    article_type: str | None = None
    fig_xref_count: int = 0  # <xref ref-type="fig"> elements in <body> (captions in the body included)
    source: str = "<bytes>"


# ---- safe XML -----------------------------------------------------------------------------------------------
def parse_xml(data: bytes, source: str = "<bytes>") -> Element:
    """Parse bytes into an ElementTree element with expat, refusing DTD tricks. Tags and attribute names are
    local names (namespaces dropped): JATS uses the same names with or without a default namespace."""
    builder = TreeBuilder()
    parser = xml.parsers.expat.ParserCreate(namespace_separator="}")
    parser.SetParamEntityParsing(xml.parsers.expat.XML_PARAM_ENTITY_PARSING_NEVER)

    def refuse(what: str):
        def handler(*_):
            raise JATSError(f"{source}: refused: the XML contains {what} (not allowed in untrusted input)")
        return handler

    def doctype(name, sysid, pubid, has_internal_subset):
        if has_internal_subset:
            refuse("a DOCTYPE with an internal subset")()

    def skipped_entity(name, is_parameter_entity):
        if name not in _KNOWN_ENTITIES:
            raise JATSError(f"{source}: line {parser.CurrentLineNumber}: undefined entity &{name};")
        builder.data(_KNOWN_ENTITIES[name])

    parser.StartDoctypeDeclHandler = doctype
    parser.EntityDeclHandler = refuse("an entity declaration")
    parser.UnparsedEntityDeclHandler = refuse("an unparsed entity declaration")
    parser.ExternalEntityRefHandler = refuse("an external entity reference")
    parser.SkippedEntityHandler = skipped_entity
    parser.StartElementHandler = lambda tag, attrs: builder.start(_local(tag), {_local(k): v for k, v in attrs.items()})
    parser.EndElementHandler = lambda tag: builder.end(_local(tag))
    parser.CharacterDataHandler = builder.data
    parser.buffer_text = True
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as e:
        raise JATSError(f"{source}: malformed XML at line {e.lineno}, column {e.offset}: "
                        f"{xml.parsers.expat.ErrorString(e.code)}") from None
    return builder.close()


def _local(name: str) -> str:
    return name.rsplit("}", 1)[-1]


# ---- text --------------------------------------------------------------------------------------------------
def flatten(elem: Element | None, skip: set[str] = _SKIP_TEXT) -> str:
    """The element's text with inline markup (<italic>, <sup>, <xref>, ...) flattened and whitespace collapsed."""
    if elem is None:
        return ""
    parts: list[str] = []

    def walk(e: Element):
        if e.tag in skip:
            parts.append(e.tail or "")
            return
        parts.append(e.text or "")
        for child in e:
            walk(child)
        parts.append(e.tail or "")

    parts.append(elem.text or "")
    for child in elem:
        walk(child)
    return _clean("".join(parts))


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("\u200a", " ").replace("\u00a0", " ")).strip()


# Words after which a period does not end a sentence ("Fig. 2", "et al. showed", "e.g. the").
_ABBREVIATIONS = {"fig", "figs", "figure", "e.g", "i.e", "al", "vs", "cf", "approx", "ca", "dr", "no", "nos", "eq",
                  "eqs", "ref", "refs", "tab", "suppl", "resp", "incl", "st", "mr", "mrs", "ms", "prof", "inc", "ltd",
                  "co", "jr", "sr", "sp", "spp", "var", "subsp", "min", "max", "etc", "ed", "eds", "vol", "pp",
                  "ext", "panel", "sec", "chap", "ibid", "viz", "dept", "univ"}
_SENTENCE_END = re.compile(r"[.!?][\"')\]\u201d\u2019]*\s+(?=[\"'(\[\u201c]?[A-Z0-9])")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the sentences of `text`. A period ends a sentence when a capital or a
    digit follows, unless it closes an abbreviation (Fig., e.g., et al.) or an initial (M. tuberculosis)."""
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        if text[m.start()] == ".":
            before = text[start:m.start()].split()
            word = before[-1].strip("([{\"'").rstrip(")]}\"'").lower() if before else ""
            if word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()):
                continue
        spans.append((start, m.end()))
        start = m.end()
    if start < len(text):
        spans.append((start, len(text)))
    return [(s, e) for s, e in spans if text[s:e].strip()]


# ---- the article ---------------------------------------------------------------------------------------------
def parse_article(path_or_bytes: str | Path | bytes, source: str | None = None) -> Article:
    """Parse a JATS article from a path or from bytes. Raises JATSError (malformed XML, not an <article>, DTD
    tricks, too large) with the source named."""
    if isinstance(path_or_bytes, (bytes, bytearray)):
        data, source = bytes(path_or_bytes), source or "<bytes>"
    else:
        path = Path(path_or_bytes)
        source = source or str(path)
        if not path.is_file():
            raise JATSError(f"{source}: no such file")
        if path.stat().st_size > MAX_XML_BYTES:
            raise JATSError(f"{source}: {path.stat().st_size} bytes is too large for an article "
                            f"(limit {MAX_XML_BYTES})")
        data = path.read_bytes()
    if len(data) > MAX_XML_BYTES:
        raise JATSError(f"{source}: {len(data)} bytes is too large for an article (limit {MAX_XML_BYTES})")
    if not data.strip():
        raise JATSError(f"{source}: empty file")
    root = parse_xml(data, source)
    if root.tag != "article":
        raise JATSError(f"{source}: the root element is <{root.tag}>, expected <article> (JATS)")

    meta = root.find("front/article-meta")
    ids = {}
    for e in (meta.findall("article-id") if meta is not None else []):
        ids.setdefault(e.get("pub-id-type"), _clean(e.text or ""))
    pmcid = ids.get("pmcid") or ids.get("pmc")
    if pmcid and not pmcid.upper().startswith("PMC"):
        pmcid = "PMC" + pmcid
    title = flatten(meta.find("title-group/article-title")) if meta is not None else ""

    figures = _figures(root)
    body = root.find("body")
    xref_count = _attach_mentions(body, figures) if body is not None else 0
    return Article(pmid=ids.get("pmid"), pmcid=pmcid, doi=ids.get("doi"), title=title,
                   license=_license(meta), figures=figures, article_type=root.get("article-type"),
                   fig_xref_count=xref_count, source=source)


def _license(meta: Element | None) -> License:
    if meta is None:
        return License()
    lic = meta.find("permissions/license")
    if lic is None:  # older PMC files: only a copyright statement, in <permissions> or directly in article-meta
        return License(text=flatten(meta.find(".//copyright-statement")) or None)
    url = lic.get("href") or _clean((lic.find("license_ref").text or "") if lic.find("license_ref") is not None else "")
    text = " ".join(flatten(p) for p in lic.findall("license-p")) or flatten(lic)
    return License(type=lic.get("license-type"), url=url or None, text=text or None)


def _figures(root: Element) -> list[Figure]:
    """Every <fig> of the article in document order, including those inside <fig-group>. A figure without an id
    gets a positional one ("fig-3") so that it can still be named, though nothing can cite it."""
    figures = []
    for i, fig in enumerate(root.iter("fig"), 1):
        graphic = fig.find(".//graphic")
        label = flatten(fig.find("label")) or None
        cap = fig.find("caption")
        caption = " ".join(t for t in (flatten(c) for c in cap) if t) if cap is not None else ""
        figures.append(Figure(fig_id=fig.get("id") or f"fig-{i}", label=label, caption=_clean(caption),
                              graphic=graphic.get("href") if graphic is not None else None))
    return figures


def _attach_mentions(body: Element, figures: list[Figure]) -> int:
    """Find the body sentences that cite each figure; returns the number of fig xrefs in the body."""
    by_id = {f.fig_id: f for f in figures}
    order = [f.fig_id for f in figures]
    by_number = {}
    for f in figures:
        m = re.search(r"(\d+)", f.label or "")
        if m:
            by_number.setdefault(int(m.group(1)), f.fig_id)
    count = sum(1 for x in body.iter("xref") if x.get("ref-type") == "fig")
    for block in _text_blocks(body):
        text, refs = _block_text(block)
        if not refs:
            continue
        spans = split_sentences(text)
        cited: dict[str, list[int]] = {}  # fig_id -> sentence indices
        for start, rids in _expand_ranges(text, refs, order, by_number):
            k = next((i for i, (s, e) in enumerate(spans) if s <= start < e), len(spans) - 1)
            for rid in rids:
                if rid in by_id and k not in cited.setdefault(rid, []):
                    cited[rid].append(k)
        for rid, ks in cited.items():
            for k in ks:
                sentence = _clean(text[spans[k][0]:spans[k][1]])
                if sentence not in by_id[rid].mentions:
                    by_id[rid].mentions.append(sentence)
    return count


def _text_blocks(body: Element):
    """The paragraphs of running text: <p> elements outside figures, tables and captions (a <p> nested in a list
    inside a <p> is its own block)."""
    def walk(e: Element):
        for child in e:
            if child.tag in _BLOCKS_NOT_BODY_TEXT:
                continue
            if child.tag == "p":
                yield child
            yield from walk(child)
    yield from walk(body)


def _block_text(p: Element) -> tuple[str, list[tuple[int, int, list[str], str]]]:
    """Flatten a paragraph (skipping nested paragraphs and floats) and record each fig xref as
    (start, end, rids, its text) offsets into that text."""
    parts: list[str] = []
    refs = []
    pos = 0

    def add(s: str | None):
        nonlocal pos
        if s:
            s = s.replace("\n", " ")
            parts.append(s)
            pos += len(s)

    def walk(e: Element, top: bool):
        if not top and (e.tag in _SKIP_TEXT or e.tag == "p" or e.tag in _BLOCKS_NOT_BODY_TEXT):
            add(" " if e.tag == "p" else "")
            add(e.tail)
            return
        start = pos
        add(e.text)
        for child in e:
            walk(child, False)
        if e.tag == "xref" and e.get("ref-type") == "fig":
            refs.append((start, pos, (e.get("rid") or "").split(), "".join(parts)[start:pos]))
        if not top:
            add(e.tail)

    walk(p, True)
    return "".join(parts), refs


def _expand_ranges(text, refs, order, by_number):
    """Turn xrefs into (offset, [fig ids]) with ranges resolved: two xrefs joined by a dash or "to" ("Figs
    <xref>2</xref>–<xref>4</xref>") cite the figures between them; numbers in an xref's own text ("Figs 2-4",
    "Figures 2 and 3" pointing at one rid) add the figures with those label numbers; panels ("1B") are the figure."""
    out = []
    for i, (start, end, rids, xtext) in enumerate(refs):
        rids = list(rids)
        for a, b in re.findall(r"(?<![\w.])(\d+)[A-Za-z]?\s*[-\u2013\u2014]\s*(\d+)(?![\d.])", xtext):
            rids += [by_number[n] for n in range(int(a), int(b) + 1) if n in by_number]
        for n in re.findall(r"(?<![\w.])(\d+)(?![\d.])", xtext):
            if (int(n) in by_number and by_number[int(n)] not in rids and len(rids) > 0
                    and _lists_several_numbers(xtext)):
                rids.append(by_number[int(n)])
        if i > 0:
            prev_start, prev_end, prev_rids, _ = refs[i - 1]
            between = text[prev_end:start].strip().lower()
            if between in {"-", "\u2013", "\u2014", "to", "through"} and prev_rids and rids:
                a, b = prev_rids[-1], rids[0]
                if a in order and b in order and order.index(a) < order.index(b):
                    rids = order[order.index(a) + 1:order.index(b)] + rids
        out.append((start, rids))
    return out


def _lists_several_numbers(xtext: str) -> bool:
    """An xref whose text lists several figure numbers ("Figs 2, 3", "Figures 2 and 5") rather than one."""
    return len(re.findall(r"(?<![\w.])\d+(?![\d.])", xtext)) > 1
