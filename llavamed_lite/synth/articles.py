"""Synthetic PubMed Central open-access packages: JATS articles about tiny-world figures, packed
like PMC's.

    out_dir/
      oa_file_list.csv                      PMC's manifest layout: File, Article Citation, Accession ID,
                                            Last Updated (YYYY-MM-DD HH:MM:SS), PMID, License
      oa_package/xx/yy/PMC9000001.tar.gz    one package per article: PMC9000001/{stem}.nxml, figure JPEGs,
                                            GIF thumbnails
      truth.json                            what a parser should find: ids, licence, figures (label, caption, file,
                                            findings), and every body sentence that cites a figure with the ids it cites

The .nxml files look like PMC's: the JATS DOCTYPE, article-ids (pmid, pmc, doi), a licence in
<permissions>, title, abstract, body sections whose paragraphs cite figures with <xref
ref-type="fig" rid="F2">, including panels ("Figure 1B"), pairs ("Figures 1 and 2") and ranges
("Figs 2–4", written as two xrefs or as one xref with several rids), and <fig id> elements with
<label>, <caption> (sometimes with a <title>) and <graphic xlink:href> (usually without the file
extension, as in PMC). Figures sit in the body after the paragraph that first cites them, or in a
<floats-group> at the end. Some figures have two panels, A and B. Deterministic: the same arguments
give the same bytes (tar and gzip headers carry fixed times).
"""

import gzip
import hashlib
import io
import tarfile
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..data.download import write_oa_file_list
from ..data.formats import DOMAINS
from ..io import atomic_write_json, atomic_write_text, read_json
from .draw import check_size, render
from .findings import sample_findings
from .text import caption, findings_phrase, modality_phrase
from .world import check_count

ARTICLES_VERSION = 2
LICENSES = [  # (manifest code, URL, licence paragraph)
    ("CC BY", "https://creativecommons.org/licenses/by/4.0/",
     "This is an open access article distributed under the terms of the Creative Commons Attribution License, "
     "which permits unrestricted use, distribution, and reproduction in any medium, provided the original work is "
     "properly cited."),
    ("CC BY-NC", "https://creativecommons.org/licenses/by-nc/4.0/",
     "This article is distributed under the terms of the Creative Commons Attribution-NonCommercial 4.0 "
     "International License, which permits non-commercial use provided the original work is cited."),
    ("CC0", "https://creativecommons.org/publicdomain/zero/1.0/",
     "This is an open access article, free of all copyright, and may be freely reproduced, distributed, "
     "transmitted, modified, built upon, or otherwise used by anyone for any lawful purpose."),
]
JOURNALS = [("Journal of Tiny Radiology", "J Tiny Radiol", "tjr"),
            ("Synthetic Pathology Reports", "Synth Pathol Rep", "spr"),
            ("Case Reports in Miniature Medicine", "Case Rep Mini Med", "crmm")]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
TOPIC = {"chest_xray": "pulmonary nodules on chest radiography",
         "ct_scan": "focal lesions of the liver and spleen on CT",
         "mri": "intracranial masses on MRI", "histology": "the histology of glandular tissue",
         "gross": "the gross pathology of resected kidney and liver specimens"}
FILLER = [
    "The patient had no relevant past medical history.",
    "Laboratory tests were within normal limits.",
    "Written informed consent was obtained for publication.",
    "Follow-up was arranged at the outpatient clinic.",
    "The case was reviewed by two experienced readers.",
    "No complications were recorded during the admission.",
]
FIXED_MTIME = 1_700_000_000  # tar member times: fixed so the same seed gives the same bytes
DOCTYPE = ('<!DOCTYPE article PUBLIC "-//NLM//DTD JATS (Z39.96) Journal Archiving and Interchange DTD v1.3 '
           '20210610//EN" "JATS-archivearticle1-3.dtd">')


def _pick(rng, options):
    return options[int(rng.integers(len(options)))]


def _xref(rid: str, text: str) -> str:
    return f'<xref ref-type="fig" rid={quoteattr(rid)}>{escape(text)}</xref>'


def _cite(sentence: str, ref_text: str, markup: str) -> str:
    """The sentence as XML, with the first occurrence of `ref_text` replaced by `markup`."""
    head, _, tail = sentence.partition(ref_text)
    return escape(head) + markup + escape(tail)


