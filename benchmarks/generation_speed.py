"""Questions per second of batched greedy generation (batch 16) against one question at a time with
`model.generate`, as LLaVA-Med's answer scripts do, on the tiny model on CPU, in one run. Writes
benchmarks/results/generation.json (or --out).

Three ways to answer the tiny world's held-out questions, all greedy, in the same dtype (the one-at-a-time ways take
an evenly spread sample of the batched ones, so that both see the same mix of question types and answer lengths):
- `batched`: our `answer_questions`, up to 16 questions at a time (prefix caching per image, continuous batching;
  see llavamed_lite/eval/generate.py);
- `one_at_a_time`: LLaVA-Med's way, `model.generate` on one question (the baseline of `speedup`);
- `ours_one_at_a_time`: `answer_questions` with batch size 1, to tell what batching gives from what the loop gives.
`same_answers` checks that batching changed no answer against the baseline. `phases` says where the time of 16
questions goes (the passes over images and the prompt before the question, the passes over the questions, the
decoding steps, the rest); a plot of both goes next to the results file (.png).

Why dtype matters on a CPU: one question at a time is bound by per-call overhead (a few hundred microseconds of
Python per forward pass, whatever the dtype), while the batched path is bound by matrix products: the pass over 16
questions multiplies ~250 token rows by every weight matrix. `matmul_gflops` is this CPU's speed at the LM's
shapes, measured in the run: on 2 cores with AVX512-BF16, bfloat16 products of 256 rows run ~4x faster than
float32 ones, so bfloat16 speeds up the batched path and leaves the one-at-a-time path where it was.

The model: `--model DIR`, a saved model (e.g. runs/tiny/stage2/model, which writes real answers); by default the
committed pretrained tiny towers (data_samples/tiny-foundation) composed into a Llava with a random projector;
without them, random towers of the tiny preset's sizes. The questions: the tiny world's held-out VQA (several
questions per image, as in VQA-RAD and SLAKE).

    python benchmarks/generation_speed.py [--model DIR] [--questions 448] [--single 64] [--max-new-tokens 16 64]
                                          [--dtype float32 bfloat16] [--threads N]
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

from machine import cpu_name, fast_bf16, matmul_gflops

from llavamed_lite.eval.generate import answer_questions, item_image
from llavamed_lite.generation import generate, prompt, with_image
from llavamed_lite.eval.vqa import load_benchmark
from llavamed_lite.io import atomic_write_json
from llavamed_lite.model.compose import compose_llava
from llavamed_lite.paths import TINY_FOUNDATION
from llavamed_lite.synth.world import build_tiny_world

RESULTS = Path(__file__).resolve().parent / "results" / "generation.json"


def tiny_model(workdir: Path, model_dir: str | None = None, dtype: str = "float32"):
    torch.manual_seed(0)
    if model_dir is not None:  # a trained model writes real answers (and stops), unlike a random projector
        from llavamed_lite.model.compose import load_llava

        return load_llava(model_dir, dtype=dtype, device=torch.device("cpu")), f"saved model {model_dir}"
    if (TINY_FOUNDATION / "clip" / "config.json").exists() and (TINY_FOUNDATION / "lm" / "config.json").exists():
        return compose_llava(str(TINY_FOUNDATION / "clip"), str(TINY_FOUNDATION / "lm"), dtype=dtype), "pretrained tiny towers"
    from llavamed_lite.model.mini import make_mini

    towers = make_mini(workdir / "towers", image_size=64, patch_size=16, vision_width=128, lm_width=256)
    return compose_llava(*towers, dtype=dtype), "random towers (data_samples/tiny-foundation missing)"


def generate_one(model, processor, item, max_new_tokens: int) -> str:
    """LLaVA-Med's way: `model.generate` on one question (`llavamed_lite.generation.generate`)."""
    return generate(model, processor, [prompt(processor, with_image(item.question))], [item_image(item)],
                    max_new_tokens)[0]


