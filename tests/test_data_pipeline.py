"""The curation pipeline end to end on packages written here: good, broken and hostile ones; filters counted by
reason; LLaVA-Med outputs; resume after an interruption; the CLI."""

import io
import json
import tarfile
from xml.sax.saxutils import escape

import numpy as np
import pytest
from PIL import Image

from llavamed_lite.cli import main as cli_main
from llavamed_lite.data import pipeline as pipeline_module
from llavamed_lite.data.filters import FilterConfig
from llavamed_lite.data.formats import read_caption_file, read_training_records
from llavamed_lite.data.pipeline import Curator, find_sources

CAPTIONS = {
    "xray": "Posteroanterior chest radiograph showing a small nodule in the left upper zone.",
    "ct": "Axial contrast-enhanced CT of the abdomen with two hypodense lesions in the liver.",
    "histo": "Photomicrograph (H&E stain, original magnification x200) showing dense atypical nuclei.",
    "mri": "Axial T2-weighted MRI of the brain with a large mass in the right hemisphere.",
    "gross": "Gross photograph of the resected kidney with a dark red lesion on the cut surface.",
    "chart": "Bar chart of the survival of the two treatment groups over five years of follow-up.",
}


def picture(seed: int, size: int = 64) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((size, size), Image.Resampling.BILINEAR)


