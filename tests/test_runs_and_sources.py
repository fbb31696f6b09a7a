"""The run directory's contract (llavamed_lite.runs) and the data sources (llavamed_lite.sources): each source
resolves to its own files and image folder, a missing input names its maker, and nothing but the contract spells a
path inside a run directory."""

import json
import re

import pytest

from fake_release import write_fake_release
from llavamed_lite.config import QUICK_TRAIN, apply_quick, load_config
from llavamed_lite.data.formats import load_records, read_caption_file
from llavamed_lite.data.pipeline import Curator, find_sources
from llavamed_lite.instruct import make_backend, synthesize, write_instruct
from llavamed_lite.paths import DATA_SAMPLES, REPO_ROOT
from llavamed_lite.runs import ARTIFACTS, MissingInput, Records, RunDir, artifacts_table
from llavamed_lite.sources import CAPTION_QUESTION_TYPES, chat_samples, stage_inputs

SMALL = {"data.n_train_figures": 10, "data.n_heldout_figures": 5}
# a path joined onto a run directory by hand: `run_dir / "stage2"`, `Path(run_dir) / ...`, `run / "data"`, or the
# parent of a model's stage folder
BY_HAND = re.compile(r"""(?:\brun_dir\b\)?|\brun\b|\.parent\.parent|parents\[1\])\s*/\s*["']|\bstage_dir\(|curated_paths\(""")


