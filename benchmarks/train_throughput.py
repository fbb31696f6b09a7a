"""Training throughput: our stage-2 and QLoRA steps against stock transformers / peft / bitsandbytes, in one run.

    python benchmarks/train_throughput.py --shape v1.5 --device cuda   # LLaVA-Med v1.5 shape, random bf16, one GPU
    python benchmarks/train_throughput.py --shape mini --device cpu    # the same four cases, miniature towers
    python benchmarks/train_throughput.py                              # tiny shape on the CPU: stages 1 and 2, MFU

`v1.5` and `mini` time four cases on one batch (v1.5: 8 x 1,024 tokens, 576 image + 448 text; mini: 2 x 640) of
random ids and pixels, every case starting from the same random checkpoint saved to disk (v1.5: CLIP ViT-L/14-336 +
Mistral-7B, mlp2x_gelu projector, bf16; mini: make_mini's 2-layer towers at 336 px), each loading it its own way:
- stock stage 2: `LlavaForConditionalGeneration.from_pretrained` in bf16, vision tower frozen, everything else
  trainable, `gradient_checkpointing_enable()`, a plain loop of forward, backward and `torch.optim.AdamW` step;
- ours stage 2: the `full` preset's stage 2 as `train_stage` runs it (`stage_model`: the saved model loaded by
  `start_model`, frozen for stage 2, fp32 master weights for what trains; `stage_trainer`: the Trainer with the
  preset's bf16 autocast, tf32, checkpointing and optimiser), `trainer.train()` on the same batch;
- stock QLoRA: bitsandbytes nf4 with double quantisation (vision tower, projector and head skipped), peft's
  `prepare_model_for_kbit_training(use_gradient_checkpointing=True)`, LoRA r 64 / alpha 128 / dropout 0.05 on the
  LM's 7 projections, the projector in `modules_to_save`, AdamW, the loop under bf16 autocast;
- ours QLoRA: the `lora` preset's stage 2 the same way as ours stage 2 (its 4-bit loading, `add_lora`, checkpointing
  and optimiser), with LoRA rank 64 / alpha 128 for the comparison.
A step is one batch through forward, backward and the optimiser (gradient accumulation 1 in every case); the first
`--warmup` steps are left out. Each row has samples/s, tokens/s, peak GB (cuda) and, for ours, `vs_stock`: its
samples/s (and peak memory) over the stock row of its kind. The aims (issue 15): ours >= 1.3x stock stage 2, and
>= 1.5x stock QLoRA at the same memory. QLoRA cases are skipped, with the reason, where bitsandbytes does not import.

`tiny` times one training step per stage on the tiny preset's towers: samples/s, tokens/s and model-FLOPs utilisation
(MFU): model FLOPs count the work the step must do whatever the implementation: the vision tower's forward (2N per
image token, no gradient), the LM's forward and backward (6N per token when its weights train, 4N when only activation
gradients flow through it: stage 1 and LoRA), the projector's 6N per image token. MFU = achieved model FLOP/s / a
measured matmul ceiling on the same device (fp32 on the CPU, bf16 on a GPU).
Results go to benchmarks/results/train_throughput.json (one entry per shape and device) and, for the comparisons, a
table in train_throughput.md beside it.
"""

import argparse
import gc
import json
import os
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import LlavaForConditionalGeneration, TrainerCallback, default_data_collator  # noqa: E402

from machine import cpu_name  # noqa: E402
from llavamed_lite.config import load_config  # noqa: E402
from llavamed_lite.model.compose import compose_llava, llava_config, quiet_transformers  # noqa: E402
from llavamed_lite.model.freeze import freeze_for_stage  # noqa: E402
from llavamed_lite.model.lora import add_lora  # noqa: E402
from llavamed_lite.model.mini import make_mini  # noqa: E402
from llavamed_lite.model.shapes import KNOWN_LM, KNOWN_VISION  # noqa: E402
from llavamed_lite.paths import TINY_FOUNDATION  # noqa: E402
from llavamed_lite.runs import RunDir  # noqa: E402
from llavamed_lite.train.stages import stage_model, stage_trainer  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "train_throughput.json"
# tiny: (stage, batch, tokens per sample, gradient checkpointing)
CASES = {"tiny": [("1", 16, 64, False), ("2-full", 16, 160, False), ("2-lora", 16, 160, False)]}
# stock against ours: (batch, tokens per sample = 576 image tokens + text)
COMPARE = {"mini": (1, 640), "v1.5": (8, 1024)}
SHAPES = ("tiny", *COMPARE)
# what a stock QLoRA user writes: LoRA on the LM's 7 projections (CLIP's attention has q/k/v_proj too), the vision
# tower, projector and head left unquantised
STOCK_LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"
STOCK_SKIP_4BIT = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]
LORA_RANK, LORA_ALPHA = 64, 128


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_ceiling(device: str) -> float:
    """FLOP/s of a large square matmul: fp32 on the CPU, bf16 on a GPU."""
    n, dtype = (8192, torch.bfloat16) if device == "cuda" else (1024, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    reps, start = 10, time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - start)