def one_at_a_time(model, processor, items, batch_size: int, max_new_tokens: int) -> list[str]:
    return [generate_one(model, processor, it, max_new_tokens) for it in items]


def questions_per_second(answer, model, processor, items, batch_size: int, max_new_tokens: int):
    start = time.perf_counter()
    texts = answer(model, processor, items, batch_size, max_new_tokens)
    return len(items) / (time.perf_counter() - start), texts


def phases(model, processor, items, batch_size: int, max_new_tokens: int, repeats: int) -> dict:
    """Where the time of 16 questions (a batch's worth) goes, in ms: the model calls of `answer_questions` (the passes
    over images and the prompt before the question, the passes over the questions, the decoding steps) and the rest
    (reading images, the processor, the loop). Timed by wrapping this model's forward, after the timed runs; the
    fastest of `repeats`."""
    return min((one_phase_run(model, processor, items, batch_size, max_new_tokens) for _ in range(repeats)),
               key=lambda run: run["ms_per_batch"])


def one_phase_run(model, processor, items, batch_size: int, max_new_tokens: int) -> dict:
    calls = []

    def timed(*args, **kwargs):
        start = time.perf_counter()
        out = forward(*args, **kwargs)
        kind = "prefix" if kwargs.get("pixel_values") is not None else "decode" if kwargs["input_ids"].shape[1] == 1 \
            else "questions"
        calls.append((kind, time.perf_counter() - start))
        return out

    forward, model.forward = model.forward, timed
    try:
        start = time.perf_counter()
        answer_questions(model, processor, items, batch_size, max_new_tokens)
        total = time.perf_counter() - start
    finally:
        del model.forward  # the instance attribute goes; the class's forward is back
    batches = len(items) / batch_size
    ms = {kind: round(sum(t for k, t in calls if k == kind) / batches * 1e3, 2) for kind in ("prefix", "questions", "decode")}
    return {"ms_per_batch": round(total / batches * 1e3, 2), **{f"{k}_ms": v for k, v in ms.items()},
            "decode_steps_per_batch": round(sum(k == "decode" for k, _ in calls) / batches, 1),
            "rest_ms": round(total / batches * 1e3 - sum(ms.values()), 2)}


def best_of(repeats: int, model, processor, items, single_items, batch_size: int, max_new_tokens: int) -> dict:
    """The three ways interleaved, best of `repeats` each: other work on a shared CPU slows runs at random, and the
    best run is the one least disturbed."""
    ways = {"batched": (answer_questions, items, batch_size), "one_at_a_time": (one_at_a_time, single_items, 1),
            "ours_one_at_a_time": (answer_questions, single_items, 1)}
    answer_questions(model, processor, items[:batch_size], batch_size, max_new_tokens)  # warm-up
    generate_one(model, processor, items[0], max_new_tokens)
    qps, texts = {k: [] for k in ways}, {}
    for _ in range(repeats):
        for name, (answer, its, size) in ways.items():
            rate, texts[name] = questions_per_second(answer, model, processor, its, size, max_new_tokens)
            qps[name].append(rate)
    return {name: {"batch_size": size, "questions": len(its), "questions_per_s": round(max(qps[name]), 2),
                   "answers": texts[name]} for name, (_, its, size) in ways.items()}


