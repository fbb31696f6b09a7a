"""The tiny pipeline's training stages timed with and without each speed lever, in one run on this machine.

    python benchmarks/tiny_pipeline.py              # ~8 minutes on 2 cores
    python benchmarks/tiny_pipeline.py --steps 10   # a quicker look

Every case trains one stage for a few steps through `train_stage`, the path `make demo` takes, on a small tiny world,
and measures samples/s after the first step: training examples per second, where an example is what the stage's
data counts (a caption in stage 1, a conversation in stage 2, a question in VQA fine-tuning; a record with an
image's questions joined, or a row packing several, counts each question). The levers:
- cache_vision_features: the frozen vision tower runs once per image before training, not at every step;
- group_by_length: batches of records of similar length, so less of each batch is padding;
- join_questions: an image's questions in one conversation (VQA), so the image and the prompt are encoded once;
- pack_questions: up to 4 of an image's questions in one row that encodes the image once, each question masked from
  the others (VQA), 5 rows a step: about the 16 questions a step of one question per record trains;
- bf16: autocast to bfloat16. It pays only on CPUs with bfloat16 matrix units (AVX512-BF16, AMX); elsewhere
  PyTorch emulates it, many times slower (this benchmark shows which kind of CPU it ran on).
`today` is the path before them: float32, random batches, one question per record. A stage's time is its examples
(the preset's steps x batch, or epochs x records) divided by the measured samples/s, for the old preset and the
current one.

The floor: after the timed steps a few more run under `torch.utils.flop_counter`, which counts the FLOPs of the
weight products (forward and backward; attention's own products are not counted, so the floor is a lower bound).
A stage's matmul floor is the preset's examples x FLOPs a sample / the rate at which this CPU multiplies the LM's
matrices (`matmul_gflops`, measured in the run): the time the stage would take if everything else in a step (the
elementwise work, attention, the optimiser, Python) cost nothing.
Results: benchmarks/results/tiny_pipeline.{json,md,png}.
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from transformers import AutoConfig, TrainerCallback  # noqa: E402

from machine import cpu_name, fast_bf16, matmul_gflops  # noqa: E402
from llavamed_lite.config import load_config  # noqa: E402
from llavamed_lite.paths import TINY_FOUNDATION  # noqa: E402
from llavamed_lite.runs import RunDir  # noqa: E402
from llavamed_lite.sources import ensure_alignment, ensure_instruct, ensure_world  # noqa: E402
from llavamed_lite.train.stages import stage_config, train_stage  # noqa: E402

RESULTS = Path(__file__).parent / "results"
# The tiny preset before the levers: (stage, examples trained) = steps x batch, or epochs x the world's questions.
OLD_PRESET_EXAMPLES = {"1": 280 * 16, "2": 1000 * 16, "vqa": 4.5 * 22174}
COUNTED_STEPS = 15  # steps whose matrix-product FLOPs are counted, after the timed ones (emulated bf16: 2)
MATMUL_ROWS = 16 * 144  # token rows of a stage-2 step: the rate of the LM's products at a training step's size
WORLD_QUESTIONS = 22174  # questions in the tiny world's VQA training split (3,000 figures)
CASES = [  # (stage, case, overrides on top of `today`)
    ("1", "today", {}),
    ("1", "cached features", {"cache_vision_features": True}),
    ("1", "+ group_by_length", {"cache_vision_features": True, "group_by_length": True}),
    ("1", "+ bf16", {"cache_vision_features": True, "group_by_length": True, "bf16": True}),
    ("2", "today", {}),
    ("2", "cached features", {"cache_vision_features": True}),
    ("2", "+ group_by_length", {"cache_vision_features": True, "group_by_length": True}),
    ("2", "+ bf16", {"cache_vision_features": True, "group_by_length": True, "bf16": True}),
    ("vqa", "today", {}),
    ("vqa", "cached features", {"cache_vision_features": True}),
    ("vqa", "+ group_by_length", {"cache_vision_features": True, "group_by_length": True}),
    ("vqa", "+ pack_questions", {"cache_vision_features": True, "pack_questions": 4, "batch_size": 5}),
    ("vqa", "+ join_questions", {"cache_vision_features": True, "group_by_length": True, "join_questions": True}),
    ("vqa", "+ bf16", {"cache_vision_features": True, "group_by_length": True, "join_questions": True, "bf16": True}),
]
# heldout_every 0: the preset's held-out evaluations would pause the clocked steps
TODAY = {"cache_vision_features": False, "group_by_length": False, "join_questions": False, "pack_questions": 0,
         "batch_size": 16, "bf16": False, "heldout_every": 0}


class StepClock(TrainerCallback):
    """Wall-clock time at the end of every timed step, then the matrix-product FLOPs of a few steps after them.

    The first (warm-up) step is left out of the time; counting FLOPs slows a step, so it runs only after the clock
    has stopped."""

    def __init__(self, timed_steps: int):
        self.times, self.flops, self.counted_steps = [], 0, 0
        self.first_counted = timed_steps + 1  # the warm-up step, then the timed ones
        self.counter = None

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step >= self.first_counted:
            self.counter = FlopCounterMode(display=False)
            self.counter.__enter__()

    def on_step_end(self, args, state, control, **kwargs):
        if self.counter is None:
            self.times.append(time.perf_counter())
            return
        self.counter.__exit__(None, None, None)
        self.flops += self.counter.get_total_flops()
        self.counted_steps += 1
        self.counter = None


def examples_per_row(records_file: Path, run_dir: Path, stage: str, settings: dict) -> float:
    """How many examples a training row holds: a joined VQA record holds all its image's questions, a packed row
    several (the stage's summary counts its records and rows)."""
    if stage != "vqa":
        return 1.0
    if settings["join_questions"]:
        records = json.loads(records_file.read_text())
        return len(records) / len({r["image"] for r in records})
    summary = json.loads((RunDir(run_dir).stage(stage) / "summary.json").read_text())
    return summary["records"] / summary["rows"]


def run_case(stage: str, case: str, overrides: dict, steps: int, run_dir: Path, records: Path, folder: Path) -> dict:
    settings = {**TODAY, **overrides}
    slow = settings["bf16"] and not fast_bf16()  # emulated bf16: a few steps tell enough
    timed_steps, counted_steps = (3, 2) if slow else (steps, COUNTED_STEPS)
    cfg = load_config("tiny", {f"{stage_key(stage)}.{k}": v for k, v in settings.items()}
                      | {f"{stage_key(stage)}.max_steps": timed_steps + 1 + counted_steps,
                         f"{stage_key(stage)}.save_steps": 10_000})
    clock = StepClock(timed_steps)
    train_stage(cfg, stage, run_dir, records=records, image_folder=folder, callbacks=[clock], progress=False)
    batch = stage_config(cfg, stage).batch_size
    per_row = examples_per_row(records, run_dir, stage, settings)
    seconds = clock.times[-1] - clock.times[0]
    rate = timed_steps * batch * per_row / seconds
    flops_per_example = clock.flops / (clock.counted_steps * batch * per_row)
    print(f"stage {stage:3s} {case:16s} {rate:8.1f} samples/s ({timed_steps} steps in {seconds:.1f} s), "
          f"{flops_per_example / 1e6:.0f} MFLOP a sample")
    return {"stage": stage, "case": case, "settings": settings, "steps": timed_steps, "seconds": seconds,
            "samples_per_s": rate, "flops_per_example": flops_per_example}


def stage_key(stage: str) -> str:
    return {"1": "stage1", "2": "stage2", "vqa": "vqa"}[stage]


def preset_examples(stage: str) -> float:
    """Examples the current tiny preset trains in a stage."""
    tc = stage_config(load_config("tiny"), stage)
    if tc.max_steps > 0:
        return tc.max_steps * tc.batch_size * tc.grad_accum
    return tc.epochs * WORLD_QUESTIONS


def summarise(rows: list[dict], gflops: float) -> dict:
    """Per stage: today's rate, the preset's rate (the levers the preset turns on), the stage's time both ways, and
    its floor: the preset's matrix-product FLOPs at the rate this CPU multiplies the LM's matrices (`gflops`), the
    time the stage would take if everything else in a step cost nothing."""
    preset = load_config("tiny")
    out = {}
    for stage in ("1", "2", "vqa"):
        tc = stage_config(preset, stage)
        on = {k: getattr(tc, k) for k in TODAY if k != "heldout_every"}  # the curve is off in every case
        by_case = {r["case"]: r for r in rows if r["stage"] == stage}
        chosen = next((r for r in by_case.values() if r["settings"] == {**TODAY, **on}), None)
        today = by_case["today"]
        old_s = OLD_PRESET_EXAMPLES[stage] / today["samples_per_s"]
        new_s = preset_examples(stage) / chosen["samples_per_s"] if chosen else None
        out[stage] = {"today_samples_per_s": today["samples_per_s"], "preset_case": chosen and chosen["case"],
                      "preset_samples_per_s": chosen and chosen["samples_per_s"],
                      "speedup_per_sample": chosen and chosen["samples_per_s"] / today["samples_per_s"],
                      "old_preset_seconds": old_s, "preset_seconds": new_s,
                      "matmul_floor_seconds": chosen and preset_examples(stage) * chosen["flops_per_example"]
                      / (gflops * 1e9)}
    return out


def write_table(rows: list[dict], summary: dict, machine: dict) -> str:
    lines = [f"Tiny pipeline training, {machine['cpu']} ({machine['threads']} threads, bf16 in hardware: "
             f"{machine['fast_bf16']}; float32 LM products at {machine['matmul_gflops']:.0f} GFLOP/s).", "",
             "| stage | case | samples/s | x today | MFLOP a sample |", "| --- | --- | ---: | ---: | ---: |"]
    for r in rows:
        today = next(t for t in rows if t["stage"] == r["stage"] and t["case"] == "today")
        lines.append(f"| {r['stage']} | {r['case']} | {r['samples_per_s']:.1f} | "
                     f"{r['samples_per_s'] / today['samples_per_s']:.2f} | {r['flops_per_example'] / 1e6:.0f} |")
    lines += ["", "| stage | old preset (s) | current preset (s) | levers on | ratio | matmul floor (s) |",
              "| --- | ---: | ---: | --- | ---: | ---: |"]
    total_old = total_new = total_floor = 0.0
    for stage, s in summary.items():
        total_old += s["old_preset_seconds"]
        total_new += s["preset_seconds"] or 0.0
        total_floor += s["matmul_floor_seconds"] or 0.0
        lines.append(f"| {stage} | {s['old_preset_seconds']:.0f} | {s['preset_seconds']:.0f} | {s['preset_case']} | "
                     f"{s['old_preset_seconds'] / s['preset_seconds']:.2f} | {s['matmul_floor_seconds']:.0f} |")
    lines.append(f"| all | {total_old:.0f} | {total_new:.0f} | | {total_old / total_new:.2f} | {total_floor:.0f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], gflops: float, path: Path) -> None:
    """Samples/s per case, and behind each bar the rate its weight products alone would allow (its matmul ceiling; not
    drawn for bf16, whose products run at another rate)."""
    stages = ("1", "2", "vqa")
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, stage in zip(axes, stages):
        mine = [r for r in rows if r["stage"] == stage]
        cases = [r["case"] for r in mine]
        ceilings = [0 if r["settings"]["bf16"] else gflops * 1e9 / r["flops_per_example"] for r in mine]
        ax.barh(cases, ceilings, color="#c9d3e6", label="matrix products alone")
        ax.barh(cases, [r["samples_per_s"] for r in mine], height=0.5, color="#4c72b0", label="measured")
        ax.invert_yaxis()
        ax.set_title(f"stage {stage}")
        ax.set_xlabel("samples / s (higher is better)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"Tiny pipeline: training throughput per speed lever (2 CPU cores, matrix products at {gflops:.0f} "
                 "GFLOP/s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per case (after one warm-up step)")
    parser.add_argument("--figures", type=int, default=600, help="training figures in the benchmark's tiny world")
    args = parser.parse_args()
    torch.manual_seed(0)
    run_dir = Path(tempfile.mkdtemp(prefix="tiny_pipeline_"))
    cfg = load_config("tiny", {"data.n_train_figures": args.figures, "data.n_heldout_figures": 20,
                               "data.n_articles": 2})
    world = ensure_world(cfg, run_dir)
    inputs = {"1": ensure_alignment(cfg, run_dir).path, "2": ensure_instruct(cfg, run_dir).path,
              "vqa": world["vqa_train"]}
    rows = [run_case(stage, case, overrides, args.steps, run_dir, Path(inputs[stage]), world["root"])
            for stage, case, overrides in CASES]
    lm = AutoConfig.from_pretrained(TINY_FOUNDATION / "lm")
    machine = {"cpu": cpu_name(), "threads": torch.get_num_threads(), "fast_bf16": fast_bf16(),
               "torch": torch.__version__,
               "matmul_gflops": matmul_gflops(MATMUL_ROWS, lm.hidden_size, lm.intermediate_size)}
    summary = summarise(rows, machine["matmul_gflops"])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tiny_pipeline.json").write_text(json.dumps({"machine": machine, "cases": rows, "stages": summary},
                                                           indent=1))
    table = write_table(rows, summary, machine)
    (RESULTS / "tiny_pipeline.md").write_text(table)
    plot(rows, machine["matmul_gflops"], RESULTS / "tiny_pipeline.png")
    print(table)


if __name__ == "__main__":
    main()