def tiny_model():
    """The tiny preset's towers when they are committed, else random towers of the same shape."""
    vision, lm = TINY_FOUNDATION / "clip", TINY_FOUNDATION / "lm"
    if not (vision / "config.json").exists():
        vision, lm = make_mini(tempfile.mkdtemp(), image_size=64, patch_size=16, vision_width=128, lm_width=256)
    model, processor = compose_llava(str(vision), str(lm))
    return model, processor.tokenizer.pad_token_id


def v15_model(device: str):
    """CLIP ViT-L/14-336 + Mistral-7B + mlp2x_gelu projector, random weights in bf16 on the device."""
    text = KNOWN_LM["mistralai/Mistral-7B-Instruct-v0.2"]()
    text.vocab_size += 1  # <image>
    config = llava_config(KNOWN_VISION["openai/clip-vit-large-patch14-336"](), text, text.vocab_size - 1, "mlp2x_gelu")
    config._attn_implementation = "sdpa"
    with torch.device(device):
        model = LlavaForConditionalGeneration(config).to(torch.bfloat16)
    return model, 0


def parameters(model) -> dict[str, int]:
    counts = {"vision": 0, "projector": 0, "lm": 0}
    for name, p in model.named_parameters():
        n = p.numel() * (2 if p.__class__.__name__ == "Params4bit" else 1)
        if "vision_tower" in name:
            counts["vision"] += n
        elif "multi_modal_projector" in name and "modules_to_save" not in name:
            counts["projector"] += n
        elif "embed_tokens" not in name and "lora_" not in name and "multi_modal_projector" not in name:
            counts["lm"] += n  # decoder layers + head: the LM's per-token matmul weights
    return counts


def model_flops_per_sample(counts: dict, config, tokens: int, stage: str) -> float:
    patches = config.image_seq_length + 1
    lm_factor = 6 if stage == "2-full" else 4
    return (2 * counts["vision"] * patches + 6 * counts["projector"] * config.image_seq_length
            + lm_factor * counts["lm"] * tokens)


def make_batch(config, batch: int, tokens: int, device: str, dtype) -> dict:
    n_image, vocab = config.image_seq_length, config.text_config.vocab_size
    input_ids = torch.randint(4, vocab - 1, (batch, tokens), device=device)  # (B, T); ids 0-3 and the last: special
    input_ids[:, 1:1 + n_image] = config.image_token_id
    labels = input_ids.clone()
    labels[:, :1 + n_image] = -100
    side = config.vision_config.image_size
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels,
            "pixel_values": torch.randn(batch, 3, side, side, device=device, dtype=dtype)}