def plot(result: dict, path: Path) -> None:
    """Questions per second of the three ways per run against the 8x aim, and where the time of 16 questions goes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    labels = [f"{r['dtype']}\n{r['max_new_tokens']} new tokens" for r in runs]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    for k, (way, name) in enumerate((("one_at_a_time", "model.generate, one question (LLaVA-Med)"),
                                     ("ours_one_at_a_time", "ours, one question"), ("batched", "ours, batch 16"))):
        ax.bar([i + 0.27 * (k - 1) for i in range(len(runs))], [r[way]["questions_per_s"] for r in runs], 0.27, label=name)
    for i, r in enumerate(runs):
        ax.annotate(f"{r['speedup']}x", (i + 0.27, r["batched"]["questions_per_s"]), ha="center", va="bottom")
        ax.hlines(8 * r["one_at_a_time"]["questions_per_s"], i - 0.4, i + 0.4, colors="gray", linestyles="dashed",
                  label="8x the baseline (the aim)" if i == 0 else None)
    top = max(max(r["batched"]["questions_per_s"], 8 * r["one_at_a_time"]["questions_per_s"]) for r in runs)
    ax.set(xticks=range(len(runs)), xticklabels=labels, ylabel="questions / s", title=result["model"], ylim=(0, 1.5 * top))
    ax.legend(fontsize=8, loc="upper left")
    bottom = [0.0] * len(runs)
    for part, name in (("prefix_ms", "images and prompt before the question"), ("questions_ms", "questions"),
                       ("decode_ms", "decoding steps"), ("rest_ms", "rest (processor, loop)")):
        values = [r["batched"]["phases"][part] for r in runs]
        bx.bar(range(len(runs)), values, 0.5, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, values)]
    bx.set(xticks=range(len(runs)), xticklabels=labels, ylabel="ms per 16 questions", title="where the time goes")
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=448,
                        help="questions answered in batches of 16 (default: about VQA-RAD's 451 test questions)")
    parser.add_argument("--single", type=int, default=64,
                        help="questions answered one at a time: that many of them, spread evenly (the same mix)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, nargs="+", default=[16, 64],
                        help="answer lengths to measure (a random model always writes this many tokens)")
    parser.add_argument("--dtype", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"],
                        help="weights' dtype for both paths (bfloat16 is fast on CPUs with AVX512-BF16 or AMX)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default {RESULTS.name})")
    parser.add_argument("--model", default=None, help="a saved model folder, e.g. runs/tiny/stage2/model (default: "
                        "the committed pretrained towers with a random projector)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    runs = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build_tiny_world(tmp / "world", n_train=1, n_heldout=args.questions // 4 + 5)
        items = load_benchmark("tiny", "test", source=tmp / "world")[:args.questions]
        picked = list(range(0, len(items), max(len(items) // args.single, 1)))[:args.single]
        for dtype in args.dtype:
            (model, processor), which = tiny_model(tmp, args.model, dtype)
            model.eval()
            text = model.config.text_config
            for max_new_tokens in args.max_new_tokens:
                ways = best_of(args.repeats, model, processor, items, [items[i] for i in picked], args.batch_size,
                               max_new_tokens)
                answers = {name: way.pop("answers") for name, way in ways.items()}
                ways["batched"]["phases"] = phases(model, processor, items, args.batch_size, max_new_tokens,
                                                    args.repeats)
                base = ways["one_at_a_time"]["questions_per_s"]
                runs.append({
                    "dtype": dtype, "max_new_tokens": max_new_tokens, **ways,
                    "matmul_gflops": {f"{rows} rows": matmul_gflops(rows, text.hidden_size, text.intermediate_size,
                                                                    model.dtype) for rows in (1, 16, 256)},
                    "speedup": round(ways["batched"]["questions_per_s"] / base, 2),
                    "speedup_ours_one_at_a_time": round(ways["ours_one_at_a_time"]["questions_per_s"] / base, 2),
                    # greedy decoding: batching and the loop change no answer
                    "same_answers": [answers["batched"][i] for i in picked] == answers["one_at_a_time"]
                    == answers["ours_one_at_a_time"],
                })
    result = {
        "model": which, "parameters": sum(p.numel() for p in model.parameters()), "device": "cpu",
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "cpu": cpu_name(), "fast_bf16": fast_bf16(), "torch": torch.__version__, "repeats": args.repeats,
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # before, after: other work on the CPU
        "runs": runs,
    }
    atomic_write_json(args.out, result)
    plot(result, args.out.with_suffix(".png"))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
