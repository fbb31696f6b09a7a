"""Dataclass configs and the three scale presets: `tiny` (CPU, minutes), `lora` (one GPU, QLoRA), `full`
(8 GPUs, FSDP). Every field can be overridden with a dotted key, from the CLI (`stage2.lr=1e-4`) or from a
notebook's papermill parameters (`load_config(scale, {"stage2.lr": 1e-4})`)."""

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .paths import TINY_FOUNDATION

SCALES = ("tiny", "lora", "full")
# Quick mode (`make test`, `llavamed-lite run --quick`): a smoke test of every code path in minutes. Each training
# stage is cut to QUICK_STEPS, the tiny world shrinks to QUICK_WORLD (training figures, held-out figures, PMC
# packages), benchmark evaluations to QUICK_EVAL questions and benchmark fine-tuning to QUICK_TRAIN questions (more
# than its steps read; preparing all of VQA-RAD's 1,797 would be most of notebook 06's time at lora / full); at
# `lora` / `full` the batches shrink to 2 and the inputs are those that need no network (the curated chain on the
# synthetic PMC packages, VQA-RAD), so the GPU presets' shapes run on a CPU with miniature models (`llavamed-lite
# make-mini`). `make demo` / `make notebooks` run the full tiny recipe.
QUICK_ENV = "LLAVAMED_LITE_QUICK"
QUICK_STEPS = {"tiny": 20, "lora": 2, "full": 2}
QUICK_WORLD = {"tiny": (600, 60, 12), "lora": (40, 20, 12), "full": (40, 20, 12)}
QUICK_EVAL = {"tiny": 60, "lora": 24, "full": 24}
QUICK_TRAIN = {"tiny": 400, "lora": 24, "full": 24}
HUB_VISION = "openai/clip-vit-large-patch14-336"
HUB_LM = "mistralai/Mistral-7B-Instruct-v0.2"
# Where LLaVA-Med's official download script fetches its released data (CC BY-NC 4.0: fetched at run time, never
# committed). A local copy in the same layout, or with all files in one folder, works the same.
RELEASE_URL = "https://hanoverprod.z21.web.core.windows.net/med_llava/"
DATA_SOURCES = ("tiny", "llava-med", "curated")


@dataclass
class ModelConfig:
    vision: str = str(TINY_FOUNDATION / "clip")  # CLIP checkpoint: a local folder or a hub name
    lm: str = str(TINY_FOUNDATION / "lm")  # causal LM checkpoint, its tokenizer beside it
    projector: str = "mlp2x_gelu"  # "mlp2x_gelu" (v1.5) or "linear" (v1.0)
    vision_feature_layer: int = -2  # LLaVA takes the second-to-last layer ...
    vision_feature_select_strategy: str = "default"  # ... and drops CLS ("full" keeps it)
    pad_to_square: bool = True  # v1.5 pads images to square with the mean colour before resizing
    dtype: str = "float32"  # "bfloat16" on GPU
    load_in_4bit: bool = False  # QLoRA: the LM in 4-bit nf4 (bitsandbytes)
    attn_implementation: str = "sdpa"


@dataclass
class TrainConfig:
    max_steps: int = -1  # > 0 overrides epochs
    epochs: float = 1.0
    lr: float = 2e-5  # the language model's (and, in stage 1, the projector's) learning rate
    projector_lr: float | None = None  # stage 2: a separate projector learning rate; None = lr
    batch_size: int = 16  # per device
    grad_accum: int = 1
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    lr_scheduler: str = "cosine"
    max_length: int = 2048
    gradient_checkpointing: bool = False
    bf16: bool = False
    tf32: bool = False
    lora: bool = False  # stage 2: LoRA adapters on the LM instead of full fine-tuning
    lora_r: int = 128
    lora_alpha: int = 256
    lora_dropout: float = 0.05
    save_steps: int = 500
    logging_steps: int = 10
    # "plain", "llava_med_v1" or "mistral_instruct" (train/templates.py); None = the stage's: plain for stage 1,
    # mistral_instruct after. llava_med_v1 is LLaVA-Med v1.0's alignment format. plain is the default because it
    # learns best at tiny: stage 1 with the tiny preset, plain vs llava_med_v1, final caption loss 0.200 vs 0.243,
    # held-out caption domain accuracy 1.000 vs 0.923 (300 figures), 28% less time (shorter sequences).
    template: str | None = None
    group_by_length: bool = False  # batch records of similar length together (less padding)
    skip_bad: bool = False  # skip (and report) bad training records instead of stopping with the list of them
    num_workers: int = 0  # dataloader worker processes (collating and image decoding off the training process)
    image_cache: bool = False  # shrink images once to the model's input size, into <stage folder>/image_cache
    # VQA: an image's single-question records become one multi-turn conversation (data.formats.join_by_image), so
    # the image and the prompt's frame are encoded once for all its questions; every answer still trains.
    join_questions: bool = False
    # VQA: up to this many of an image's one-question records share one row that encodes the image once (0 = off;
    # train/collator.py, pack_by_image): an attention mask keeps each question and answer apart from the others, so
    # every answer trains exactly as alone, on fewer tokens. Needs attn_implementation "sdpa" (a 4D mask).
    pack_questions: int = 0
    # Run the frozen vision tower once per training image before the stage and read its features at every step
    # (train/features.py): the same features, no image decoding or tower pass per step; kept in memory.
    cache_vision_features: bool = False
    # A held-out metric over training steps: every `heldout_every` steps (and at steps 0 and last; 0 = off) answer
    # the first `heldout_questions` test questions of the stage's benchmark and record the paper's closed accuracy
    # and open recall (train/heldout.py): the training loss says how well the model fits its records, this says
    # whether it answers unseen questions better. Stage 2 and VQA only; each point costs an evaluation.
    heldout_every: int = 0
    heldout_questions: int = 300


