"""Stage 0 of tiny mode: pretrain the two towers that LLaVA-Med downloads at full scale.

- `train_clip`: a tiny `CLIPModel` trained contrastively (return_loss=True) on tiny-world
  image-caption pairs. Vision 128 wide x 4 layers, patch 16 at 64 px: 16 image tokens (+ CLS); 64
  tokens (patch 8) doubled step times and learned less in the same time.
- `train_lm`: a tiny `MistralForCausalLM` trained on the corpus of `corpus.lm_documents` (training
  split only), packed into fixed-length blocks.
- Metrics: CLIP zero-shot domain accuracy and finding retrieval on held-out figures; LM perplexity
  on held-out captions against a unigram model of the training text, and closed-question accuracy
  when the caption stands in for the image.
"""

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, MistralConfig, MistralForCausalLM

from ..data.formats import DOMAINS
from ..zero_shot import ZeroShotClassifier, clip_text_inputs, embed_images, embed_texts
from .findings import PRESENCE, SCHEMA, as_rng, sample_findings, validate_findings
from .questions import questions_for
from .text import caption


@dataclass
class ClipSettings:
    image_size: int = 64
    patch_size: int = 16
    vision_width: int = 128
    vision_layers: int = 4
    text_width: int = 128
    text_layers: int = 3
    heads: int = 4
    projection_dim: int = 128
    max_text_length: int = 96
    steps: int = 1500  # 500 -> 1,500: finding retrieval 0.86 -> 0.93, tiny VQA closed accuracy 0.89 -> 0.94
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 25


@dataclass
class LMSettings:
    hidden: int = 256
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2  # grouped-query attention, as Mistral
    intermediate: int = 448  # keeps the fp32 checkpoint under 10 MB
    block_size: int = 128
    steps: int = 3000  # 300 steps left closed yes/no answering from the caption at 0.69; 3000 reach 0.91
    batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 20


def _special_ids(tokenizer) -> dict:
    return dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id)


# ---- CLIP ----------------------------------------------------------------------------------------
def clip_config(tokenizer, s: ClipSettings) -> CLIPConfig:
    text = dict(vocab_size=len(tokenizer), hidden_size=s.text_width, intermediate_size=4 * s.text_width,
                num_hidden_layers=s.text_layers, num_attention_heads=s.heads, max_position_embeddings=s.max_text_length,
                **_special_ids(tokenizer))
    vision = dict(hidden_size=s.vision_width, intermediate_size=4 * s.vision_width, num_hidden_layers=s.vision_layers,
                  num_attention_heads=s.heads, image_size=s.image_size, patch_size=s.patch_size)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=s.projection_dim)


def image_processor(image_size: int) -> CLIPImageProcessorPil:
    """CLIP's preprocessing at the tiny size (saved beside the CLIP weights so AutoImageProcessor
    finds it)."""
    return CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                 crop_size={"height": image_size, "width": image_size})


def pixel_values(paths: list[Path], processor: CLIPImageProcessorPil) -> torch.Tensor:
    images = [Image.open(p).convert("RGB") for p in paths]
    return processor(images=images, return_tensors="pt")["pixel_values"]  # (N, 3, S, S)


def _schedule(model, lr, warmup, steps):
    # here, not at the top: transformers.optimization brings the Trainer's imports (peft, bitsandbytes: seconds),
    # which notebooks that only load the towers do not need
    from transformers import get_cosine_schedule_with_warmup

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"training steps must be a positive integer, got {steps!r}")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.01)
    return opt, get_cosine_schedule_with_warmup(opt, warmup, steps)


