"""Where a model runs and in what precision: the one place that turns "auto" into a device and a
dtype, builds the 4-bit config, and keeps the towers of a composed model on one device. Training,
evaluation, chat, curation and the notebooks all ask here, so they agree."""

import torch
import transformers

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Left in their own dtype under 4-bit: transformers 5 matches these against the start of each
# module's path, so they name the whole vision tower, the projector and the output head (the LM's
# own head too when it loads alone).
NOT_QUANTISED = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """"auto": the current GPU when torch sees one, else the CPU. A bare "cuda" gets the current
    GPU's index, so devices compare equal to where tensors really are (cuda:0 under one GPU, the
    local rank's under a launcher)."""
    try:
        device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: torch sees no CUDA GPU here (use auto or cpu)")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    return device


def resolve_dtype(name: str | torch.dtype, device: str | torch.device = "cpu") -> torch.dtype:
    """"auto": bfloat16 on a GPU (float16 where the GPU has no bfloat16), float32 on the CPU, where
    bfloat16 matmuls are slower on most chips and lose precision for nothing."""
    if isinstance(name, torch.dtype):
        return name
    if name == "auto":
        if torch.device(device).type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}: use auto, {', '.join(DTYPES)}") from None


def quantization_config(dtype: str | torch.dtype = "bfloat16") -> transformers.BitsAndBytesConfig:
    """QLoRA's 4-bit: nf4 weights with double quantisation, matmuls in `dtype` (bfloat16 when
    that is float32: the 4-bit kernels are built for 16-bit compute); the vision tower,
    projector and head stay unquantised."""
    dtype = resolve_dtype(dtype)
    return transformers.BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype if dtype != torch.float32 else torch.bfloat16,
        llm_int8_skip_modules=NOT_QUANTISED)


def model_device(model) -> torch.device:
    """Where a model's inputs go: the device of its input embeddings. Unlike `model.device` (the
    first parameter's, the vision tower's in a Llava model) it stays right when the LM is placed
    apart, by bitsandbytes or a device map."""
    return model.get_input_embeddings().weight.device


def join_towers(model) -> torch.device:
    """Move a Llava model's vision tower and projector to the LM's input device: a 4-bit LM loads
    straight onto the GPU while CLIP and the new projector start on the CPU. Returns that device."""
    device = model_device(model)
    model.model.vision_tower.to(device)
    model.model.multi_modal_projector.to(device)
    return device