@dataclass
class DataConfig:
    # What stages 1 and 2 train on: "tiny" (the tiny world), "llava-med" (LLaVA-Med's released files: alignment
    # 500K for stage 1, an instruct variant for stage 2) or "curated" (our chain: notebook 02's alignment records,
    # notebook 03's conversations). Default per scale: tiny at `tiny`, llava-med at `lora` / `full`.
    source: str = "tiny"
    release: str = RELEASE_URL  # llava-med: a local folder or a base URL holding the released files
    instruct_variant: str = "60k-im"  # llava-med stage 2: 10k, 60k or 60k-im (with inline mentions)
    # Our synthesis (`synthesize`, notebook 03): give the writer each figure's inline mentions, LLaVA-Med's 60K-IM,
    # its best-scoring variant. The offline tiny backend writes from the findings and does not read them.
    with_mentions: bool = True
    max_pairs: int | None = None  # llava-med: train on this many pairs, sampled round-robin over the five domains
    benchmark: str = "tiny"  # VQA fine-tuning data: tiny (the world's questions), vqa-rad, slake or pathvqa
    benchmark_data: str | None = None  # the benchmark's folder (None: data_samples/; PathVQA has to be given)
    eval_limit: int | None = None  # answer at most N questions: a benchmark's first N test questions (notebook 06),
    # notebook 05's chats (None: all)
    train_limit: int | None = None  # fine-tune only on the first N training questions of a benchmark (None: all)
    image_size: int = 64  # tiny-world figure size in pixels
    n_train_figures: int = 3000  # tiny world: figures for training (stage 1, stage 2, VQA)
    n_heldout_figures: int = 300  # tiny world: held-out figures for evaluation
    n_articles: int = 40  # tiny world: synthetic PMC packages for the curation notebook
    max_articles: int | None = None  # real manifests: stop after this many articles
    manifest: str | None = None  # real PMC manifest (CSV or JSONL) at full scale


@dataclass
class Config:
    scale: str = "tiny"
    seed: int = 0
    device: str = "auto"  # "auto" picks cuda when present, else cpu
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    stage1: TrainConfig = field(default_factory=TrainConfig)
    stage2: TrainConfig = field(default_factory=TrainConfig)
    vqa: TrainConfig = field(default_factory=TrainConfig)


def _tiny() -> Config:
    # 2 CPU cores: the whole pipeline in minutes, and the model learns (notebooks 04-06 show the runs; how the sizes,
    # rates and speed levers were chosen, with the figures: docs/tiny-recipe.md). Every stage reads the frozen vision
    # tower's features computed once (cache_vision_features); stages 1 and 2 batch records of similar length (a
    # third of their tokens was padding). VQA fine-tuning counts epochs, as the paper (3-18): 4.5 of the tiny
    # world's 22k questions or of VQA-RAD's 1,797, each trained as alone, up to 4 of an image's in one row that
    # encodes the image once (pack_questions); 5 rows a step are about the 16 questions of the other stages' steps.
    fast = dict(batch_size=16, max_length=256, cache_vision_features=True)
    return Config(
        scale="tiny",
        stage1=TrainConfig(max_steps=280, lr=1e-3, save_steps=100, group_by_length=True, **fast),
        stage2=TrainConfig(max_steps=1000, lr=3e-4, projector_lr=1e-3, save_steps=500, group_by_length=True,
                           heldout_every=100, **fast),
        vqa=TrainConfig(epochs=4.5, lr=1e-4, projector_lr=3e-4, save_steps=2000, heldout_every=500,
                        **{**fast, "batch_size": 5}, pack_questions=4),
    )