def jpeg(image: Image.Image, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def nxml(pmcid: str, figs: list[tuple[str, str]]) -> bytes:
    """figs: (fig id, caption)."""
    fig_xml = "".join(f'<fig id="{fid}"><label>Figure {i}</label><caption><p>{escape(cap)}</p></caption>'
                      f'<graphic xlink:href="{fid}"/></fig>' for i, (fid, cap) in enumerate(figs, 1))
    cites = " ".join(f'Result {i} was clear (<xref ref-type="fig" rid="{fid}">Fig. {i}</xref>).'
                     for i, (fid, _) in enumerate(figs, 1))
    return f"""<?xml version="1.0"?>
<!DOCTYPE article PUBLIC "-//NLM//DTD JATS (Z39.96) Journal Archiving and Interchange DTD v1.2 20190208//EN" "JATS-archivearticle1.dtd">
<article xmlns:xlink="http://www.w3.org/1999/xlink"><front><article-meta>
<article-id pub-id-type="pmid">{pmcid[3:]}</article-id><article-id pub-id-type="pmc">{pmcid[3:]}</article-id>
<title-group><article-title>Article {pmcid}</article-title></title-group>
<permissions><license xlink:href="https://creativecommons.org/licenses/by/4.0/"><license-p>CC BY</license-p></license></permissions>
</article-meta></front><body><p>{cites}</p>{fig_xml}</body></article>""".encode()


def package(folder, pmcid, members: dict[str, bytes]):
    path = folder / f"{pmcid}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name if name.startswith(("/", "..")) else f"{pmcid}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def article_package(folder, pmcid, figs: list[tuple[str, str, bytes | None]], xml: bytes | None = None, extra=None):
    members = {f"{pmcid}.nxml": xml if xml is not None else nxml(pmcid, [(f, c) for f, c, _ in figs])}
    members.update({f"{fid}.jpg": data for fid, _, data in figs if data is not None})
    members.update(extra or {})
    return package(folder, pmcid, members)


@pytest.fixture
def packages(tmp_path):
    d = tmp_path / "pkgs"
    d.mkdir()
    article_package(d, "PMC100", [("f1", CAPTIONS["xray"], jpeg(picture(1))), ("f2", CAPTIONS["ct"], jpeg(picture(2))),
                                  ("f3", CAPTIONS["chart"], jpeg(picture(3)))])
    article_package(d, "PMC101", [("f1", CAPTIONS["histo"], jpeg(picture(4))),
                                  ("f2", CAPTIONS["mri"], jpeg(picture(1))),  # same pixels as PMC100 f1
                                  ("f3", CAPTIONS["gross"], jpeg(picture(2).resize((70, 70)), 60)),  # near-duplicate
                                  ("f4", "Chest X-ray.", jpeg(picture(5))),  # too short
                                  ("f5", CAPTIONS["xray"], jpeg(picture(6))),  # duplicate caption
                                  ("f6", CAPTIONS["mri"].replace("large", "small"), None),  # missing graphic
                                  ("f7", CAPTIONS["gross"].replace("kidney", "liver"), b"not a jpeg"),  # corrupt
                                  ("f8", CAPTIONS["ct"].replace("two", "three"), jpeg(picture(7, size=16)))])  # small
    article_package(d, "PMC102", [("f1", CAPTIONS["xray"], jpeg(picture(8)))], xml=b"<article><front></article>")
    article_package(d, "PMC103", [("f1", CAPTIONS["mri"].replace("right", "left"), jpeg(picture(9)))],
                    extra={"../evil.jpg": b"x"})
    good = article_package(d, "PMC104", [("f1", CAPTIONS["gross"].replace("kidney", "spleen"), jpeg(picture(10)))])
    data = good.read_bytes()
    (d / "PMC105.tar.gz").write_bytes(data[: len(data) // 2])  # truncated download
    package(d, "PMC106", {"readme.txt": b"no article here"})
    return d


def test_pipeline_filters_and_outputs(packages, tmp_path):
    result = Curator(tmp_path / "run").run(find_sources([packages]), progress=False)
    report = result.report
    assert report["packages"] == 7 and report["packages_ok"] == 3
    assert report["rejects"] == {"no article XML": 1, "malformed XML": 1, "unsafe or corrupt archive": 2,
                                 "missing graphic": 1, "unreadable image": 1, "caption too short": 1,
                                 "image too small": 1, "other domain": 1, "duplicate image": 1,
                                 "near-duplicate image": 1, "duplicate caption": 1}
    kept = {r["pair_id"]: r["domain_name"] for r in result.records}
    assert kept == {"PMC100_f1": "chest_xray", "PMC100_f2": "ct_scan", "PMC101_f1": "histology",
                    "PMC104_f1": "gross"}
    errors = {r["source"]: r.get("error") for r in result.rejects if "error" in r}
    assert "PMC103.tar.gz: member '../evil.jpg'" in errors["PMC103.tar.gz"] and "truncated" in errors["PMC105.tar.gz"]
    assert errors["PMC102.tar.gz"].startswith("PMC102.tar.gz:PMC102/PMC102.nxml: malformed XML at line 1")

    data = tmp_path / "run" / "data" / "pmc"
    captions = read_caption_file(data / "captions.json")
    assert captions[0]["in_text_mention"] == ["Result 1 was clear (Fig. 1)."]
    assert captions[0]["domain"] == {"chest_xray": True, "mri": False, "histology": False, "gross": False,
                                     "ct_scan": False}
    alignment, errors = read_training_records(data / "alignment.json")
    assert [a["conversations"][1]["value"] for a in alignment] == [c["fig_caption"] for c in captions]
    assert all((data / a["image"]).is_file() for a in alignment)
    manifest = [json.loads(line) for line in (data / "image_manifest.jsonl").read_text().splitlines()]
    assert manifest[0]["image_file_path"] == "PMC100/f1.jpg" and manifest[0]["pair_id"] == "PMC100_f1"
    assert manifest[0]["pmc_tar_url"].endswith("PMC100.tar.gz")
    assert sorted(p.name for p in (data / "images").iterdir()) == sorted(f"{k}.jpg" for k in kept)
    assert not (data / "tmp").exists()

    from datasets import load_from_disk

    dd = load_from_disk(str(data / "hf_dataset"))
    assert sum(len(split) for split in dd.values()) == 4 and set(dd) == {"train", "validation"}
    assert json.loads((data / "report.json").read_text()) == report


def test_interrupted_run_resumes_without_redoing_packages(packages, tmp_path, monkeypatch):
    sources = find_sources([packages])
    reference = Curator(tmp_path / "ref").run(sources, progress=False)

    calls = []
    original = Curator.curate_source

    def crash_on_third(self, source, dedup):
        calls.append(source.name)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, source, dedup)

    monkeypatch.setattr(Curator, "curate_source", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        Curator(tmp_path / "run").run(sources, progress=False)
    monkeypatch.setattr(Curator, "curate_source", lambda self, s, d: calls.append(s.name) or original(self, s, d))
    resumed = Curator(tmp_path / "run").run(sources, progress=False)
    assert calls[:2] == [s.name for s in sources[:2]]
    assert calls[3:] == [s.name for s in sources[2:]]  # the first two were not redone
    assert resumed.records == reference.records and resumed.report == reference.report
    again = Curator(tmp_path / "run").run(sources, progress=False)  # a finished run does nothing new
    assert len(calls) == 3 + len(sources) - 2 and again.records == reference.records


def test_keep_other_max_articles_and_restart(packages, tmp_path):
    first = Curator(tmp_path / "run").run(find_sources([packages]), max_articles=1, progress=False)
    assert len(first.records) == 2
    # the ledger keeps earlier decisions; restart applies the new filter to every package
    result = Curator(tmp_path / "run", FilterConfig(keep_other=True)).run(find_sources([packages]), max_articles=1,
                                                                          progress=False, restart=True)
    assert [r["domain_name"] for r in result.records] == ["chest_xray", "ct_scan", "other"]
    assert result.records[2]["domain"] == dict.fromkeys(result.records[0]["domain"], False)


def test_outputs_are_written_atomically(packages, tmp_path, monkeypatch):
    """A crash while writing the outputs leaves the previous files whole."""
    run = tmp_path / "run"
    Curator(run).run(find_sources([packages]), progress=False)
    before = (run / "data" / "pmc" / "captions.json").read_text()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pipeline_module, "alignment_records", boom)
    with pytest.raises(RuntimeError):
        Curator(run, FilterConfig(keep_other=True)).run(find_sources([packages]), progress=False)
    assert json.loads((run / "data" / "pmc" / "alignment.json").read_text())  # still the whole earlier file
    assert (run / "data" / "pmc" / "captions.json").read_text() == before
    assert not list((run / "data" / "pmc").glob(".*.tmp"))


def test_cli_curate(packages, tmp_path, capsys):
    assert cli_main(["curate", "--input", str(packages), "--run-dir", str(tmp_path / "run"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert '"figures_kept": 4' in out
    assert cli_main(["curate", "--input", str(tmp_path / "absent"), "--run-dir", str(tmp_path / "run")]) == 2


def test_cli_downloads_a_llava_med_image_manifest(tmp_path, capsys):
    """LLaVA-Med's image manifest: packages fetched from a (local) mirror, the listed figures saved as
    {pair_id}.jpg, a missing package and a missing member reported by reason, then the packages curated."""
    from fake_release import write_image_manifest
    from llavamed_lite.teaching_servers import FaultyServer

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    article_package(mirror, "PMC200", [("f1", CAPTIONS["xray"], jpeg(picture(1))), ("f2", CAPTIONS["ct"], jpeg(picture(2)))])
    with FaultyServer(mirror, {"PMC201.tar.gz": "404"}) as server:
        rows = [{"pmc_tar_url": server.url("PMC200.tar.gz"), "image_file_path": "PMC200/f1.jpg", "pair_id": "a1"},
                {"pmc_tar_url": server.url("PMC200.tar.gz"), "image_file_path": "PMC200/f2.jpg", "pair_id": "a2"},
                {"pmc_tar_url": server.url("PMC200.tar.gz"), "image_file_path": "PMC200/f9.jpg", "pair_id": "a3"},
                {"pmc_tar_url": server.url("PMC201.tar.gz"), "image_file_path": "PMC201/f1.jpg", "pair_id": "b1"}]
        manifest = write_image_manifest(tmp_path / "images.jsonl", rows)
        run = tmp_path / "run"
        assert cli_main(["curate", "--manifest", str(manifest), "--run-dir", str(run), "--no-progress",
                         "--retries", "0"]) == 0
    out = capsys.readouterr().out
    assert "failed: 1 not found (404)" in out
    images = run / "data" / "pmc" / "manifest_images"
    assert sorted(p.name for p in images.iterdir()) == ["a1.jpg", "a2.jpg"]
    report = json.loads((run / "data" / "pmc" / "manifest_images_report.json").read_text())
    assert report["counts"] == {"done: extracted": 2, "failed: not in the package": 1,
                                "failed: package not downloaded": 1}
    assert json.loads((run / "data" / "pmc" / "report.json").read_text())["figures_kept"] == 2


def test_same_file_names_in_two_folders_do_not_collide(tmp_path):
    """Loose articles without a PMCID are named by file: two 'paper.xml' in two folders keep both figures."""
    for folder, seed, cap in (("a", 1, CAPTIONS["xray"]), ("b", 2, CAPTIONS["ct"])):
        d = tmp_path / "in" / folder
        d.mkdir(parents=True)
        xml = nxml("PMC1", [("f1", cap)]).replace(b'<article-id pub-id-type="pmc">1</article-id>', b"")
        (d / "paper.xml").write_bytes(xml)
        picture(seed).save(d / "f1.jpg")
    result = Curator(tmp_path / "run").run(find_sources([tmp_path / "in"]), progress=False)
    assert [r["pair_id"] for r in result.records] == ["paper_f1", "paper_f1-2"]
    assert len(list((tmp_path / "run" / "data" / "pmc" / "images").iterdir())) == 2


def test_ledger_cut_mid_line_resumes_that_package(packages, tmp_path):
    """A process killed while writing the ledger leaves half a line: that package is simply done again."""
    sources = find_sources([packages])
    reference = Curator(tmp_path / "ref").run(sources, progress=False)
    run = tmp_path / "run"
    Curator(run).run(sources[:2], progress=False)
    ledger = run / "data" / "pmc" / "curation_ledger.jsonl"
    lines = ledger.read_text().splitlines(keepends=True)
    ledger.write_text(lines[0] + lines[1][: len(lines[1]) // 2])
    resumed = Curator(run).run(sources, progress=False)
    assert resumed.records == reference.records and resumed.report == reference.report
    assert len(ledger.read_text().splitlines()) == len(sources)


def test_wrong_inputs_never_replace_a_finished_run(packages, tmp_path, capsys):
    """issue 18.4: `curate --input /etc/passwd` on a finished run dir replaced captions.json with [] (rc 0)."""
    run = tmp_path / "run"
    argv = ["curate", "--run-dir", str(run), "--no-progress"]
    assert cli_main([*argv, "--input", str(packages)]) == 0
    def outputs():  # the ledger is not an output: it records every package seen, for resume
        return {p: p.read_bytes() for p in (run / "data" / "pmc").glob("*.json*") if p.name != "curation_ledger.jsonl"}

    before = outputs()
    assert len(before) == 5
    capsys.readouterr()
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n")
    assert cli_main([*argv, "--input", str(passwd)]) == 2
    assert "no PMC package" in capsys.readouterr().err
    rejected = tmp_path / "rejected"
    rejected.mkdir()
    article_package(rejected, "PMC900", [("f1", "Too short.", jpeg(picture(11)))])  # a source that keeps nothing
    assert cli_main([*argv, "--input", str(rejected)]) == 1
    err = capsys.readouterr().err
    assert "kept no figure" in err and "earlier outputs were kept" in err
    assert outputs() == before


def test_max_articles_must_be_positive(packages, tmp_path, capsys):
    """issue 18.4: `--max-articles -5` quietly curated all but the last 5."""
    argv = ["curate", "--input", str(packages), "--run-dir", str(tmp_path / "run"), "--max-articles", "-5"]
    assert cli_main(argv) == 2
    assert "--max-articles: must be >= 1" in capsys.readouterr().err and not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="max_articles must be >= 1"):
        Curator(tmp_path / "run").run(find_sources([packages]), max_articles=-5, progress=False)