def train_clip(pixels: torch.Tensor, texts: list[str], tokenizer, s: ClipSettings, seed: int = 0,
               progress: Callable | None = None) -> tuple[CLIPModel, list[float]]:
    """Contrastive training on (pixels[i], texts[i]) pairs; returns the model and the loss per step."""
    torch.manual_seed(seed)
    model = CLIPModel(clip_config(tokenizer, s))
    model.train()
    text_inputs = clip_text_inputs(tokenizer, texts, s.max_text_length)
    opt, sched = _schedule(model, s.lr, s.warmup_steps, s.steps)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    steps = range(s.steps) if progress is None else progress(range(s.steps), desc="CLIP")
    for _ in steps:
        idx = torch.randperm(len(texts), generator=gen)[: s.batch_size]
        ids, mask = text_inputs["input_ids"][idx], text_inputs["attention_mask"][idx]
        width = int(mask.sum(1).max())
        out = model(input_ids=ids[:, :width], attention_mask=mask[:, :width], pixel_values=pixels[idx],
                    return_loss=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(out.loss.item())
    model.eval()
    return model, losses


def domain_prompts(n_per_domain: int = 60, seed: int = 0) -> dict[str, list[str]]:
    """Caption-like prompts for each domain, over random findings ("Axial T2-weighted MRI of the
    brain showing ..."), for zero-shot classification; no held-out figure is used."""
    rng = as_rng(seed)
    return {d: [caption(sample_findings(d, rng), rng) for _ in range(n_per_domain)] for d in DOMAINS}


def zero_shot_domain(model: CLIPModel, tokenizer, pixels: torch.Tensor, max_length: int = 96) -> np.ndarray:
    """Predicted domain index (into DOMAINS) per image: the domain whose prompts take the most
    probability under CLIP's softmax over all prompts (`llavamed_lite.zero_shot`, curation's image
    classifier too)."""
    return np.array(ZeroShotClassifier(model, tokenizer, domain_prompts(), max_length).predict(pixels))


def counterfactual(findings: dict, rng) -> dict:
    """The same findings with one finding changed (e.g. the nodule on the other side, or no nodule
    at all; the details of a lesion that appears are drawn at random)."""
    rng = as_rng(rng)
    f = validate_findings(findings)
    parent, dependent = PRESENCE[f["domain"]]
    options = []
    for name, allowed in SCHEMA[f["domain"]].items():
        if name in dependent and f[name] is None:
            continue
        for value in allowed:
            if value is None or (value == f[name] and type(value) is type(f[name])):
                continue
            candidate = {**f, name: value}
            if name == parent and bool(value) != bool(f[name]):
                for dep in dependent:
                    choices = [v for v in SCHEMA[f["domain"]][dep] if v is not None]
                    candidate[dep] = choices[int(rng.integers(len(choices)))] if value else None
            options.append(validate_findings(candidate))
    return options[int(rng.integers(len(options)))]


def finding_retrieval(model: CLIPModel, tokenizer, pixels: torch.Tensor, findings: list[dict], seed: int = 0,
                      max_length: int = 96) -> float:
    """Fraction of images whose own caption scores above the caption of a one-finding counterfactual
    (chance 0.5); both captions are written with the same random phrasing."""
    rng = as_rng(seed)
    true_texts, false_texts = [], []
    for f in findings:
        other = counterfactual(f, rng)
        phrasing = int(rng.integers(1 << 30))
        true_texts.append(caption(f, phrasing))
        false_texts.append(caption(other, phrasing))
    images = embed_images(model, pixels)
    t = (images * embed_texts(model, tokenizer, true_texts, max_length)).sum(1)
    c = (images * embed_texts(model, tokenizer, false_texts, max_length)).sum(1)
    return float((t > c).float().mean())


def caption_retrieval(model: CLIPModel, tokenizer, pixels: torch.Tensor, texts: list[str], findings: list[dict],
                      max_length: int = 96) -> float:
    """Image -> caption top-1 over all given captions; correct when the retrieved caption has the
    image's findings."""
    sims = embed_images(model, pixels) @ embed_texts(model, tokenizer, texts, max_length).T
    best = sims.argmax(1).tolist()
    return float(np.mean([findings[b] == findings[i] for i, b in enumerate(best)]))


# ---- LM ------------------------------------------------------------------------------------------
def lm_config(tokenizer, s: LMSettings) -> MistralConfig:
    return MistralConfig(vocab_size=len(tokenizer), hidden_size=s.hidden, intermediate_size=s.intermediate,
                         num_hidden_layers=s.layers, num_attention_heads=s.heads, num_key_value_heads=s.kv_heads,
                         head_dim=s.hidden // s.heads, max_position_embeddings=2048, sliding_window=None,
                         rope_theta=10000.0, tie_word_embeddings=False, **_special_ids(tokenizer))


def pack(tokenizer, docs: list[str], block_size: int) -> torch.Tensor:
    """Concatenate <s> doc </s> for every document and cut into (N, block_size) blocks."""
    stream = [t for ids in tokenizer(docs)["input_ids"] for t in ids + [tokenizer.eos_token_id]]
    n = len(stream) // block_size
    return torch.tensor(stream[: n * block_size], dtype=torch.long).view(n, block_size)


def train_lm(blocks: torch.Tensor, tokenizer, s: LMSettings, seed: int = 0,
             progress: Callable | None = None) -> tuple[MistralForCausalLM, list[float]]:
    torch.manual_seed(seed)
    model = MistralForCausalLM(lm_config(tokenizer, s))
    model.train()
    opt, sched = _schedule(model, s.lr, s.warmup_steps, s.steps)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    steps = range(s.steps) if progress is None else progress(range(s.steps), desc="LM")
    for _ in steps:
        batch = blocks[torch.randint(len(blocks), (s.batch_size,), generator=gen)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return model, losses


def _targets(tokenizer, texts: list[str]) -> list[list[int]]:
    """<s> text </s> per text."""
    return [ids + [tokenizer.eos_token_id] for ids in tokenizer(texts)["input_ids"]]


@torch.no_grad()
def perplexity(model, tokenizer, texts: list[str], batch_size: int = 64) -> float:
    """exp(mean NLL) of every token after <s> (the text and its </s>)."""
    seqs = _targets(tokenizer, texts)
    nll, count = 0.0, 0
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start:start + batch_size]
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((len(chunk), width), -100, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, s in enumerate(chunk):
            ids[i, : len(s)], labels[i, 1: len(s)], mask[i, : len(s)] = torch.tensor(s), torch.tensor(s[1:]), 1
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1),
                                                 ignore_index=-100, reduction="sum")
        nll += loss.item()
        count += int((labels[:, 1:] != -100).sum())
    return math.exp(nll / count)