def _gpu_model(load_in_4bit: bool) -> ModelConfig:
    return ModelConfig(vision=HUB_VISION, lm=HUB_LM, dtype="bfloat16", load_in_4bit=load_in_4bit)


def _paper_stages(**stage2_extra: Any) -> dict[str, TrainConfig]:
    # The paper's settings: max length 2048, cosine, 3% warm-up, no weight decay, bf16 + tf32.
    # Global batch = batch_size x grad_accum x GPUs: 128 on 8 GPUs. Gradient checkpointing in stage 2 / VQA only:
    # in stage 1 only the projector trains and its short sequences (576 image tokens and a caption) fit at these
    # batches without it, which saves recomputing every LM layer (README, "Bigger scales", has the memory
    # arithmetic). Dataloader workers, length grouping and images shrunk once ahead of training keep the GPU busy.
    gpu = dict(max_length=2048, bf16=True, tf32=True, save_steps=500, num_workers=4, group_by_length=True,
               image_cache=True)
    return dict(
        stage1=TrainConfig(epochs=1, lr=2e-3, batch_size=8, grad_accum=2, **gpu),
        stage2=TrainConfig(epochs=3, lr=2e-5, batch_size=4, grad_accum=4, gradient_checkpointing=True, **gpu,
                           **stage2_extra),
        vqa=TrainConfig(epochs=3, lr=2e-5, batch_size=4, grad_accum=4, gradient_checkpointing=True, **gpu,
                        **stage2_extra),
    )


def _lora() -> Config:
    # One GPU of 24 GB: QLoRA on the 4-bit LM plus the projector; LLaVA-1.5's LoRA settings (r 128, alpha 256,
    # lr 2e-4, projector 2e-5). Batch 2 at 2,048 tokens fits (README, "Bigger scales"); global batch 2 x 64 = 128
    # through accumulation.
    stages = _paper_stages(lora=True)
    for name in ("stage2", "vqa"):
        stages[name] = dataclasses.replace(stages[name], lr=2e-4, projector_lr=2e-5, batch_size=2, grad_accum=64)
    stages["stage1"] = dataclasses.replace(stages["stage1"], batch_size=2, grad_accum=64)
    return Config(scale="lora", model=_gpu_model(True), data=_gpu_data(), **stages)


def _gpu_data() -> DataConfig:
    return DataConfig(source="llava-med", benchmark="vqa-rad", image_size=336)


def _full() -> Config:
    return Config(scale="full", model=_gpu_model(False), data=_gpu_data(), **_paper_stages())


PRESETS = {"tiny": _tiny, "lora": _lora, "full": _full}


def load_config(scale: str = "tiny", overrides: Mapping[str, Any] | Sequence[str] | None = None,
                settings: Sequence[str] = ()) -> Config:
    """The preset for `scale` with overrides applied: a mapping {"stage2.lr": 1e-4} or strings "stage2.lr=1e-4".
    Overrides whose value is None are ignored, so notebooks can pass optional parameters straight through.
    `settings` ("key=value" strings, e.g. a notebook's `settings` parameter from `run --set`) are applied first."""
    if scale not in PRESETS:
        raise ValueError(f"unknown scale preset {scale!r}: choose one of {', '.join(SCALES)}")
    cfg = PRESETS[scale]()
    if quick_mode():
        apply_quick(cfg)
    return apply_overrides(apply_overrides(cfg, list(settings)), overrides or {})


def quick_mode() -> bool:
    return os.environ.get(QUICK_ENV, "") not in ("", "0")


