"""JATS parsing: the real articles (counts from their MANIFEST.md), hand-written edge cases, hostile XML."""

import re

import pytest

from llavamed_lite.data.jats import JATSError, parse_article, split_sentences
from llavamed_lite.paths import data_sample

ARTICLES = data_sample("real_pmc", "articles")


def manifest_counts() -> dict[str, tuple[int, int]]:
    """{xml path relative to ARTICLES: (figs with caption, body fig xrefs)} read from the tables of MANIFEST.md."""
    counts, header = {}, None
    for line in (ARTICLES / "MANIFEST.md").read_text().splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if header is None:
            header = cells
            continue
        if set(cells[0]) <= set("- "):
            continue
        where = cells[0].strip("`")
        fig_col, xref_col = header.index("figs w/ caption"), header.index("body fig xrefs")
        n_figs, n_xrefs = (int(re.match(r"\d+", cells[i]).group()) for i in (fig_col, xref_col))
        if where.endswith("/"):
            (xml,) = [p for p in (ARTICLES / where).iterdir() if p.suffix in (".xml", ".nxml")]
            where = str(xml.relative_to(ARTICLES))
        counts[where] = (n_figs, n_xrefs)
    return counts


COUNTS = manifest_counts()


def test_manifest_lists_all_six_articles():
    assert len(COUNTS) == 6
    assert all((ARTICLES / p).is_file() for p in COUNTS)


@pytest.mark.parametrize("rel", sorted(COUNTS))
def test_real_article_counts_match_manifest(rel):
    article = parse_article(ARTICLES / rel)
    n_figs, n_xrefs = COUNTS[rel]
    assert sum(1 for f in article.figures if f.caption) == n_figs
    assert article.fig_xref_count == n_xrefs
    assert article.title and article.doi
    for fig in article.figures:
        assert fig.graphic
        for m in fig.mentions:  # sentences, not paragraphs
            assert 20 < len(m) < 600 and m[-1] in ".)" and m[0].isupper()


def test_real_article_metadata_and_mentions():
    a = parse_article(ARTICLES / "xml_only/pone.0046493.nxml")
    assert (a.pmid, a.pmcid, a.doi) == ("23029536", "PMC3460867", "10.1371/journal.pone.0046493")
    assert a.license.code == "CC BY" and a.license.url is None
    fig3 = a.figures[2]
    assert fig3.label == "Figure 3" and fig3.caption.startswith("Protein-inhibitor adducts studies")
    assert "<" not in fig3.caption and "MmPPOX" in fig3.caption  # <italic>m</italic> flattened
    assert len(fig3.mentions) == 4
    assert any("(Figure 3A\u2013C)" in m for m in fig3.mentions)  # panel ranges cite the figure
    # one sentence cites panels 1A and 1B: one mention, not two
    assert len(a.figures[0].mentions) == 1

    plant = parse_article(ARTICLES / "PMC12419688/koaf197.nxml")
    assert plant.pmcid == "PMC12419688" and plant.license.code == "CC BY 4.0"
    assert plant.figures[0].graphic == "koaf197f1"

    old = parse_article(ARTICLES / "xml_only/pone.0000217.nxml")  # copyright statement directly in article-meta
    assert old.license.code == "CC BY" and old.license.url is None

    preprint = parse_article(ARTICLES / "medrxiv-24301711/24301711.xml")
    assert preprint.pmcid is None and preprint.license.type == "creative-commons"
    assert preprint.figures[0].mentions == ["Figure 1 presents the process of participant selection."]


def test_caption_self_reference_is_not_a_mention():
    a = parse_article(ARTICLES / "xml_only/pntd.0002065.nxml")
    assert a.fig_xref_count == 2  # one in the text, one inside the figure's own caption
    assert len(a.figures[0].mentions) == 1


def test_parse_from_bytes_equals_parse_from_path():
    path = ARTICLES / "elife-19405/elife-19405.xml"
    assert parse_article(path.read_bytes(), source=str(path)) == parse_article(path)


def _article(body: str, figs: str = "", ns: str = "") -> bytes:
    return f"""<?xml version="1.0"?>
<!DOCTYPE article PUBLIC "-//NLM//DTD JATS (Z39.96) Journal Archiving and Interchange DTD v1.2 20190208//EN" "JATS-archivearticle1.dtd">
<article {ns} xmlns:xlink="http://www.w3.org/1999/xlink" article-type="research-article"><front><article-meta>
<article-id pub-id-type="pmcid">PMC42</article-id><title-group><article-title>A <italic>test</italic></article-title>
</title-group></article-meta></front><body>{body}{figs}</body></article>""".encode()