def unigram_perplexity(tokenizer, train_docs: list[str], texts: list[str]) -> float:
    """Perplexity of a unigram model (add-one smoothed token frequencies of the training text) on
    the same tokens."""
    counts = np.ones(len(tokenizer), dtype=np.float64)
    for seq in _targets(tokenizer, train_docs):
        np.add.at(counts, seq[1:], 1)
    logp = np.log(counts / counts.sum())
    tokens = [t for seq in _targets(tokenizer, texts) for t in seq[1:]]
    return float(math.exp(-logp[tokens].mean()))


@torch.no_grad()
def closed_qa_from_caption(model, tokenizer, records: list[dict], seed: int = 0, batch_size: int = 64) -> float:
    """With the caption standing in for the image, how often the LM prefers the right one of " yes"
    / " no" for the figure's closed questions (held-out records; chance about 0.5). Shows the LM
    reads findings from the slot."""
    rng = as_rng(seed)
    prompts, answers = [], []
    for r in records:
        for q in questions_for(r["findings"], rng):
            if q["answer_type"] == "CLOSED":
                prompts.append(f"[INST] {r['fig_caption']}\n{q['question']} [/INST]")
                answers.append(q["answer"] == "yes")
    yes = tokenizer(" yes", add_special_tokens=False)["input_ids"][0]
    no = tokenizer(" no", add_special_tokens=False)["input_ids"][0]
    if yes == no:
        raise RuntimeError("' yes' and ' no' start with the same token; cannot score closed answers")
    tokenizer.padding_side = "left"
    correct = 0
    for start in range(0, len(prompts), batch_size):
        enc = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True)
        logits = model(**enc).logits[:, -1]
        correct += int(((logits[:, yes] > logits[:, no]) == torch.tensor(answers[start:start + batch_size])).sum())
    tokenizer.padding_side = "right"
    return correct / len(prompts)


class Timer:
    """Wall time of a block, in seconds: `with Timer() as t: ...; t.seconds`."""

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
