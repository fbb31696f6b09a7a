"""LLaVA-Med's release read by its names: local folders (layout or flat), a base URL served from 127.0.0.1 through the
real downloader, both key spellings, a figure missing from its package, a package that 404s, a truncated file."""

import json

import pytest
from PIL import Image

from fake_release import PAIRS, write_fake_release
from llavamed_lite.teaching_servers import FaultyServer
from llavamed_lite.data.formats import RecordError
from llavamed_lite.data.release import (domain_of, fetch_release_file, pair_of, prepare_release_records, qa50_questions,
                                        read_release_records, release_key, round_robin)
from llavamed_lite.runs import MissingInput, RunDir


def test_release_files_are_found_in_the_layout_or_flat(tmp_path):
    layout = write_fake_release(tmp_path / "layout", "http://unused")
    flat = write_fake_release(tmp_path / "flat", "http://unused", flat=True)
    assert fetch_release_file(str(layout), "alignment", tmp_path) == layout / "alignment/llava_med_alignment_500k.json"
    assert fetch_release_file(str(flat), "alignment", tmp_path) == flat / "llava_med_alignment_500k.json"
    with pytest.raises(MissingInput, match=r"llava_med_instruct_10k.json.*data.release"):
        fetch_release_file(str(layout), "instruct-10k", tmp_path)


def test_both_key_spellings_are_read_and_a_truncated_file_is_named(tmp_path):
    root = write_fake_release(tmp_path, "http://unused")
    alignment = read_release_records(root / "alignment/llava_med_alignment_500k.json")  # `conversatons`
    instruct = read_release_records(root / "instruct/llava_med_instruct_60k_inline_mention.json")
    assert all("conversations" in r and "conversatons" not in r for r in alignment)
    assert [len(r["conversations"]) for r in instruct] == [4] * len(PAIRS)
    path = root / "alignment/llava_med_alignment_500k.json"
    path.write_text(path.read_text()[:-40])
    with pytest.raises(ValueError, match=r"llava_med_alignment_500k.json: invalid JSON"):
        read_release_records(path)
    path.write_text(json.dumps([{"id": "x", "image": "x.jpg", "conversatons": [{"from": "human", "value": "hi"}]}]))
    with pytest.raises(RecordError, match="record 0"):
        read_release_records(path)


def test_subsets_are_taken_round_robin_over_the_domains(tmp_path):
    root = write_fake_release(tmp_path, "http://unused")
    alignment = read_release_records(root / "alignment/llava_med_alignment_500k.json")
    assert [domain_of(r) for r in alignment] == [PAIRS[pair_of(r)][3] for r in alignment]  # from the caption's words
    five = round_robin(alignment, 5, seed=0)
    assert sorted(domain_of(r) for r in five) == sorted({"chest_xray", "ct_scan", "mri", "histology", "gross"})
    assert round_robin(alignment, 5, seed=0) == five and len(round_robin(alignment, None)) == len(PAIRS)
    with pytest.raises(ValueError, match="max_pairs"):
        round_robin(alignment, 0)
    assert release_key("1", "60k-im") == "alignment" and release_key("2", "10k") == "instruct-10k"
    with pytest.raises(ValueError, match="instruct_variant"):
        release_key("2", "20k")


def test_a_release_served_over_http_gives_records_with_their_images(tmp_path, capsys):
    served = tmp_path / "served"
    with FaultyServer(served, faults={"packages/PMC200.tar.gz": "500:1"}) as server:  # a flaky package recovers
        write_fake_release(served, server.url())
        run = RunDir(tmp_path / "run")
        records = prepare_release_records(run, "1", server.url(), seed=0, progress=False)
        assert server.gets("llava_med_alignment_500k.json") == 0  # the layout path was found first
    assert "CC BY-NC 4.0" in capsys.readouterr().out
    kept = json.loads(records.path.read_text())
    # p4's figure is not in its package and p5's package 404s: their records are left out, and said why
    assert sorted(r["id"] for r in kept) == ["p1", "p2", "p3", "p6"]
    assert all("conversations" in r and r["image"] == f"{r['id']}.jpg" for r in kept)
    assert records.image_folder == run.release / "images"
    assert Image.open(records.image_folder / "p3.jpg").format == "JPEG"  # a PNG figure saved as {pair_id}.jpg
    stats = json.loads((run.release / "alignment_train.stats.json").read_text())
    assert stats["failed"] == {"p4": "not in the package", "p5": "package not found (404)"}
    assert not list((run.release / "packages").glob("*.tar.gz"))  # packages are dropped once their figures are out
    # a second call with the same arguments keeps the records without asking the server again
    mtime = records.path.stat().st_mtime_ns
    assert prepare_release_records(run, "1", server.url(), seed=0, progress=False) == records
    assert records.path.stat().st_mtime_ns == mtime


def test_stage_two_takes_the_instruct_variant_and_a_subset(tmp_path):
    root = write_fake_release(tmp_path / "release", (tmp_path / "release").as_uri())  # file:// URLs for packages
    run = RunDir(tmp_path / "run")
    records = prepare_release_records(run, "2", str(root), variant="60k-im", max_pairs=3, seed=0, progress=False)
    kept = json.loads(records.path.read_text())
    assert records.path.name == "instruct-60k-im_train.json" and 1 <= len(kept) <= 3
    assert len({json.dumps(r["domain"]) for r in kept}) == len(kept)  # three pairs, three domains
    with pytest.raises(MissingInput, match="llava_med_instruct_60k.json"):
        prepare_release_records(run, "2", str(root), variant="60k", progress=False)


def test_the_chat_evaluation_questions_come_with_their_figures(tmp_path):
    root = write_fake_release(tmp_path / "release", (tmp_path / "release").as_uri())
    questions, images = qa50_questions(RunDir(tmp_path / "run"), str(root), progress=False)
    assert [q["question_id"] for q in questions] == [0, 2]  # p5's package is gone
    assert all((images / q["image"]).is_file() and q["fig_caption"] for q in questions)
    (root / "eval" / "llava_med_eval_qa50_qa.jsonl").write_text('{"question_id": 1, "text": "hi"}\n')
    with pytest.raises(RecordError, match="line 1: missing field"):
        qa50_questions(RunDir(tmp_path / "run2"), str(root), progress=False)
