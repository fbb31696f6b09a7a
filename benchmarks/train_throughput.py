"""Training throughput per stage: samples/s, tokens/s and model-FLOPs utilisation (MFU).

    python benchmarks/train_throughput.py                      # tiny shape on the CPU (what CI machines have)
    python benchmarks/train_throughput.py --shape v1.5 --device cuda   # LLaVA-Med v1.5 shape, random init, one GPU

One training step = forward + backward + AdamW step on a padded batch, with exactly what each stage trains
(llavamed_lite.model.freeze / lora): stage 1 the projector, stage 2 the projector + LM (full, with gradient
checkpointing at v1.5 shape) or LoRA adapters + projector. Model FLOPs count the work the step must do whatever the
implementation: the vision tower's forward (2N per image token, no gradient), the LM's forward and backward
(6N per token when its weights train, 4N when only activation gradients flow through it: stage 1 and LoRA), the
projector's 6N per image token. MFU = achieved model FLOP/s / a measured matmul ceiling on the same device
(fp32 on the CPU, bf16 on a GPU). The v1.5 shape is random-init (no download): CLIP ViT-L/14-336 (576 image
tokens) + Mistral-7B, mlp2x_gelu projector. Results go to benchmarks/results/train_throughput.json.
"""

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
import transformers
from transformers import LlavaForConditionalGeneration

from llavamed_lite.model.compose import compose_llava, llava_config
from llavamed_lite.model.freeze import freeze_for_stage
from llavamed_lite.model.lora import add_lora
from llavamed_lite.model.shapes import KNOWN_LM, KNOWN_VISION
from llavamed_lite.paths import TINY_FOUNDATION

RESULTS = Path(__file__).parent / "results" / "train_throughput.json"
# (stage, batch, tokens per sample, gradient checkpointing)
CASES = {
    "tiny": [("1", 16, 64, False), ("2-full", 16, 160, False), ("2-lora", 16, 160, False)],
    "v1.5": [("1", 16, 640, False), ("2-full", 8, 1024, True), ("2-lora", 8, 1024, True)],
}


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
        from llavamed_lite.model.mini import make_mini

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


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(CASES), default="tiny")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.shape == "v1.5" and args.device != "cuda":
        parser.error("the v1.5 shape (7B) needs --device cuda")
    torch.manual_seed(0)
    load_before = os.getloadavg()[0]  # CPU figures mean little on a machine shared with other jobs: record its load
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    ceiling = matmul_ceiling(args.device)
    build = tiny_model if args.shape == "tiny" else (lambda: v15_model(args.device))
    rows = []
    for stage, batch, tokens, checkpointing in CASES[args.shape]:
        row = run_case(build, stage, batch, tokens, checkpointing, args.device, args.steps)
        row["mfu"] = row["model_tflops_per_s"] * 1e12 / ceiling
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
        rows.append(row)
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or platform.machine()
    result = {"shape": args.shape, "device": args.device, "device_name": device_name,
              "threads": torch.get_num_threads(), "torch": torch.__version__, "transformers": transformers.__version__,
              "load_average_1min": [load_before, os.getloadavg()[0]], "matmul_ceiling_tflops": ceiling / 1e12,
              "cases": rows}
    out = Path(args.out)
    merged = json.loads(out.read_text()) if out.exists() else {}
    merged[f"{args.shape}-{args.device}"] = result
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(merged, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
