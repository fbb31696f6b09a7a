"""Curation on the tiny world's synthetic PMC packages, where the truth is known (data_samples/pmc_synthetic)."""

import tarfile

import pytest

from llavamed_lite.data.domains import score
from llavamed_lite.data.download import download_all, read_manifest
from llavamed_lite.teaching_servers import FaultyServer
from llavamed_lite.data.jats import parse_article
from llavamed_lite.data.pipeline import Curator, find_sources
from llavamed_lite.io import read_json
from llavamed_lite.paths import data_sample

ROOT = data_sample("pmc_synthetic")
TRUTH = read_json(ROOT / "truth.json")["articles"]


@pytest.mark.parametrize("truth", TRUTH, ids=[a["pmcid"] for a in TRUTH])
def test_parser_matches_truth(truth):
    with tarfile.open(ROOT / truth["package"]) as tar:
        data = tar.extractfile(truth["nxml"]).read()
    a = parse_article(data, source=truth["nxml"])
    assert (a.pmcid, a.pmid, a.doi, a.title) == (truth["pmcid"], truth["pmid"], truth["doi"], truth["title"])
    assert a.license.url == truth["license_url"] and a.license.code.startswith(truth["license_code"])
    assert [f.fig_id for f in a.figures] == [f["fig_id"] for f in truth["figures"]]
    for fig, expected in zip(a.figures, truth["figures"]):
        assert (fig.label, fig.caption, fig.graphic) == (expected["label"], expected["caption"], expected["graphic_href"])
        assert fig.mentions == [c["sentence"] for c in truth["citations"] if fig.fig_id in c["fig_ids"]]


def test_curation_of_synthetic_packages_matches_truth(tmp_path):
    result = Curator(tmp_path / "run").run(find_sources([ROOT / "oa_package"]), progress=False)
    truth = {f"{a['pmcid']}_{f['fig_id']}": f for a in TRUTH for f in a["figures"]}
    assert result.report["packages_ok"] == len(TRUTH)
    assert result.report["figures_seen"] == len(truth)
    kept = {r["pair_id"]: r for r in result.records}
    assert len(kept) + sum(result.report["rejects"].values()) == len(truth)
    for pair_id, r in kept.items():
        assert r["fig_caption"] == truth[pair_id]["caption"]
    # the caption vocabulary on the tiny world's captions: every domain right
    s = score([truth[p]["domain"] for p in kept], [r["domain_name"] for r in kept.values()])
    assert s.accuracy == 1.0


def test_download_synthetic_manifest_from_local_mirror(tmp_path):
    packages = read_manifest(ROOT / "oa_file_list.csv", base_url="http://placeholder/")
    assert len(packages) == len(TRUTH)
    with FaultyServer(ROOT, {packages[0].url.split("placeholder/")[1]: "404"}) as server:
        for p in packages:
            p.url = p.url.replace("http://placeholder/", server.url())
        report = download_all(packages, tmp_path / "dl", workers=4, backoff=0.01, progress=False)
    assert report.counts() == {"done": {"downloaded": len(TRUTH) - 1}, "failed": {"not found (404)": 1}}
    result = Curator(tmp_path / "run").run(find_sources([tmp_path / "dl"], {p.name: p.url for p in packages}),
                                           progress=False)
    assert result.report["packages"] == len(TRUTH) - 1
    import json

    first = json.loads((result.data_dir / "image_manifest.jsonl").read_text().splitlines()[0])
    assert first["pmc_tar_url"].startswith(server.url()) and first["image_file_path"].startswith("PMC")


def test_tiny_world_captions_give_alignment_records_and_domains(tmp_path):
    """Stage 1 at tiny scale: alignment records from the tiny world's captions_train.json (images under its root)."""
    from llavamed_lite.data.alignment import alignment_records
    from llavamed_lite.data.domains import classify_caption
    from llavamed_lite.data.formats import read_caption_file, record_domain
    from llavamed_lite.synth.world import build_tiny_world

    world = build_tiny_world(tmp_path / "data", n_train=25, n_heldout=0, image_size=64)
    captions = read_caption_file(world["captions_train"])
    records = alignment_records(captions, world["root"], seed=0)
    assert len(records) == 25 and records[0]["image"] == captions[0]["image"]
    assert all((world["root"] / r["image"]).is_file() for r in records)
    assert [classify_caption(c["fig_caption"]) for c in captions] == [record_domain(c) for c in captions]