FIGS = "".join(f'<fig id="f{i}"><label>Figure {i}</label><caption><p>Caption {i}.</p></caption>'
               f'<graphic xlink:href="img{i}"/></fig>' for i in range(1, 6))


def test_ranges_panels_and_sentences():
    body = ('<sec><p>The first result is clear (<xref ref-type="fig" rid="f1">Figure 1B</xref>). '
            'Then e.g. Dr. Smith et al. saw more (Figs <xref ref-type="fig" rid="f2">2</xref>\u2013'
            '<xref ref-type="fig" rid="f4">4</xref>). Unrelated sentence. '
            'A last one cites <xref ref-type="fig" rid="f5">Figs. 5</xref> and <xref ref-type="fig" rid="f1 f2">1, 2</xref>.'
            '</p></sec>')
    a = parse_article(_article(body, FIGS))
    m = {f.fig_id: f.mentions for f in a.figures}
    assert m["f1"] == ["The first result is clear (Figure 1B).", "A last one cites Figs. 5 and 1, 2."]
    expected_range = "Then e.g. Dr. Smith et al. saw more (Figs 2\u20134)."
    assert m["f2"] == [expected_range, "A last one cites Figs. 5 and 1, 2."]
    assert m["f3"] == [expected_range]  # the figure inside the range
    assert m["f4"] == [expected_range]
    assert a.fig_xref_count == 5 and a.title == "A test" and a.pmcid == "PMC42"


def test_range_inside_one_xref_text():
    body = '<p>All panels agree (<xref ref-type="fig" rid="f2">Figs 2-4</xref>).</p>'
    a = parse_article(_article(body, FIGS))
    assert [f.fig_id for f in a.figures if f.mentions] == ["f2", "f3", "f4"]


def test_fig_group_figure_without_caption_and_default_namespace():
    figs = ('<fig-group id="g1"><caption><p>Group.</p></caption>'
            '<fig id="fa"><label>Figure 1A</label><caption><title>Left</title><p>Panel <bold>A</bold>.</p></caption>'
            '<graphic xlink:href="a.jpg"/></fig><fig id="fb"><graphic xlink:href="b.jpg"/></fig></fig-group>')
    body = '<p>See the panel (<xref ref-type="fig" rid="fb">Fig. 1B</xref>).</p>'
    a = parse_article(_article(body, figs, ns='xmlns="http://jats.nlm.nih.gov/ns/archiving/1.2/"'))
    fa, fb = a.figures
    assert fa.caption == "Left Panel A." and fa.graphic == "a.jpg"
    assert fb.caption == "" and fb.label is None and fb.mentions == ["See the panel (Fig. 1B)."]


def test_split_sentences_keeps_abbreviations_and_initials():
    text = "Growth of M. tuberculosis was slow (Fig. 2). Values were 2.5 vs. 3.1 in total. Next one!"
    assert [text[s:e].strip() for s, e in split_sentences(text)] == [
        "Growth of M. tuberculosis was slow (Fig. 2).", "Values were 2.5 vs. 3.1 in total.", "Next one!"]


@pytest.mark.parametrize("xml, message", [
    (b"", "empty file"),
    (b"<article><front></article>", "malformed XML at line 1"),
    (_article("<p>cut")[:-40], "malformed XML"),
    (b"<html><body/></html>", "expected <article>"),
    (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>'
     b"<article>&lol2;</article>", "refused"),
    (b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><article>&xxe;</article>', "refused"),
    (b'<article><p>&bogus;</p></article>', "undefined entity"),
    (b'<article><x:p>unbound prefix</x:p></article>', "malformed XML"),
    (b"\xff\xfe<\x00a", "malformed XML"),
])
def test_bad_xml_gives_clear_error(xml, message):
    with pytest.raises(JATSError, match=message) as e:
        parse_article(xml, source="bad.nxml")
    assert "bad.nxml" in str(e.value)


def test_missing_file_names_path(tmp_path):
    with pytest.raises(JATSError, match="no such file"):
        parse_article(tmp_path / "nope.nxml")


def test_known_html_entity_under_public_doctype():
    a = parse_article(_article('<p>A&nbsp;sentence (<xref ref-type="fig" rid="f1">Fig 1</xref>).</p>', FIGS))
    assert a.figures[0].mentions == ["A sentence (Fig 1)."]
