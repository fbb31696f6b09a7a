"""Stage 0 end to end: tokenizer, CLIP and LM pretrained on a tiny world, saved
where the later stages load them.

    out_dir/clip/    CLIPModel (safetensors) + CLIPImageProcessorPil config + the tokenizer
    out_dir/lm/      MistralForCausalLM (safetensors) + the tokenizer (with the mistral_instruct chat template)
    out_dir/curves.json, curves.png   loss per step of both towers
    out_dir/metrics.json              what `evaluate_towers` measured on the held-out split (record_metrics)
    out_dir/foundation.json           the settings, the world it was trained on, and the times

Metrics are measured on the towers as saved (reloaded from disk), on figures
and captions never trained on.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, CLIPImageProcessorPil, CLIPModel

from ..data.formats import DOMAINS, read_caption_file, record_domain
from ..io import atomic_write_json
from ..runs import record_metrics
from . import towers
from .corpus import caption_text, lm_documents
from .tokenizer import train_tokenizer

LOSS_PLOT = "curves.png"


def _progress():
    return lambda it, desc: tqdm(it, desc=desc, mininterval=2)


def pretrain_tiny(out_dir: str | Path, world: dict, clip: towers.ClipSettings | None = None,
                  lm: towers.LMSettings | None = None, vocab_size: int = 512, seed: int = 0,
                  progress: bool = True) -> dict:
    """Train the tokenizer, CLIP and LM on `world` (paths from build_tiny_world), save them under
    out_dir, measure them, and return the metrics."""
    out = Path(out_dir)
    (out / "metrics.json").unlink(missing_ok=True)  # record_metrics merges: start from a clean file
    clip = clip or towers.ClipSettings()
    lm = lm or towers.LMSettings()
    train = read_caption_file(world["captions_train"])
    bar = _progress() if progress else None
    times = {}
    with towers.Timer() as t:
        docs = lm_documents(train, seed)
        tokenizer = train_tokenizer(docs + [caption_text(r) for r in train], vocab_size)
    times["tokenizer_seconds"] = t.seconds
    processor = towers.image_processor(clip.image_size)
    with towers.Timer() as t:
        pixels = towers.pixel_values([world["root"] / r["image"] for r in train], processor)
        captions = [caption_text(r) for r in train]
        clip_model, clip_losses = towers.train_clip(pixels, captions, tokenizer, clip, seed, bar)
    times["clip_seconds"] = t.seconds
    clip_model.save_pretrained(out / "clip")
    processor.save_pretrained(out / "clip")
    tokenizer.save_pretrained(out / "clip")
    with towers.Timer() as t:
        blocks = towers.pack(tokenizer, docs, lm.block_size)
        lm_model, lm_losses = towers.train_lm(blocks, tokenizer, lm, seed, bar)
    times["lm_seconds"] = t.seconds
    lm_model.save_pretrained(out / "lm")
    tokenizer.save_pretrained(out / "lm")
    atomic_write_json(out / "curves.json", {"clip_loss": clip_losses, "lm_loss": lm_losses})
    plot_curves(out / "curves.json", out / LOSS_PLOT)
    metrics = {**evaluate_towers(out / "clip", out / "lm", world, seed),
               **{k: round(v, 1) for k, v in times.items()}}
    atomic_write_json(out / "foundation.json", {
        "clip": dataclasses.asdict(clip), "lm": dataclasses.asdict(lm), "vocab_size": vocab_size,
        "seed": seed, "world": json.loads(Path(world["manifest"]).read_text()),
        "lm_training_documents": len(docs), "lm_training_tokens": int(blocks.numel()), **times})
    record_metrics(out, **metrics)
    return metrics


def load_towers(clip_dir: str | Path, lm_dir: str | Path):
    """(CLIPModel, LM, tokenizer, image processor) from saved folders,
    offline, in float32, in eval mode."""
    clip_model = CLIPModel.from_pretrained(clip_dir, dtype=torch.float32).eval()
    lm_model = AutoModelForCausalLM.from_pretrained(lm_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    return clip_model, lm_model, tokenizer, CLIPImageProcessorPil.from_pretrained(clip_dir)


def evaluate_towers(clip_dir: str | Path, lm_dir: str | Path, world: dict, seed: int = 0) -> dict:
    """Held-out metrics of saved towers (see module docstring); chance levels in comments."""
    clip_model, lm_model, tokenizer, processor = load_towers(clip_dir, lm_dir)
    train = read_caption_file(world["captions_train"])
    heldout = read_caption_file(world["captions_heldout"])
    if not heldout:
        raise ValueError(f"{world['captions_heldout']}: the held-out split is empty; build the "
                         "world with n_heldout > 0")
    pixels = towers.pixel_values([world["root"] / r["image"] for r in heldout], processor)
    findings = [r["findings"] for r in heldout]
    truth = np.array([DOMAINS.index(record_domain(r)) for r in heldout])
    texts = [caption_text(r) for r in heldout]
    max_len = clip_model.config.text_config.max_position_embeddings
    domain_hits = towers.zero_shot_domain(clip_model, tokenizer, pixels, max_len) == truth
    return {  # chance levels: 0.2 for the domain, 0.5 for finding retrieval and closed QA
        "clip_zero_shot_domain_accuracy": float(domain_hits.mean()),
        "clip_finding_retrieval_accuracy": towers.finding_retrieval(clip_model, tokenizer, pixels,
                                                                    findings, seed, max_len),
        "clip_caption_retrieval_accuracy": towers.caption_retrieval(clip_model, tokenizer, pixels,
                                                                    texts, findings, max_len),
        "lm_heldout_perplexity": towers.perplexity(lm_model, tokenizer, texts),
        "lm_unigram_perplexity": towers.unigram_perplexity(tokenizer, lm_documents(train, seed),
                                                           texts),
        "lm_closed_qa_from_caption_accuracy": towers.closed_qa_from_caption(lm_model, tokenizer,
                                                                            heldout, seed),
    }


def plot_curves(curves_json: str | Path, png: str | Path | None = None):
    """Loss per step of both towers (raw and smoothed); saved to `png`
    when given. Returns the figure."""
    import matplotlib  # the backend is chosen before pyplot is imported

    if png is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    curves = json.loads(Path(curves_json).read_text())
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for ax, key, title in zip(axes, ("clip_loss", "lm_loss"),
                              ("CLIP contrastive loss", "LM next-token loss")):
        y = np.asarray(curves[key])
        k = max(1, len(y) // 25)
        ax.plot(y, alpha=0.3, color="C0")
        ax.plot(np.arange(k - 1, len(y)), np.convolve(y, np.ones(k) / k, mode="valid"), color="C0")
        # late progress stays visible
        ax.set(title=title, xlabel="step", ylabel="loss (log scale)", yscale="log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))  # ticks 0.2, 0.5, 1, 2, 5 ...
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))  # written 0.5, not 5x10^-1
        ax.yaxis.set_minor_formatter(NullFormatter())
    fig.tight_layout()
    if png is not None:
        fig.savefig(png, dpi=100)
    return fig
