"""Synthetic PMC packages: well-formed JATS, PMC package layout, manifest, truth, determinism."""

import csv
import io
import json
import tarfile
import xml.etree.ElementTree as ET

import pytest
from PIL import Image

from llavamed_lite.data.download import OA_FILE_LIST_HEADER
from llavamed_lite.paths import DATA_SAMPLES
from llavamed_lite.synth.articles import write_pmc_packages

XLINK = "{http://www.w3.org/1999/xlink}href"


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    return write_pmc_packages(tmp_path_factory.mktemp("pmc"), n_articles=10, seed=1, image_size=64)


def _members(path):
    with tarfile.open(path) as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()}


def _flat(elem):
    return "".join(elem.itertext())


def test_packages_have_the_pmc_layout_and_well_formed_jats(packages):
    truth = json.loads(packages["truth"].read_text())["articles"]
    assert len(truth) == len(packages["packages"]) == 10
    for article, path in zip(truth, packages["packages"]):
        members = _members(path)
        top = article["pmcid"]
        assert path.name == f"{top}.tar.gz"
        assert all(name == top or name.startswith(top + "/") for name in members)
        nxmls = [n for n in members if n.endswith(".nxml")]
        assert nxmls == [article["nxml"]]
        root = ET.fromstring(members[article["nxml"]])  # raises on malformed XML
        ids = {e.get("pub-id-type"): e.text for e in root.iter("article-id")}
        assert ids["pmc"] == top[3:] and ids["pmid"] == article["pmid"] and ids["doi"] == article["doi"]
        assert root.find(".//permissions/license").get(XLINK) == article["license_url"]
        assert root.find(".//abstract") is not None and root.find(".//article-title").text == article["title"]
        figs = {f.get("id"): f for f in root.iter("fig")}
        assert list(figs) == [f["fig_id"] for f in article["figures"]]
        for fig in article["figures"]:
            elem = figs[fig["fig_id"]]
            assert elem.find("label").text == fig["label"]
            assert " ".join(" ".join(elem.find("caption").itertext()).split()) == fig["caption"]
            href = elem.find("graphic").get(XLINK)
            assert href == fig["graphic_href"]
            assert fig["file"] in members and fig["file"].rsplit("/", 1)[1].startswith(href.removesuffix(".jpg"))
            image = Image.open(io.BytesIO(members[fig["file"]]))
            assert image.format == "JPEG" and image.height == 64
        for xref in root.iter("xref"):
            if xref.get("ref-type") == "fig":
                assert set(xref.get("rid").split()) <= set(figs)


def test_truth_citations_are_body_sentences(packages):
    truth = json.loads(packages["truth"].read_text())["articles"]
    kinds = set()
    for article, path in zip(truth, packages["packages"]):
        root = ET.fromstring(_members(path)[article["nxml"]])
        body = " ".join(_flat(p) for p in root.find("body").iter("p"))
        for cite in article["citations"]:
            assert cite["sentence"] in body
            kinds.add("range" if "\u2013" in cite["sentence"] else "pair" if " and " in cite["sentence"] and
                      len(cite["fig_ids"]) == 2 else "single")
        for fig in article["figures"]:
            assert fig["mentions"], f"{article['pmcid']} {fig['fig_id']} is never cited"
    assert {"single", "range"} <= kinds


def test_manifest_lists_every_package(packages):
    rows = list(csv.reader(packages["manifest"].read_text().splitlines()))
    assert rows[0] == OA_FILE_LIST_HEADER
    root = packages["root"]
    assert sorted(root / r[0] for r in rows[1:]) == sorted(packages["packages"])
    for r in rows[1:]:
        assert r[0].startswith("oa_package/") and r[2] == r[0].rsplit("/", 1)[1].removesuffix(".tar.gz")
        assert r[4].isdigit() and r[5] in ("CC BY", "CC BY-NC", "CC0")


def test_same_seed_same_bytes(packages, tmp_path):
    again = write_pmc_packages(tmp_path / "a", n_articles=10, seed=1, image_size=64)
    other = write_pmc_packages(tmp_path / "b", n_articles=10, seed=2, image_size=64)
    assert [p.read_bytes() for p in again["packages"]] == [p.read_bytes() for p in packages["packages"]]
    assert again["truth"].read_bytes() == packages["truth"].read_bytes()
    assert other["packages"][0].read_bytes() != packages["packages"][0].read_bytes()


def test_idempotent(tmp_path):
    first = write_pmc_packages(tmp_path, n_articles=2, seed=0, image_size=64)
    stamp = first["truth"].stat().st_mtime_ns
    assert write_pmc_packages(tmp_path, n_articles=2, seed=0, image_size=64)["truth"].stat().st_mtime_ns == stamp


@pytest.mark.parametrize("kwargs, match", [({"n_articles": -2}, "n_articles must be a non-negative integer"),
                                           ({"image_size": 32}, "image size must be an integer from 64 to 336")])
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        write_pmc_packages(tmp_path, **{"n_articles": 1, **kwargs})


def test_committed_sample_is_current(tmp_path):
    """data_samples/pmc_synthetic is what write_pmc_packages makes today (regenerate it when the generator changes)."""
    sample = DATA_SAMPLES / "pmc_synthetic"
    args = json.loads((sample / "truth.json").read_text())["args"]
    fresh = write_pmc_packages(tmp_path, args["n_articles"], args["seed"], args["image_size"])
    assert fresh["truth"].read_bytes() == (sample / "truth.json").read_bytes()
    assert fresh["manifest"].read_bytes() == (sample / "oa_file_list.csv").read_bytes()


def test_eight_packages_are_byte_identical_to_the_ones_before_the_refactor(tmp_path, tree_digest):
    """The digest of the mirror (8 packages, seed 1, 64 px: oa_file_list.csv, truth.json and the .tar.gz files) as
    `_article` wrote it in one 129-line function, before it was split into named pieces. A PIL upgrade that
    re-encodes JPEGs changes it too: check the packages, then update the digest."""
    write_pmc_packages(tmp_path, 8, seed=1, image_size=64)
    assert tree_digest(tmp_path) == ("b72bfb9bfc1f17dd", 10)
