"""Stage 1 (alignment), stage 2 (instruction tuning) and VQA fine-tuning
on the transformers `Trainer`.

    stage 1: fresh composition (CLIP + LM + new projector); only the projector trains      -> run_dir/stage1/
    stage 2: stage 1's model; the projector + the LM (full) or LoRA adapters on the LM    -> run_dir/stage2/
    vqa:     stage 2's model, the same recipe on VQA records      -> run_dir/vqa/ (tiny world),
                                                                     run_dir/vqa_rad/ (VQA-RAD)
The vision tower never trains. Each stage leaves `model/` (save_pretrained, loads with plain
transformers; for LoRA the merged export), `adapter/` (LoRA only), `checkpoints/` (the Trainer's,
for --resume), `loss_history.json` and `summary.json`. The same function runs in a notebook, from
the CLI, and under `accelerate launch` on many GPUs.
"""

import contextlib
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from accelerate import PartialState
from safetensors.torch import load_file
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.utils.notebook import NotebookProgressCallback
from transformers.trainer_utils import get_last_checkpoint

from ..config import Config, TrainConfig
from ..data.formats import join_by_image, load_records
from ..io import atomic_write_json
from ..model.compose import (compose_from_config, load_llava, load_projector, no_transformers_bars,
                             quiet_transformers)
from ..model.freeze import fp32_master_weights, freeze_for_stage, parameter_table
from ..model.lora import add_lora, is_4bit, merge_adapter
from ..sources import stage_inputs
from ..model.placement import resolve_device, resolve_dtype
from ..runs import STAGES, RunDir
from .collator import ConversationDataset, LlavaCollator, image_input_size, pack_by_image
from .features import VisionFeatureCache, reading_cached_features
from .heldout import HELDOUT_FILE, HeldoutCurve, heldout_items

STAGE_CONFIGS = {"1": "stage1", "2": "stage2", "vqa": "vqa"}  # the Config field of each stage
UPSTREAM = {"2": "1", "vqa": "2"}
DEFAULT_TEMPLATE = {"1": "plain", "2": "mistral_instruct", "vqa": "mistral_instruct"}


@dataclass
class TrainResult:
    stage: str
    final_loss: float
    seconds: float
    steps: int
    model_dir: Path
    adapter_dir: Path | None
    history: list[dict]
    parameter_table: list[dict]
    n_records: int
    skipped: list[str] = field(default_factory=list)
    truncated: int = 0
    heldout: list[dict] = field(default_factory=list)  # heldout_curve.json: [{"step", "closed", "open", "seconds"}]


def check_stage(stage) -> str:
    stage = str(stage)
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}: choose one of {', '.join(STAGES)}")
    return stage


def stage_config(cfg: Config, stage: str) -> TrainConfig:
    return getattr(cfg, STAGE_CONFIGS[check_stage(stage)])


def load_saved(path: Path, cfg: Config, four_bit: bool):
    """A model a previous stage saved, optionally with its LM in 4-bit (QLoRA), left where
    from_pretrained puts it: the Trainer moves it to the device."""
    dtype = resolve_dtype(cfg.model.dtype, resolve_device(cfg.device))
    return load_llava(path, dtype, device=None, load_in_4bit=four_bit,
                      attn_implementation=cfg.model.attn_implementation)


def start_model(cfg: Config, stage: str, run_dir: Path, four_bit: bool | None = None):
    """Stage 1 starts from a fresh composition; later stages from the previous stage's saved
    model. At tiny scale a missing previous stage is trained first (minutes), at other scales it
    is an error naming the command."""
    four_bit = cfg.model.load_in_4bit if four_bit is None else four_bit
    if stage == "1":
        model_cfg = dataclasses.replace(cfg.model, load_in_4bit=four_bit)
        return compose_from_config(model_cfg)
    upstream = RunDir(run_dir).model(UPSTREAM[stage])
    if not (upstream / "config.json").exists():
        if cfg.scale != "tiny":
            raise FileNotFoundError(
                f"{upstream}: stage {stage} starts from stage {UPSTREAM[stage]}'s model; run "
                f"`llavamed-lite train --stage {UPSTREAM[stage]} --scale {cfg.scale} --run-dir {run_dir}` first")
        train_stage(cfg, UPSTREAM[stage], run_dir)
    return load_saved(upstream, cfg, four_bit)


