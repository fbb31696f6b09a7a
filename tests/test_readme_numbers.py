"""Numbers in the README come from the run whose outputs are committed: the notebooks' times are their own papermill
record, and the tiny run's results are the metrics the executed notebooks printed."""

import json
import re

from llavamed_lite.paths import REPO_ROOT
from llavamed_lite.run import committed_seconds, pipeline_notebooks

README = (REPO_ROOT / "README.md").read_text()


def durations() -> dict[str, float]:
    return {p.stem: committed_seconds(p) for p in pipeline_notebooks()}


def test_the_follow_the_notebooks_times_are_the_committed_runs():
    section = README.split("## Follow the notebooks")[1].split("\n## ")[0]
    rows = dict(re.findall(r"^\| `(\d\d_\w+)` \| ([\d,]+) s \|", section, re.MULTILINE))
    seconds = durations()
    assert rows.keys() == seconds.keys()
    assert {k: int(v.replace(",", "")) for k, v in rows.items()} == {k: round(v) for k, v in seconds.items()}
    total = re.search(r"([\d,]+) s in all", section).group(1)
    assert int(total.replace(",", "")) == round(sum(seconds.values()))


def test_the_results_table_is_the_recorded_metrics():
    metrics = json.loads((REPO_ROOT / "notebooks" / "results" / "metrics.json").read_text())
    rows = {  # a phrase of the README row -> the metrics its value cell shows, in order
        "CLIP zero-shot domain accuracy": ["clip_zero_shot_domain_accuracy"],
        "CLIP finding retrieval": ["clip_finding_retrieval_accuracy"],
        "generated captions naming the right domain": ["stage1_caption_domain_accuracy"],
        "stage-2 final loss, full / LoRA": ["stage2_final_loss", "stage2_lora_final_loss"],
        "after stage 2: closed / open recall": ["tiny_stage2_closed_accuracy", "tiny_stage2_open_recall"],
        "closed answers right by meaning, before / after stage 2": ["stage2_chat_closed_by_meaning_before",
                                                                    "stage2_chat_closed_by_meaning_after"],
        "scored by meaning against the figures' findings": ["tiny_stage2_closed_by_meaning", "tiny_closed_by_meaning"],
        "stage 1 only, first 300": ["tiny_stage1_closed_accuracy", "tiny_stage1_closed_accuracy_strict",
                                    "tiny_stage1_open_recall"],
        "after tiny-world VQA fine-tuning": ["tiny_closed_accuracy", "tiny_closed_accuracy_strict", "tiny_open_recall"],
        "VQA-RAD test (451) after CPU fine-tuning": ["vqa_rad_closed_accuracy", "vqa_rad_closed_accuracy_strict",
                                                     "vqa_rad_open_recall"],
        "VQA-RAD test, the stage-2 model zero-shot": ["vqa_rad_zero_shot_closed_accuracy",
                                                      "vqa_rad_zero_shot_open_recall"],
        "SLAKE English test (first 200)": ["slake_zero_shot_closed_accuracy", "slake_zero_shot_closed_accuracy_strict",
                                           "slake_zero_shot_open_recall"],
    }
    section = README.split("## What the tiny run reaches")[1].split("\n## ")[0]
    table = "\n".join(line for line in section.splitlines() if line.startswith("| "))
    for phrase, keys in rows.items():
        line = next(line for line in table.splitlines() if phrase in line)
        value = line.split(" | ")[2]
        digits = 3 if "loss" in phrase else 2
        assert re.findall(r"\d+\.\d+", value) == [f"{metrics[k]:.{digits}f}" for k in keys], phrase
    assert f"{round(sum(durations().values())):,} s of notebooks" in README


def test_the_captions_before_stage_1_are_notebook_04s_printed_figure():
    cells = json.loads((REPO_ROOT / "notebooks" / "04_stage1_alignment.ipynb").read_text())["cells"]
    printed = "".join("".join(out.get("text", "")) for cell in cells for out in cell.get("outputs", []))
    before = re.search(r"domain named correctly: before (\d\.\d\d), after", printed).group(1)
    row = next(line for line in README.splitlines() if "generated captions naming the right domain" in line)
    assert row.split(" | ")[3].startswith(f"{before} before")


def test_the_quick_mode_sizes_are_the_configs():
    from llavamed_lite.config import QUICK_EVAL, QUICK_STEPS, QUICK_TRAIN, QUICK_WORLD

    line = " ".join(README.split("`make test` runs the unit tests")[1].split("(`QUICK_*`")[0].split())
    assert (f"cut to {QUICK_STEPS['tiny']} steps on a {QUICK_WORLD['tiny'][0]}-figure tiny world, benchmark "
            f"evaluations to {QUICK_EVAL['tiny']} questions and benchmark fine-tuning to {QUICK_TRAIN['tiny']}") in line


def test_the_tiny_pipeline_speed_section_is_the_committed_benchmark():
    results = REPO_ROOT / "benchmarks" / "results"
    section = README.split("### Speed of the tiny run")[1].split("\n## ")[0]
    assert (results / "tiny_pipeline.md").read_text() in section
    stages = json.loads((results / "tiny_pipeline.json").read_text())["stages"]
    old = sum(s["old_preset_seconds"] for s in stages.values())
    new = sum(s["preset_seconds"] for s in stages.values())
    floor = sum(s["matmul_floor_seconds"] for s in stages.values())
    prose = " ".join(section.split())
    assert f"about {old / new:.2f}x faster than before" in prose
    assert f"three stages' matrix products alone take {floor:.0f} s" in prose


def test_the_answering_speed_table_is_the_committed_generation_benchmark():
    results = REPO_ROOT / "benchmarks" / "results"
    models = {"stage2": ("stage 2 (sentences", "generation.json"),
              "vqa": ("VQA fine-tuned (short answers", "generation_vqa_model.json")}
    float32 = {}
    for model, (phrase, name) in models.items():
        line = next(line for line in README.splitlines() if line.startswith(f"| {phrase}"))
        cells = [c.strip() for c in line.strip("|").split("|")][1:]
        runs = {r["dtype"]: r for r in json.loads((results / name).read_text())["runs"]}
        for cell, dtype in zip(cells, ("float32", "bfloat16")):
            r = runs[dtype]
            assert re.findall(r"[\d.]+(?=[ x:])", cell) == [f"{r['batched']['questions_per_s']:.0f}",
                                                           f"{r['one_at_a_time']['questions_per_s']:.0f}",
                                                           f"{r['speedup']:.1f}"], (phrase, dtype)
            assert r["same_answers"]
        float32[model] = runs["float32"]
    # what the 8x aim leaves 16 questions in float32, and where the batch's time goes
    allowed = {m: 16 / (8 * r["one_at_a_time"]["questions_per_s"]) * 1e3 for m, r in float32.items()}
    phases = {m: r["batched"]["phases"] for m, r in float32.items()}
    prose = " ".join(README.split())
    assert (f"8x allows the VQA model {allowed['vqa']:.0f} ms per 16 questions, and the pass over the questions alone "
            f"takes {phases['vqa']['questions_ms']:.0f} of them; it allows the stage-2 model {allowed['stage2']:.0f} "
            f"ms, and its {phases['stage2']['decode_steps_per_batch']:.0f} decoding steps take "
            f"{phases['stage2']['decode_ms']:.0f}") in prose
