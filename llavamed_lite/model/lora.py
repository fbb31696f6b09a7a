"""LoRA and QLoRA for stage 2 / VQA: adapters on the language model only, the projector trained in
full.

peft matches `target_modules` names against every module, and CLIP's attention also has
`q_proj`/`k_proj`/`v_proj`/ `out_proj`: a plain list would put adapters in the vision tower. We
target the LM by a regex on the full module name instead. The projector is saved with the adapter
(`modules_to_save`), as LLaVA's LoRA recipe trains it too. QLoRA (LLaVA's `bits=4`): the LM was
loaded 4-bit nf4 by bitsandbytes; `prepare_model_for_kbit_training` casts the remaining float
weights to fp32 for stable updates and enables input gradients for gradient checkpointing.
"""

from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

LM_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LM_TARGETS = r".*language_model.*\.(" + "|".join(LM_PROJECTIONS) + r")$"


def lora_config(r: int, alpha: int, dropout: float, targets: str = LM_TARGETS) -> LoraConfig:
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
                      bias="none", modules_to_save=["multi_modal_projector"], task_type="CAUSAL_LM")


def is_4bit(model: torch.nn.Module) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False)) or any(
        p.__class__.__name__ == "Params4bit" for p in model.parameters())


def add_lora(model: torch.nn.Module, r: int, alpha: int, dropout: float,
             gradient_checkpointing: bool = False) -> PeftModel:
    """Wrap a Llava model with LoRA adapters on its LM projections; the vision tower stays frozen
    and adapter-free."""
    if is_4bit(model):
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing)
    peft_model = get_peft_model(model, lora_config(r, alpha, dropout))
    wrapped = [n for n, m in peft_model.named_modules()
               if hasattr(m, "lora_A") and "vision_tower" in n]
    if wrapped:
        raise RuntimeError(f"LoRA adapters landed in the vision tower: {wrapped[:3]}")
    return peft_model


def merge_adapter(base: torch.nn.Module, adapter_dir: str | Path) -> torch.nn.Module:
    """A plain (un-quantised) model with the adapter and the trained projector folded in: what plain
    transformers loads without peft."""
    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