def run_case(build, stage: str, batch: int, tokens: int, checkpointing: bool, device: str, steps: int) -> dict:
    model, _ = build()
    model.to(device)
    if stage == "2-lora":
        freeze_for_stage(model, "1")
        model = add_lora(model, r=64 if device == "cuda" else 8, alpha=128 if device == "cuda" else 16, dropout=0.0)
    else:
        freeze_for_stage(model, "1" if stage == "1" else "2")
    config = model.config
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    dtype = next(model.parameters()).dtype
    data = make_batch(config, batch, tokens, device, dtype)

    def step():
        loss = model(**data).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    seconds = (time.perf_counter() - start) / steps
    counts = parameters(model)
    flops = model_flops_per_sample(counts, config, tokens, stage) * batch
    row = {"stage": stage, "batch": batch, "tokens_per_sample": tokens, "gradient_checkpointing": checkpointing,
           "trainable_parameters": sum(p.numel() for p in trainable), "step_seconds": seconds,
           "samples_per_s": batch / seconds, "tokens_per_s": batch * tokens / seconds,
           "model_tflops_per_s": flops / seconds / 1e12}
    if device == "cuda":
        row["peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
    del model, optimizer, data
    if device == "cuda":
        torch.cuda.empty_cache()
    return row


def write_checkpoint(run_dir: Path, shape: str, device: str) -> Path:
    """A random model saved where stage 2 starts from (run_dir/stage1/model), with a processor: every case loads it
    the way its path loads a model. The processor is the miniature's at both shapes: the batch is random ids, its
    tokenizer only has to load."""
    vision, lm = make_mini(run_dir / "mini")
    with quiet_transformers():
        model, processor = compose_llava(vision, lm, dtype="bfloat16")
    if shape == "v1.5":
        model, _ = v15_model(device)
    folder = RunDir(run_dir).model("1")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    del model
    free_memory(device)
    return folder


def free_memory(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


class RepeatedBatch(torch.utils.data.Dataset):
    """The benchmark batch sample by sample, `times` over: the Trainer's dataloader batches it again."""

    def __init__(self, batch: dict, times: int):
        self.batch, self.size, self.times = batch, len(batch["input_ids"]), times

    def __len__(self) -> int:
        return self.size * self.times

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(i)  # the end of iteration for `for item in dataset` (length grouping reads it so)
        return {key: value[i % self.size] for key, value in self.batch.items()}


class StepClock(TrainerCallback):
    """Wall-clock time at the end of every Trainer step (after the device has finished it), the logged losses, and
    the peak memory from the start of training."""

    def __init__(self, device: str):
        self.device, self.times, self.losses = device, [], []

    def on_train_begin(self, args, state, control, **kwargs):
        reset_peak(self.device)

    def on_step_end(self, args, state, control, **kwargs):
        sync(self.device)
        self.times.append(time.perf_counter())

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(logs["loss"])


def stock_loop(model, optimizer, batch: dict, device: str, warmup: int, steps: int, autocast: bool) -> StepClock:
    """A plain training loop: forward, backward, optimiser step, zero_grad; timed like the Trainer's steps."""
    clock = StepClock(device)
    batch = {key: value.to(device) for key, value in batch.items()}
    reset_peak(device)
    for _ in range(warmup + steps):
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        clock.losses.append(loss.item())
        clock.on_step_end(None, None, None)
    return clock


def device_map(device: str) -> dict:
    return {"": "cuda:0" if device == "cuda" else "cpu"}


def stock_stage2(run_dir: Path, batch: dict, device: str, warmup: int, steps: int):
    """Stage 2 as stock transformers gives it: bf16 weights, gradients and AdamW state, checkpointing on."""
    model = LlavaForConditionalGeneration.from_pretrained(RunDir(run_dir).model("1"), dtype=torch.bfloat16,
                                                          device_map=device_map(device))
    model.model.vision_tower.requires_grad_(False)
    model.gradient_checkpointing_enable()
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-5)
    clock = stock_loop(model, optimizer, batch, device, warmup, steps, autocast=False)
    return model, optimizer, clock, "torch AdamW, bf16 weights and state, no autocast"


def stock_qlora(run_dir: Path, batch: dict, device: str, warmup: int, steps: int):
    """QLoRA as the peft / bitsandbytes documentation writes it, under bf16 autocast."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    quantization = transformers.BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16, llm_int8_skip_modules=STOCK_SKIP_4BIT)
    model = LlavaForConditionalGeneration.from_pretrained(
        RunDir(run_dir).model("1"), dtype=torch.bfloat16, quantization_config=quantization,
        device_map=device_map(device))
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    model = get_peft_model(model, LoraConfig(
        r=LORA_RANK, lora_alpha=LORA_ALPHA, lora_dropout=0.05, target_modules=STOCK_LORA_TARGETS, bias="none",
        modules_to_save=["multi_modal_projector"], task_type="CAUSAL_LM"))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    clock = stock_loop(model, optimizer, batch, device, warmup, steps, autocast=True)
    return model, optimizer, clock, "torch AdamW, fp32 adapters, bf16 autocast"


def ours(preset: str, run_dir: Path, batch: dict, device: str, warmup: int, steps: int):
    """Our stage 2 at `preset` through `train_stage`'s own pieces: `stage_model` (loading, freezing, LoRA, fp32
    master weights) and `stage_trainer` (the Trainer with the preset's precision, checkpointing and optimiser)."""
    overrides = {"device": device, "stage2.batch_size": len(batch["input_ids"]), "stage2.grad_accum": 1,
                 "stage2.max_steps": warmup + steps, "stage2.logging_steps": 1, "stage2.save_steps": 10 ** 9,
                 # the batch is tensors in memory: nothing for dataloader workers to decode
                 "stage2.num_workers": 0}
    if preset == "lora":
        overrides.update({"stage2.lora_r": LORA_RANK, "stage2.lora_alpha": LORA_ALPHA})
    cfg = load_config(preset, overrides)
    tc = cfg.stage2
    four_bit = cfg.model.load_in_4bit and tc.lora  # as train_stage decides
    model, processor = stage_model(cfg, tc, "2", run_dir, tc.lora, four_bit, fsdp=False)
    clock = StepClock(device)
    trainer = stage_trainer(cfg, tc, "2", model, processor, RepeatedBatch(batch, warmup + steps), None,
                            run_dir / f"ours-{preset}", [clock], progress=False)
    trainer.data_collator = default_data_collator  # the batch comes collated: the stock cases' very tensors
    trainer.train()
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    fused = optimizer.defaults.get("fused")
    trained = "fp32 adapters" if tc.lora else "fp32 master weights"
    what = (f"Trainer {type(optimizer).__name__}{' fused' if fused else ''}, {trained}, bf16 autocast {tc.bf16}, "
            f"checkpointing {tc.gradient_checkpointing}")
    trainer.accelerator.free_memory()
    return model, trainer, clock, what


COMPARISON = [  # (case, kind, runs it, needs bitsandbytes)
    ("stock stage 2", "stage 2", stock_stage2, False),
    ("ours stage 2", "stage 2", lambda *a: ours("full", *a), False),
    ("stock QLoRA", "QLoRA", stock_qlora, True),
    ("ours QLoRA", "QLoRA", lambda *a: ours("lora", *a), True),
]


def bitsandbytes_missing() -> str | None:
    try:
        import bitsandbytes  # noqa: F401
    except Exception as error:  # an ImportError, or a CUDA setup error raised on import
        return f"bitsandbytes is not importable: {type(error).__name__}: {error}"
    return None


def compare_case(case: str, kind: str, run, run_dir: Path, batch: dict, device: str, warmup: int,
                 steps: int) -> dict:
    """One case timed from its own loading of the checkpoint; everything it built is freed before the next."""
    n, tokens = batch["input_ids"].shape
    start = time.perf_counter()
    model, optimizer, clock, what = run(run_dir, batch, device, warmup, steps)
    seconds = (clock.times[-1] - clock.times[warmup - 1]) / steps
    row = {"case": case, "kind": kind, "setup": what, "batch": n, "tokens_per_sample": tokens, "steps": steps,
           "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
           "step_seconds": seconds, "samples_per_s": n / seconds, "tokens_per_s": n * tokens / seconds,
           "losses": clock.losses, "case_seconds": time.perf_counter() - start}  # loading and warm-up too
    if device == "cuda":
        row["peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
    del model, optimizer, clock
    free_memory(device)
    return row


def compare(shape: str, device: str, warmup: int, steps: int) -> list[dict]:
    """The four cases on one batch and one saved random checkpoint; ours get `vs_stock` ratios."""
    n, tokens = COMPARE[shape]
    rows, missing = [], bitsandbytes_missing()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        config = LlavaForConditionalGeneration.config_class.from_pretrained(write_checkpoint(run_dir, shape, device))
        batch = make_batch(config, n, tokens, "cpu", torch.float32)
        for case, kind, run, four_bit in COMPARISON:
            if four_bit and missing:
                rows.append({"case": case, "kind": kind, "skipped": missing})
                continue
            torch.manual_seed(0)
            try:
                row = compare_case(case, kind, run, run_dir, batch, device, warmup, steps)
            except Exception as error:  # one failing case must not lose the others' figures (GPU time is scarce)
                traceback.print_exc()
                row = {"case": case, "kind": kind, "error": f"{type(error).__name__}: {error}"[:2000]}
            free_memory(device)  # out of the except block: the traceback's frames hold the failed case's model
            rows.append(row)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()
                              if k != "losses"}), flush=True)
    for row in rows:
        stock = next(r for r in rows if r["kind"] == row["kind"] and r["case"].startswith("stock"))
        if row["case"].startswith("ours") and "samples_per_s" in row and "samples_per_s" in stock:
            row["vs_stock"] = row["samples_per_s"] / stock["samples_per_s"]
            if "peak_gb" in row:
                row["peak_vs_stock"] = row["peak_gb"] / stock["peak_gb"]
    return rows