def test_no_module_or_notebook_but_the_contract_spells_a_run_dir_path():
    offenders = []
    for path in sorted((REPO_ROOT / "llavamed_lite").rglob("*.py")):
        if path.name != "runs.py":
            offenders += [f"{path.name}: {m.group(0)}" for m in BY_HAND.finditer(path.read_text())]
    for path in sorted((REPO_ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                offenders += [f"{path.name}: {m.group(0)}" for m in BY_HAND.finditer("".join(cell["source"]))]
    assert not offenders


def test_the_contract_names_every_artifact_and_records_travel_with_their_images(tmp_path):
    run = RunDir(tmp_path)
    assert run.instruct("tiny") == Records(tmp_path / "instruct" / "instruct_train.json", tmp_path / "data")
    assert run.instruct("curated") == Records(tmp_path / "instruct" / "instruct_curated.json", tmp_path / "data" / "pmc")
    assert run.curated_alignment().image_folder == run.curated()["root"]
    assert run.benchmark_train("vqa-rad") == Records(tmp_path / "data" / "vqa_rad_train.json",
                                                     tmp_path / "data" / "vqa_rad_images")
    assert RunDir.of_model(run.model("2")).root == tmp_path.resolve()
    table = artifacts_table()
    assert all(f"`{a.path}`" in table for a in ARTIFACTS.values()) and "written by" in table
    assert table in (REPO_ROOT / "README.md").read_text()  # the README's table is the contract's
    with pytest.raises(MissingInput, match=r"instruct_curated.json is missing: it is made by notebook 03"):
        run.instruct("curated").require("notebook 03")
    looker = RunDir(tmp_path / "elsewhere", create=False)
    _ = looker.world, looker.release
    assert not (tmp_path / "elsewhere").exists()  # readers never create folders


def test_tiny_source_builds_its_inputs_on_demand(tmp_path):
    cfg = load_config("tiny", SMALL)
    one, two, vqa = (stage_inputs(cfg, s, tmp_path) for s in ("1", "2", "vqa"))
    assert one == Records(tmp_path / "data" / "alignment_train.json", tmp_path / "data")
    assert two == RunDir(tmp_path).instruct("tiny") and vqa.path == tmp_path / "data" / "vqa_train.json"
    for records in (one, two, vqa):
        rows = load_records(records.path)
        assert rows and all((records.image_folder / r["image"]).is_file() for r in rows)


def test_tiny_chat_samples_ask_beyond_what_captions_answer_and_carry_their_truth(tmp_path):
    cfg = load_config("tiny", {"data.n_train_figures": 10, "data.n_heldout_figures": 20})
    samples = chat_samples(cfg, tmp_path, stage_inputs(cfg, "2", tmp_path), n=4, turns=2)
    heldout = {q["pair_id"]: q for q in load_records(tmp_path / "data" / "vqa_heldout.json")}
    truth = {r["pair_id"]: r["findings"] for r in read_caption_file(tmp_path / "data" / "captions_heldout.json")}
    assert len(samples) == 4
    for s in samples:
        asked = [q for q in load_records(tmp_path / "data" / "vqa_heldout.json") if q["pair_id"] == s["id"]
                 and q["conversations"][0]["value"].replace("<image>", "").strip() in s["questions"]]
        assert len(s["questions"]) == len(s["answers"]) == len(s["answer_types"]) == 2
        assert {q["question_type"] for q in asked}.isdisjoint(CAPTION_QUESTION_TYPES)
        assert s["findings"] == truth[s["id"]] and s["id"] in heldout
    cfg.data.eval_limit = 6  # quick mode: at most 6 questions, 3 figures of 2
    assert [s["id"] for s in chat_samples(cfg, tmp_path, stage_inputs(cfg, "2", tmp_path), n=4, turns=2)] == [
        s["id"] for s in samples[:3]]


@pytest.mark.parametrize("scale", ["lora", "full"])
def test_gpu_scales_never_fall_back_to_the_tiny_world(tmp_path, scale):
    cfg = load_config(scale, {"data.source": "curated"})
    with pytest.raises(MissingInput, match=r"alignment.json is missing: it is made by notebook 02"):
        stage_inputs(cfg, "1", tmp_path)
    with pytest.raises(MissingInput, match=r"instruct_curated.json is missing: it is made by notebook 03"):
        stage_inputs(cfg, "2", tmp_path)
    with pytest.raises(ValueError, match="data.benchmark"):
        stage_inputs(load_config(scale, {"data.benchmark": "tiny"}), "vqa", tmp_path)
    assert load_config(scale).data.source == "llava-med" and load_config(scale).data.benchmark == "vqa-rad"
    assert not (tmp_path / "data" / "world.json").exists()
    with pytest.raises(ValueError, match="data.source.*'world'"):
        stage_inputs(load_config(scale, {"data.source": "world"}), "1", tmp_path)


def test_llava_med_source_reads_the_release(tmp_path):
    release = write_fake_release(tmp_path / "release", (tmp_path / "release").as_uri())
    cfg = load_config("lora", {"data.release": str(release), "data.max_pairs": 4})
    records = stage_inputs(cfg, "1", tmp_path / "run", progress=False)
    assert records.image_folder == tmp_path / "run" / "data" / "llava_med" / "images"
    rows = load_records(records.path)
    assert 1 <= len(rows) <= 4 and all((records.image_folder / r["image"]).is_file() for r in rows)


def test_vqa_at_gpu_scales_trains_on_the_benchmark_split(tmp_path):
    """Quick mode's data.train_limit takes the split's first questions into a file of their own, so a later run
    without it in the same run dir gets the whole split, not the cut one."""
    first = stage_inputs(load_config("lora", {"data.image_size": 32, "data.train_limit": 24}), "vqa", tmp_path)
    assert first == RunDir(tmp_path).benchmark_train("vqa-rad", 24)
    cfg = load_config("lora", {"data.image_size": 32})
    records = stage_inputs(cfg, "vqa", tmp_path)
    rows = load_records(records.path)
    assert records == RunDir(tmp_path).benchmark_train("vqa-rad") and len(rows) == 1797  # VQA-RAD's train split
    assert (records.image_folder / rows[0]["image"]).is_file()
    assert load_records(first.path) == rows[:24]
    assert apply_quick(load_config("full")).data.train_limit == QUICK_TRAIN["full"]


def test_curated_chain_03_keeps_its_file_and_05_finds_its_images(tmp_path):
    """02 curates the synthetic PMC packages, 03 writes conversations from those captions, and stage 2 on the
    curated source reads exactly that file with the curated images (nothing rebuilds or overwrites it)."""
    run = RunDir(tmp_path)
    result = Curator(tmp_path, seed=0).run(find_sources([DATA_SAMPLES / "pmc_synthetic" / "oa_package"]),
                                           max_articles=6, progress=False)
    assert result.records
    captions = read_caption_file(run.curated()["captions"])
    target = run.instruct("curated")
    write_instruct(target.path, synthesize(captions, make_backend("offline"), progress=False), {"backend": "offline"})
    written = target.path.read_bytes()
    cfg = load_config("tiny", {**SMALL, "data.source": "curated"})
    assert stage_inputs(cfg, "2", tmp_path) == target and target.path.read_bytes() == written
    assert stage_inputs(cfg, "1", tmp_path) == run.curated_alignment()
    for records in (target, run.curated_alignment()):
        rows = load_records(records.path)
        assert rows and all((records.image_folder / r["image"]).is_file() for r in rows)
    assert not (tmp_path / "instruct" / "instruct_train.json").exists()  # the tiny world's file was never made


@pytest.mark.slow
def test_the_curated_chain_trains_both_stages(tmp_path):
    """The curated chain end to end at tiny, a few steps per stage: 02's alignment records train stage 1 and 03's
    conversations train stage 2, each with its own image folder, and nothing of the tiny world is built."""
    from llavamed_lite.train.stages import train_stage

    Curator(tmp_path, seed=0).run(find_sources([DATA_SAMPLES / "pmc_synthetic" / "oa_package"]), max_articles=6,
                                  progress=False)
    target = RunDir(tmp_path).instruct("curated")
    captions = read_caption_file(RunDir(tmp_path).curated()["captions"])
    write_instruct(target.path, synthesize(captions, make_backend("offline"), progress=False), {"backend": "offline"})
    cfg = load_config("tiny", {"data.source": "curated", "stage1.max_steps": 2, "stage2.max_steps": 2,
                               "stage1.batch_size": 4, "stage2.batch_size": 4})
    one = train_stage(cfg, "1", tmp_path, progress=False)
    two = train_stage(cfg, "2", tmp_path, progress=False)
    assert (one.steps, one.n_records) == (2, len(load_records(RunDir(tmp_path).curated()["alignment"])))
    assert (two.steps, two.n_records) == (2, len(load_records(target.path)))
    assert (RunDir(tmp_path).model("2") / "config.json").is_file()
    assert not (tmp_path / "data" / "world.json").exists()
