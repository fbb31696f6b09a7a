"""Which parts train in each stage (as in LLaVA-Med): stage 1 only the projector; stage 2 and VQA
fine-tuning the projector and the language model; the vision tower never."""

import torch
import torch.nn as nn

COMPONENTS = ("vision_tower", "multi_modal_projector", "language_model", "lm_head")
TRAINABLE = {
    "1": ("multi_modal_projector",),
    "2": ("multi_modal_projector", "language_model", "lm_head"),
    "vqa": ("multi_modal_projector", "language_model", "lm_head"),
}


def component_of(name: str) -> str:
    """The component a parameter name belongs to (works through peft's
    base_model.model. prefix too)."""
    for component in COMPONENTS:
        if f"{component}." in name or name.startswith(component):
            return component
    raise ValueError(f"parameter {name!r} belongs to no known component")


def freeze_for_stage(model: nn.Module, stage: str | int) -> list[dict]:
    """Set requires_grad for `stage` ("1", "2" or "vqa") and return
    the trainable-parameter table."""
    stage = str(stage)
    if stage not in TRAINABLE:
        raise ValueError(f"unknown stage {stage!r}: choose one of {', '.join(TRAINABLE)}")
    linear_projector = getattr(model.config, "projector_hidden_act", None) == "linear"
    for name, param in model.named_parameters():
        trainable = component_of(name) in TRAINABLE[stage]
        if linear_projector and "multi_modal_projector.linear_2" in name:
            trainable = False  # the identity layer of a `linear` projector (compose.new_projector)
        if not param.dtype.is_floating_point:
            # 4-bit (QLoRA) weights are packed integers: LoRA adapters train instead
            trainable = False
        param.requires_grad_(trainable)
    return parameter_table(model)


def fp32_master_weights(model: nn.Module, everything: bool = False) -> int:
    """Cast trainable float parameters (all float parameters with `everything`)
    to float32 and return how many.

    Under bf16 autocast the matmuls still run in bf16, but AdamW's update (lr 2e-5 x ~1 per
    element) is below bf16's resolution for most weights: kept in bf16, one step changed only
    22% of the LM's weights. Frozen weights may stay in bf16. FSDP flattens each wrap unit
    into one tensor of one dtype, so under FSDP everything is cast (its mixed-precision policy
    casts back to bf16 for compute)."""
    cast = 0
    for param in model.parameters():
        if param.dtype in (torch.bfloat16, torch.float16) and (everything or param.requires_grad):
            param.data = param.data.float()
            cast += param.numel()
    return cast


def parameter_table(model: nn.Module) -> list[dict]:
    """Trainable and total parameters per component; tied weights counted once."""
    rows = {c: {"component": c, "trainable": 0, "total": 0} for c in COMPONENTS}
    seen = set()
    act = getattr(getattr(model, "config", None), "projector_hidden_act", None)
    linear_projector = act == "linear"
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen or (linear_projector and "multi_modal_projector.linear_2" in name):
            # tied weights once; a `linear` projector's fixed identity layer is not a real parameter
            continue
        seen.add(id(param))
        row = rows[component_of(name)]
        # 4-bit packs two per byte
        n = param.numel() * (2 if param.__class__.__name__ == "Params4bit" else 1)
        row["total"] += n
        row["trainable"] += n if param.requires_grad else 0
    table = [r for r in rows.values() if r["total"]]
    table.append({"component": "total", "trainable": sum(r["trainable"] for r in table),
                  "total": sum(r["total"] for r in table)})
    return table


def format_parameter_table(table: list[dict]) -> str:
    lines = [f"{'component':<24}{'trainable':>14}{'total':>16}{'share':>8}"]
    for r in table:
        share = r["trainable"] / r["total"] if r["total"] else 0.0
        lines.append(f"{r['component']:<24}{r['trainable']:>14,}{r['total']:>16,}{share:>8.1%}")
    return "\n".join(lines)


def model_summary(model: nn.Module) -> dict:
    """Parameter counts per tower and the number of image tokens: one
    row of the architecture table."""
    rows = {r["component"]: r["total"] for r in parameter_table(model)}
    return {"vision tower": rows.get("vision_tower", 0),
            "projector": rows.get("multi_modal_projector", 0),
            "language model": rows.get("language_model", 0) + rows.get("lm_head", 0),
            "total": rows["total"], "image tokens": model.config.image_seq_length}