def _panel_image(panels: list[Image.Image]) -> Image.Image:
    """One panel as it is, or two side by side on white with the letters A and B in their corners."""
    if len(panels) == 1:
        return panels[0]
    size = panels[0].width
    gap = max(2, size // 32)
    out = Image.new("RGB", (2 * size + gap, size), "white")
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default(size=max(10, size // 6))
    for k, panel in enumerate(panels):
        out.paste(panel, (k * (size + gap), 0))
        draw.text((k * (size + gap) + 3, 1), "AB"[k], fill="white", font=font, stroke_width=1, stroke_fill="black")
    return out


def _article(index: int, seed: int, image_size: int) -> tuple[dict, bytes, list[str]]:
    """One article: (truth, package .tar.gz bytes, manifest row). The random draws come in a fixed
    order (metadata, figures, citing text, front matter), so a seed always gives the same bytes."""
    rng = np.random.default_rng([seed, 7, index])
    a = _metadata(index, seed, rng)
    figures, files = _figures(a, image_size, rng)
    results, discussion, citations = _citing_text(a, figures, rng)
    floats = rng.random() < 0.4
    xml = _article_xml(a, figures, results, discussion, floats, rng)
    package = _targz(a["pmcid"], {f"{a['stem']}.nxml": xml.encode("utf-8"), **files})
    digest = hashlib.sha1(a["pmcid"].encode()).hexdigest()
    rel = f"oa_package/{digest[:2]}/{digest[2:4]}/{a['pmcid']}.tar.gz"
    citation = f"{a['abbrev']}. {a['year']} {MONTHS[a['month'] - 1]} {a['day']}; {a['year'] - 2010}:e{index + 100}"
    row = [rel, citation, a["pmcid"], f"{a['year'] + 1}-01-15 10:00:00", a["pmid"], a["lic_code"]]
    truth = {"pmcid": a["pmcid"], "pmid": a["pmid"], "doi": a["doi"], "title": a["title"], "journal": a["journal"],
             "license_code": a["lic_code"], "license_url": a["lic_url"], "package": rel,
             "nxml": f"{a['pmcid']}/{a['stem']}.nxml", "figures_in_floats_group": floats, "figures": figures,
             "citations": citations}
    return truth, package, row


def _metadata(index: int, seed: int, rng) -> dict:
    """Ids, journal, date, licence, the figure-labelling style, the main domain and the number of
    figures."""
    pmc_number = 9_000_000 + 10_000 * (seed % 100) + index
    a = {"index": index, "pmc_number": pmc_number, "pmcid": f"PMC{pmc_number}",
         "pmid": str(39_000_000 + 10_000 * (seed % 100) + index)}
    a["journal"], a["abbrev"], code = _pick(rng, JOURNALS)
    a["year"], a["month"], a["day"] = 2015 + int(rng.integers(10)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
    a["doi"] = f"10.5555/{code}.{a['year']}.{index:05d}"
    a["stem"] = f"{code}-{a['year']}-{index:05d}"
    a["lic_code"], a["lic_url"], a["lic_text"] = _pick(rng, LICENSES)
    a["word"] = _pick(rng, ["Figure", "Fig.", "Fig"])  # one labelling style per article, as journals do
    a["plural"] = {"Figure": "Figures", "Fig.": "Figs.", "Fig": "Figs"}[a["word"]]
    a["main"] = _pick(rng, DOMAINS)
    a["n_figs"] = int(rng.integers(1, 5))
    return a


def _figures(a: dict, image_size: int, rng) -> tuple[list[dict], dict[str, bytes]]:
    """The figures' truth (panels and their findings, captions) and their image files (JPEG and GIF
    thumbnail)."""
    figures, files = [], {}
    for k in range(1, a["n_figs"] + 1):
        domain = a["main"] if k == 1 or rng.random() < 0.7 else _pick(rng, DOMAINS)
        n_panels = 2 if rng.random() < 0.3 else 1
        panels = [sample_findings(domain, rng) for _ in range(n_panels)]
        images = [render(f, image_size, rng) for f in panels]
        letters = ["A", "B"][:n_panels] if n_panels > 1 else [None]
        body = " ".join(caption(f, rng, panel=p) for f, p in zip(panels, letters))
        title = _pick(rng, [None, None, modality_phrase(panels[0], rng) + "."])
        name = f"{a['stem']}.g{k:03d}"
        href = name + ".jpg" if rng.random() < 0.25 else name
        buf = io.BytesIO()
        _panel_image(images).save(buf, format="JPEG", quality=90)
        files[f"{name}.jpg"] = buf.getvalue()
        thumb = io.BytesIO()
        _panel_image(images).resize((max(1, 32 * len(panels)), 32)).save(thumb, format="GIF")
        files[f"{name}.gif"] = thumb.getvalue()
        figures.append({"fig_id": f"F{k}", "label": f"{a['word']} {k}", "caption_title": title, "caption_body": body,
                        "caption": f"{title} {body}" if title else body, "graphic_href": href,
                        "file": f"{a['pmcid']}/{name}.jpg", "domain": domain,
                        "panels": [{"panel": p, "findings": f} for p, f in zip(letters, panels)], "mentions": []})
    return figures, files


class _Citer:
    """Writes citing sentences as XML, and records each one (plain text) as a citation and as its
    figures' mentions."""

    def __init__(self, figures: list[dict]):
        self.figures, self.citations = figures, []  # citations: {"sentence": plain text, "fig_ids": [...]}

    def cite(self, sentence: str, ref_text: str, markup: str, fig_ids: list[str]) -> str:
        self.citations.append({"sentence": sentence, "fig_ids": fig_ids})
        for fig in self.figures:
            if fig["fig_id"] in fig_ids:
                fig["mentions"].append(sentence)
        return _cite(sentence, ref_text, markup)


def _citing_text(a: dict, figures: list[dict], rng) -> tuple[list[str], list[str], list[dict]]:
    """Results (a paragraph per figure, citing it and its panels among uncited sentences) and the
    discussion's sentences (a pair or a range of figures in one citation, as articles write them),
    with the citations."""
    citer, word, plural = _Citer(figures), a["word"], a["plural"]
    results = []
    for fig in figures:
        k = fig["fig_id"][1:]
        sentences = [escape(_pick(rng, FILLER))]
        for panel in fig["panels"]:
            ref = f"{word} {k}{panel['panel'] or ''}"
            found = findings_phrase(panel["findings"], rng)
            text = _pick(rng, [f"The examination revealed {found} ({ref}).", f"As shown in {ref}, there was {found}.",
                               f"{ref} shows {found}."])
            sentences.append(citer.cite(text, ref, _xref(fig["fig_id"], ref), [fig["fig_id"]]))
        results.append("<p>" + " ".join(sentences) + "</p>")
    discussion = [escape(_pick(rng, FILLER))]
    ids = [f["fig_id"] for f in figures]
    if len(figures) == 2:
        ref = f"{plural} 1 and 2"
        markup = f"{plural} {_xref('F1', '1')} and {_xref('F2', '2')}"
        discussion.append(citer.cite(f"Taken together, {ref} support the diagnosis.", ref, markup, ids))
    elif len(figures) >= 3:  # a range such as "Figs 2–4": two xrefs around a dash, or one xref with several rids
        first = int(rng.integers(1, len(figures) - 1))
        last = int(rng.integers(first + 2, len(figures) + 1))
        ids = [f"F{k}" for k in range(first, last + 1)]
        ref = f"{plural} {first}\u2013{last}"
        if rng.random() < 0.5:
            markup = f"{plural} {_xref(ids[0], str(first))}\u2013{_xref(ids[-1], str(last))}"
        else:
            markup = f'<xref ref-type="fig" rid="{" ".join(ids)}">{escape(ref)}</xref>'
        discussion.append(citer.cite(f"The findings in {ref} were concordant.", ref, markup, ids))
    discussion.append(escape("Such appearances are typical of " + TOPIC[a["main"]] + "."))
    return results, discussion, citer.citations


def _article_xml(a: dict, figures: list[dict], results: list[str], discussion: list[str], floats: bool,
                 rng) -> str:
    """The JATS article: front matter (its title, abstract and type drawn here, into `a`), body,
    references; the figures inside the results, or in a floats group at the end."""
    fig_xml = [_fig_xml(fig) for fig in figures]
    results_xml = "".join(results) if floats else "".join(p + f for p, f in zip(results, fig_xml))
    topic, main = TOPIC[a["main"]], a["main"]
    a["title"] = _pick(rng, [f"A case report on {topic}", f"Lessons from {topic}: a case report",
                             f"Imaging and pathology in {topic}"])
    abstract = (f"We report imaging and pathology findings illustrating {TOPIC[main]}. "
                f"The key observation was {findings_phrase(figures[0]['panels'][0]['findings'], rng)}.")
    article_type = _pick(rng, ["case-report", "research-article"])
    year, section = a["year"], "Case presentation" if article_type == "case-report" else "Results"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n' + DOCTYPE + "\n"
        f'<article xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:mml="http://www.w3.org/1998/Math/MathML" '
        f'dtd-version="1.3" xml:lang="en" article-type="{article_type}"><?properties open_access?>'
        f'<front><journal-meta><journal-id journal-id-type="nlm-ta">{escape(a["abbrev"])}</journal-id>'
        f'<journal-title-group><journal-title>{escape(a["journal"])}</journal-title></journal-title-group>'
        f'<publisher><publisher-name>Tiny World Press</publisher-name></publisher></journal-meta>\n'
        f'<article-meta><article-id pub-id-type="pmid">{a["pmid"]}</article-id>'
        f'<article-id pub-id-type="pmc">{a["pmc_number"]}</article-id>'
        f'<article-id pub-id-type="doi">{a["doi"]}</article-id>'
        f'<title-group><article-title>{escape(a["title"])}</article-title></title-group>'
        f'<contrib-group><contrib contrib-type="author"><name><surname>Synthetic</surname>'
        f'<given-names>A.</given-names></name></contrib></contrib-group>'
        f'<pub-date pub-type="epub"><day>{a["day"]}</day><month>{a["month"]}</month><year>{year}</year></pub-date>'
        f'<volume>{year - 2010}</volume><elocation-id>e{a["index"] + 100}</elocation-id>'
        f'<permissions><copyright-statement>\u00a9 {year} The Authors.</copyright-statement>'
        f'<license license-type="open-access" xlink:href="{a["lic_url"]}">'
        f'<license-p>{escape(a["lic_text"])}</license-p>'
        f'</license></permissions><abstract><p>{escape(abstract)}</p></abstract></article-meta></front>\n'
        f'<body><sec id="s1"><title>Introduction</title><p>Case reports often describe {escape(topic)} '
        f'[<xref ref-type="bibr" rid="B1">1</xref>]. {escape(_pick(rng, FILLER))}</p></sec>\n'
        f'<sec id="s2"><title>{section}</title>{results_xml}</sec>\n'
        f'<sec id="s3"><title>Discussion</title><p>{" ".join(discussion)}</p></sec></body>\n'
        f'<back><ref-list><ref id="B1"><mixed-citation>Synthetic A. A review of {escape(topic)}. '
        f'{escape(a["abbrev"])}. 2010;1:1-10.</mixed-citation></ref></ref-list></back>'
        + (f'<floats-group>{"".join(fig_xml)}</floats-group>' if floats else "")
        + "</article>\n"
    )


def _fig_xml(fig: dict) -> str:
    title = f"<title>{escape(fig['caption_title'])}</title>" if fig["caption_title"] else ""
    return (f'<fig id="{fig["fig_id"]}" position="float"><label>{escape(fig["label"])}</label>'
            f'<caption>{title}<p>{escape(fig["caption_body"])}</p></caption>'
            f'<graphic xlink:href={quoteattr(fig["graphic_href"])}/></fig>')


def _targz(top: str, files: dict[str, bytes]) -> bytes:
    """A .tar.gz holding top/ and top/<name> for each file, with fixed times and owners."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        folder = tarfile.TarInfo(top)
        folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o755, FIXED_MTIME
        tar.addfile(folder)
        for name, data in files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode, info.mtime = len(data), 0o644, FIXED_MTIME
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def write_pmc_packages(out_dir: str | Path, n_articles: int, seed: int = 0, image_size: int = 128) -> dict:
    """Write n_articles synthetic PMC packages, their oa_file_list.csv and truth.json under out_dir
    (see module docstring); returns {"root", "manifest", "truth", "packages": [paths]}. Skips the
    work when out_dir already holds them for the same arguments."""
    args = {"version": ARTICLES_VERSION, "n_articles": check_count("n_articles", n_articles),
            "seed": check_count("seed", seed), "image_size": check_size(image_size)}
    root = Path(out_dir)
    paths = {"root": root, "manifest": root / "oa_file_list.csv", "truth": root / "truth.json"}
    if paths["truth"].exists() and paths["manifest"].exists():
        try:
            truth = read_json(paths["truth"])
        except ValueError:
            truth = {}
        if truth.get("args") == args and all((root / a["package"]).exists() for a in truth["articles"]):
            return {**paths, "packages": [root / a["package"] for a in truth["articles"]]}
    paths["truth"].unlink(missing_ok=True)
    articles, rows, packages = [], [], []
    for i in range(args["n_articles"]):
        truth, package, row = _article(i, args["seed"], args["image_size"])
        path = root / truth["package"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(package)
        articles.append(truth)
        rows.append(row)
        packages.append(path)
    write_oa_file_list(paths["manifest"], rows)
    atomic_write_json(paths["truth"], {"args": args, "articles": articles})
    return {**paths, "packages": packages}