class LogLastStep(TrainerCallback):
    """Log the loss of the last step too, so `final_loss` is the loss where training
    ended whatever logging_steps."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_log = True


class StepProgress(ProgressCallback):
    """The Trainer's text progress bar without its line per logged loss (the losses go to loss_history.json)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass


class LlavaTrainer(Trainer):
    """The Trainer with a separate learning rate for the projector (a new layer
    learns faster than the LM)."""

    def __init__(self, *args, projector_lr: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.projector_lr = projector_lr

    def create_optimizer(self, model=None):
        opt_model = self.model if model is None else model
        if self.optimizer is None and self.projector_lr is not None:
            params = [(n, p) for n, p in opt_model.named_parameters() if p.requires_grad]
            projector = [p for n, p in params if "multi_modal_projector" in n]
            rest = [p for n, p in params if "multi_modal_projector" not in n]
            decay = self.args.weight_decay
            groups = [{"params": rest, "weight_decay": decay},
                      {"params": projector, "weight_decay": decay, "lr": self.projector_lr}]
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            self.optimizer = optimizer_cls([g for g in groups if g["params"]], **optimizer_kwargs)
        return super().create_optimizer(model)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Checkpoints are saved in the hub's key layout (`language_model.model.layers...`), which
        the Trainer's raw `load_state_dict` would silently miss: reload them through
        `from_pretrained`, which maps the keys back."""
        model = self.model if model is None else model
        saved_model = (Path(resume_from_checkpoint) / "config.json").exists()
        if saved_model and not self.is_fsdp_enabled and not hasattr(model, "peft_config"):
            # stage 1 in 4-bit: only the projector trains, the packed LM is as loaded
            if is_4bit(model):
                load_projector(model, checkpoint_projector(Path(resume_from_checkpoint)))
                return
            # float32: the checkpoint holds float32 master weights of the trainable part
            with quiet_transformers():
                saved = type(model).from_pretrained(resume_from_checkpoint, dtype=torch.float32)
            model.load_state_dict(saved.state_dict(), strict=True)
            return
        # LoRA (4-bit too): the adapter + projector
        super()._load_from_checkpoint(resume_from_checkpoint, model)


def checkpoint_projector(checkpoint: Path) -> dict:
    """The projector's weights from a checkpoint's safetensors files (hub
    key layout, maybe sharded)."""
    weights = {}
    for file in sorted(checkpoint.glob("*.safetensors")):
        weights.update({k: v for k, v in load_file(file).items() if "multi_modal_projector." in k})
    if not weights:
        raise FileNotFoundError(f"{checkpoint}: no projector weights to resume from")
    return weights


def training_arguments(tc: TrainConfig, cfg: Config, output_dir: Path,
                       progress: bool) -> TrainingArguments:
    cuda = resolve_device(cfg.device).type == "cuda"
    return TrainingArguments(
        output_dir=str(output_dir),
        max_steps=tc.max_steps,
        num_train_epochs=tc.epochs,
        per_device_train_batch_size=tc.batch_size,
        gradient_accumulation_steps=tc.grad_accum,
        learning_rate=tc.lr,
        weight_decay=tc.weight_decay,
        warmup_steps=tc.warmup_ratio,  # a float < 1 is a share of the steps (3% in the paper)
        lr_scheduler_type=tc.lr_scheduler,
        logging_steps=tc.logging_steps,
        save_steps=tc.save_steps,
        save_total_limit=2,
        bf16=tc.bf16,  # autocast on the CPU too (fp32 master weights: see fp32_master_weights)
        tf32=True if (tc.tf32 and cuda) else None,
        activation_checkpointing=tc.gradient_checkpointing,
        activation_checkpointing_kwargs=({"use_reentrant": False} if tc.gradient_checkpointing
                                         else None),
        train_sampling_strategy="group_by_length" if tc.group_by_length else "random",
        remove_unused_columns=False,  # the collator needs the image path
        use_cpu=not cuda,
        seed=cfg.seed,
        report_to="none",
        disable_tqdm=not progress,
        dataloader_num_workers=tc.num_workers,
    )


def train_stage(cfg: Config, stage: str | int, run_dir: str | Path, resume: bool = False,
                records: str | Path | None = None, image_folder: str | Path | None = None,
                benchmark: str | None = None, callbacks: list | None = None, progress: bool = True) -> TrainResult:
    """Train one stage and save it under its run_dir folder. `records`/`image_folder` override the
    inputs the data source gives (llavamed_lite.sources); VQA trains on `benchmark` (default:
    data.benchmark); `resume` continues from the last checkpoint."""
    stage = check_stage(stage)
    run_dir = Path(run_dir)
    tc = stage_config(cfg, stage)
    benchmark = benchmark or cfg.data.benchmark
    out = RunDir(run_dir).stage(stage, benchmark)
    state = PartialState()
    with state.main_process_first():
        if records is None:
            inputs = stage_inputs(cfg, stage, run_dir, benchmark, progress)
            records, image_folder = inputs.path, image_folder or inputs.image_folder
    if image_folder is None:
        raise ValueError("image_folder is required with an explicit records file")
    if resume and (done := finished_result(out, tc)) is not None:
        print(f"stage {stage} in {out} has finished ({done.steps} steps): --resume has nothing to do")
        return done

    lora = tc.lora and stage != "1"
    four_bit = cfg.model.load_in_4bit and (lora or stage == "1")  # full fine-tuning: the LM in full precision
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")
    model, processor = stage_model(cfg, tc, stage, run_dir, lora, four_bit, fsdp)
    table = parameter_table(model)
    heldout = heldout_curve(cfg, tc, stage, run_dir, benchmark, processor, out, fsdp)

    # the main process checks every image (and shrinks it) once; the others reuse it
    with state.main_process_first():
        dataset = stage_dataset(cfg, tc, stage, records, image_folder, processor, out)
    images = [item["image"] for item in dataset.items]
    features = VisionFeatureCache(model, processor, images, progress=progress) if tc.cache_vision_features else None
    callbacks = [*([heldout] if heldout else []), *(callbacks or [])]  # yours see the model after it measured
    trainer = stage_trainer(cfg, tc, stage, model, processor, dataset, features, out, callbacks, progress)
    checkpoint = last_checkpoint(out, stage) if resume else None
    start = time.time()
    with no_transformers_bars():  # one step bar, its line not broken by checkpoints' "Writing model shards"
        with reading_cached_features(model, features) if features else contextlib.nullcontext():
            trainer.train(resume_from_checkpoint=checkpoint)
        seconds = time.time() - start
        model_dir, adapter_dir = save_trained(cfg, stage, run_dir, out, trainer, processor, lora, fsdp)
    history = [{"step": h["step"], "loss": h["loss"], "lr": h.get("learning_rate")}
               for h in trainer.state.log_history if "loss" in h]
    final_loss = history[-1]["loss"] if history else math.nan
    if trainer.is_world_process_zero():
        atomic_write_json(out / "loss_history.json", history)
        atomic_write_json(out / "summary.json", {
            "stage": stage, "scale": cfg.scale, "final_loss": final_loss, "seconds": seconds,
            "steps": trainer.state.global_step, "max_steps": trainer.state.max_steps,
            "processes": state.num_processes, "records": dataset.n_records, "rows": len(dataset),
            "skipped": dataset.errors, "truncated": dataset.truncation.records, "lora": lora, "four_bit": four_bit,
            "parameters": table, "config": dataclasses.asdict(tc)})
    state.wait_for_everyone()
    return TrainResult(stage, final_loss, seconds, trainer.state.global_step, model_dir, adapter_dir, history, table,
                       dataset.n_records, dataset.errors, dataset.truncation.records, heldout.curve if heldout else [])


def stage_model(cfg: Config, tc: TrainConfig, stage: str, run_dir: Path, lora: bool, four_bit: bool,
                fsdp: bool):
    """The stage's starting model, frozen for the stage (LoRA adapters added), and its processor."""
    transformers.set_seed(cfg.seed)
    model, processor = start_model(cfg, stage, run_dir, four_bit)
    freeze_for_stage(model, "1" if lora else stage)  # LoRA: the LM stays frozen, peft adds what trains
    if lora:
        model = add_lora(model, tc.lora_r, tc.lora_alpha, tc.lora_dropout, tc.gradient_checkpointing)
    fp32_master_weights(model, everything=fsdp)
    return model, processor


def heldout_curve(cfg: Config, tc: TrainConfig, stage: str, run_dir: Path, benchmark: str, processor,
                  out: Path, fsdp: bool) -> HeldoutCurve | None:
    """The held-out metric's callback when `heldout_every` asks for one (stage 2 and VQA: stage 1 learns
    captions, not answers), else None. The curve is an extra the tiny preset turns on: where it cannot be
    measured (records given by hand without a tiny world, FSDP) the stage trains without it and says why."""
    if tc.heldout_every <= 0 or stage == "1":
        return None
    why, items = None, []
    if fsdp:
        why = "FSDP shards the model over the processes and the main process alone cannot answer with it"
    else:
        try:
            items = heldout_items(cfg, run_dir, benchmark, tc.heldout_questions)
        except FileNotFoundError as e:
            why = str(e)
    if why is not None:
        if PartialState().is_main_process:
            print(f"no held-out curve: {why} (set {STAGE_CONFIGS[stage]}.heldout_every=0 to silence this)")
        return None
    return HeldoutCurve(items, processor, tc.heldout_every, out / HELDOUT_FILE)


def stage_dataset(cfg: Config, tc: TrainConfig, stage: str, records: str | Path,
                  image_folder: str | Path, processor, out: Path) -> ConversationDataset:
    """The stage's records tokenised with its template; one image's questions joined
    into one conversation, or packed into rows that encode the image once, if asked."""
    if tc.pack_questions and tc.join_questions:
        raise ValueError("join_questions and pack_questions both group an image's questions: set one of them")
    if tc.pack_questions and cfg.model.attn_implementation != "sdpa":
        raise ValueError(f"pack_questions needs model.attn_implementation='sdpa' (its rows carry a 4D attention "
                         f"mask), got {cfg.model.attn_implementation!r}")
    rows = load_records(records)
    if tc.join_questions:
        rows = join_by_image(rows, cfg.seed)
    dataset = ConversationDataset(
        rows, processor, tc.template or DEFAULT_TEMPLATE[stage], tc.max_length, image_folder,
        skip_bad=tc.skip_bad, source=str(records), image_cache=out / "image_cache" if tc.image_cache else None,
        image_size=image_input_size(processor))
    if tc.pack_questions:
        image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
        dataset.items = pack_by_image(dataset.items, tc.pack_questions, image_id, cfg.seed)
    return dataset


def stage_trainer(cfg: Config, tc: TrainConfig, stage: str, model, processor,
                  dataset: ConversationDataset, features: VisionFeatureCache | None, out: Path,
                  callbacks: list | None, progress: bool) -> LlavaTrainer:
    """The Trainer for one stage; the projector gets its own learning rate
    where the LM trains beside it."""
    trainer = LlavaTrainer(
        model=model, args=training_arguments(tc, cfg, out / "checkpoints", progress),
        train_dataset=dataset, data_collator=LlavaCollator(processor, features),
        processing_class=processor.tokenizer,
        callbacks=[LogLastStep(), *(callbacks or [])],
        projector_lr=tc.projector_lr if stage != "1" else None)
    if not progress:  # without a progress bar the Trainer prints every log line; the loss is in loss_history.json
        trainer.remove_callback(PrinterCallback)
    else:  # one text progress bar, in a notebook too (not an HTML table with a row per logged loss)
        for default in (NotebookProgressCallback, ProgressCallback):
            trainer.remove_callback(default)
        trainer.add_callback(StepProgress())
    return trainer


def last_checkpoint(out: Path, stage: str) -> str | None:
    """The Trainer checkpoint --resume continues from; None (and a note) when there is none yet."""
    folder = out / "checkpoints"
    checkpoint = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    if checkpoint is None:
        print(f"no checkpoint under {folder}: starting stage {stage} from the beginning")
    return checkpoint


def save_trained(cfg: Config, stage: str, run_dir: Path, out: Path, trainer: Trainer, processor,
                 lora: bool, fsdp: bool) -> tuple[Path, Path | None]:
    """Save what trained under `out`: the adapter (LoRA) or the model, and a plain model/ for
    LoRA and 4-bit runs so that the next stage and evaluation load it with plain transformers.
    Returns (model_dir, adapter_dir)."""
    model_dir, adapter_dir = out / "model", (out / "adapter" if lora else None)
    if lora:
        trainer.save_model(str(adapter_dir))
    elif not is_4bit(trainer.model):
        # the float32 master weights are saved in the configured dtype (FSDP gathers its own)
        if not fsdp:
            trainer.model.to(resolve_dtype(cfg.model.dtype, resolve_device(cfg.device)))
        trainer.save_model(str(model_dir))
    if trainer.is_world_process_zero():
        if lora or is_4bit(trainer.model):
            export_plain(cfg, stage, run_dir, trainer.model, adapter_dir, model_dir)
        processor.save_pretrained(str(model_dir))
    return model_dir, adapter_dir


def finished_result(out: Path, tc: TrainConfig) -> TrainResult | None:
    """The result of a stage that already ran to its end with this config (its
    summary.json reached max_steps), else None. A stage stopped early, or one whose step
    count changed, is not finished."""
    if not (out / "summary.json").is_file() or not (out / "model" / "config.json").is_file():
        return None
    summary = json.loads((out / "summary.json").read_text())
    same_plan = summary.get("config", {}).get("epochs") == tc.epochs and "max_steps" in summary
    planned = tc.max_steps if tc.max_steps > 0 else (summary["max_steps"] if same_plan else None)
    if planned is None or summary.get("steps", 0) < planned:
        return None
    return result_from_summary(out)


def result_from_summary(out: Path) -> TrainResult:
    """A TrainResult read back from a stage folder (a finished stage, or one
    trained by a launched process)."""
    summary = json.loads((out / "summary.json").read_text())
    history = json.loads((out / "loss_history.json").read_text())
    adapter_dir = out / "adapter" if summary["lora"] else None
    # a curve left by an earlier run of this folder is not this run's
    measured = summary["config"].get("heldout_every", 0) > 0 and (out / HELDOUT_FILE).is_file()
    heldout = json.loads((out / HELDOUT_FILE).read_text()) if measured else []
    return TrainResult(summary["stage"], summary["final_loss"], summary["seconds"], summary["steps"],
                       out / "model", adapter_dir, history, summary["parameters"],
                       summary["records"], summary["skipped"], summary["truncated"], heldout)


def export_plain(cfg: Config, stage: str, run_dir: Path, trained, adapter_dir: Path | None,
                 model_dir: Path) -> None:
    """Save a plain full-precision model that transformers loads without peft or bitsandbytes: the
    starting model reloaded un-quantised on the CPU, with the adapter merged (LoRA) or the trained
    projector copied (stage 1)."""
    with quiet_transformers():
        base, _ = start_model(cfg, stage, run_dir, four_bit=False)
    if adapter_dir is not None:
        base = merge_adapter(base.to("cpu"), adapter_dir)
    else:
        projector = trained.model.multi_modal_projector.state_dict()
        load_projector(base, {k: v.to("cpu") for k, v in projector.items()})
    base.save_pretrained(str(model_dir))