def markdown(results: dict) -> str:
    """A table per comparison run in the results file."""
    lines = ["# Training throughput: ours against stock", "",
             "`python benchmarks/train_throughput.py --shape SHAPE --device DEVICE`; random weights, one batch, "
             "steps after the warm-up. Aims (issue 15): ours >= 1.3x stock stage 2 samples/s, >= 1.5x stock QLoRA "
             "at the same memory."]
    for key, result in results.items():
        if result.get("shape") not in COMPARE:
            continue
        lines += ["", f"## {key}: {result['device_name']}, torch {result['torch']}, transformers "
                      f"{result['transformers']}", "",
                  f"Batch {result['cases'][0].get('batch')} x {result['cases'][0].get('tokens_per_sample')} tokens, "
                  f"warm-up steps: {result['warmup_steps']}." + (
                      f" {result['threads']} CPU threads, load average {result['load_average_1min'][0]:.1f}: a "
                      "check that the cases run, not a speed." if result["device"] == "cpu" else ""), "",
                  "| case | samples/s | tokens/s | peak GB | vs stock | setup |",
                  "| --- | ---: | ---: | ---: | ---: | --- |"]
        for row in result["cases"]:
            if "samples_per_s" not in row:
                lines.append(f"| {row['case']} | | | | | {row.get('skipped') or row.get('error')} |")
                continue
            peak = f"{row['peak_gb']:.1f}" if "peak_gb" in row else "-"
            ratio = f"{row['vs_stock']:.2f}" if "vs_stock" in row else ""
            lines.append(f"| {row['case']} | {row['samples_per_s']:.3g} | {row['tokens_per_s']:.4g} | {peak} | "
                         f"{ratio} | {row['setup']} |")
    return "\n".join(lines) + "\n"