def apply_quick(cfg: Config) -> Config:
    """The smoke-test sizes of quick mode (see QUICK_ENV), in place."""
    steps = QUICK_STEPS[cfg.scale]
    for stage in (cfg.stage1, cfg.stage2, cfg.vqa):
        stage.max_steps = steps if stage.max_steps < 0 else min(stage.max_steps, steps)
        if cfg.scale != "tiny":
            stage.batch_size, stage.grad_accum = 2, 1
        if stage.heldout_every > 0:  # the curve's start, middle and end, on a few questions
            stage.heldout_every = max(1, stage.max_steps // 2)
            stage.heldout_questions = min(stage.heldout_questions, QUICK_EVAL[cfg.scale])
    cfg.data.n_train_figures, cfg.data.n_heldout_figures, cfg.data.n_articles = QUICK_WORLD[cfg.scale]
    cfg.data.eval_limit, cfg.data.train_limit = QUICK_EVAL[cfg.scale], QUICK_TRAIN[cfg.scale]
    if cfg.scale != "tiny":
        cfg.data.source = "curated"
    return cfg


def apply_overrides(cfg: Config, overrides: Mapping[str, Any] | Sequence[str]) -> Config:
    if not isinstance(overrides, Mapping):
        pairs = {}
        for item in overrides:
            key, sep, value = item.lstrip("-").partition("=")
            if not sep:
                raise ValueError(f"override {item!r} is not of the form key=value (e.g. stage2.lr=1e-4)")
            pairs[key] = value
        overrides = pairs
    for key, value in overrides.items():
        if value is None:
            continue
        *parents, name = key.split(".")
        target = cfg
        for part in parents:
            target = getattr(target, part, None)
            if not dataclasses.is_dataclass(target):
                raise KeyError(f"unknown config key {key!r}; valid keys: {', '.join(config_keys(cfg))}")
        fields = {f.name: f for f in dataclasses.fields(target)}
        if name not in fields or dataclasses.is_dataclass(getattr(target, name)):
            raise KeyError(f"unknown config key {key!r}; valid keys: {', '.join(config_keys(cfg))}")
        setattr(target, name, _coerce(value, typing.get_type_hints(type(target))[name], key))
    return validate(cfg)


# Range of every numeric field (a value outside it is refused by `validate`): (lowest, highest, lowest included).
_RANGES = {
    "Config": {"seed": (0, None, True)},
    "ModelConfig": {},
    "TrainConfig": {"epochs": (0, None, False), "lr": (0, None, False), "projector_lr": (0, None, False),
                    "batch_size": (1, None, True), "grad_accum": (1, None, True), "warmup_ratio": (0, 1, True),
                    "weight_decay": (0, None, True), "max_length": (1, None, True), "lora_r": (1, None, True),
                    "lora_alpha": (0, None, False), "lora_dropout": (0, 1, True), "save_steps": (1, None, True),
                    "logging_steps": (1, None, True), "num_workers": (0, None, True),
                    "heldout_every": (0, None, True), "heldout_questions": (1, None, True),
                    "pack_questions": (0, None, True)},
    "DataConfig": {"image_size": (1, None, True), "n_train_figures": (1, None, True),
                   "n_heldout_figures": (1, None, True), "n_articles": (1, None, True),
                   "max_articles": (1, None, True), "max_pairs": (1, None, True),
                   "eval_limit": (1, None, True), "train_limit": (1, None, True)},
}
_CHOICES = {"projector": ("mlp2x_gelu", "linear"), "vision_feature_select_strategy": ("default", "full"),
            "dtype": ("float32", "bfloat16", "float16"), "template": ("plain", "llava_med_v1", "mistral_instruct"),
            "scale": SCALES, "source": DATA_SOURCES, "instruct_variant": ("10k", "60k", "60k-im"),
            "benchmark": ("tiny", "vqa-rad", "slake", "pathvqa")}


def validate(cfg: Any, prefix: str = "") -> Any:
    """Refuse values no run could use (save_steps=0, epochs=-1, ...) when they are set, not steps into training.
    Raises ValueError naming the dotted key."""
    for f in dataclasses.fields(cfg):
        value, key = getattr(cfg, f.name), prefix + f.name
        if dataclasses.is_dataclass(value):
            validate(value, key + ".")
            continue
        if value is None:
            continue
        if f.name == "max_steps" and value != -1 and value < 1:
            raise ValueError(f"config key {key!r}: must be -1 (use epochs) or >= 1, got {value!r}")
        if f.name in _CHOICES and value not in _CHOICES[f.name]:
            raise ValueError(f"config key {key!r}: must be one of {', '.join(_CHOICES[f.name])}, got {value!r}")
        low, high, closed = _RANGES[type(cfg).__name__].get(f.name, (None, None, True))
        if (low is not None and (value < low or (value == low and not closed))) or (high is not None and value >= high):
            bound = f"{'>=' if closed else '>'} {low}" + (f" and < {high}" if high is not None else "")
            raise ValueError(f"config key {key!r}: must be {bound}, got {value!r}")
    return cfg


def config_keys(cfg: Any, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            keys += config_keys(value, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Turn a CLI string (or a papermill value) into the field's type."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = type(None) in typing.get_args(hint)
    base = args[0] if args else hint
    if isinstance(value, str):
        text = value.strip()
        if optional and text.lower() in ("none", "null", ""):
            return None
        try:
            if base is bool:
                if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return text.lower() in ("true", "1", "yes")
            if base in (int, float):
                return base(float(text)) if base is int and "e" in text.lower() else base(text)
            if base is str:
                return text
            return json.loads(text)
        except ValueError:
            expected = getattr(base, '__name__', base)
            raise ValueError(f"config key {key!r}: cannot read {value!r} as {expected}") from None
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if base in (int, float, bool, str) and not isinstance(value, base):
        raise ValueError(f"config key {key!r}: expected {base.__name__}, got {value!r}")
    return value