def run_tiny(device: str, steps: int) -> dict:
    """The tiny shape's per-stage steps with their MFU."""
    ceiling = matmul_ceiling(device)
    rows = []
    for stage, batch, tokens, checkpointing in CASES["tiny"]:
        row = run_case(tiny_model, stage, batch, tokens, checkpointing, device, steps)
        row["mfu"] = row["model_tflops_per_s"] * 1e12 / ceiling
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
        rows.append(row)
    return {"matmul_ceiling_tflops": ceiling / 1e12, "cases": rows}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=SHAPES, default="tiny")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=2, help="steps per case before timing (comparison shapes)")
    parser.add_argument("--out", default=str(RESULTS), help="results JSON; the comparison table goes beside it (.md)")
    args = parser.parse_args(argv)
    if args.shape == "v1.5" and args.device != "cuda":
        parser.error("the v1.5 shape (7B) needs --device cuda")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA GPU here")
    if args.steps < 1 or args.warmup < 1:
        parser.error("--steps and --warmup must be at least 1")
    torch.manual_seed(0)
    load_before = os.getloadavg()[0]  # CPU figures mean little on a machine shared with other jobs: record its load
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # every case alike (our presets turn tf32 on)
    if args.shape == "tiny":
        measured = run_tiny(args.device, args.steps)
    else:
        measured = {"warmup_steps": args.warmup, "cases": compare(args.shape, args.device, args.warmup, args.steps)}
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else cpu_name()
    result = {"shape": args.shape, "device": args.device, "device_name": device_name,
              "threads": torch.get_num_threads(), "torch": torch.__version__, "transformers": transformers.__version__,
              "load_average_1min": [load_before, os.getloadavg()[0]], **measured}
    out = Path(args.out)
    merged = json.loads(out.read_text()) if out.exists() else {}
    merged[f"{args.shape}-{args.device}"] = result
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(merged, indent=2) + "\n")
    if args.shape in COMPARE:
        out.with_suffix(".md").write_text(markdown(merged))
    return result


if __name__ == "__main__":
    main()
