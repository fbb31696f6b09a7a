"""Compose a LLaVA model from a vision checkpoint and a language-model checkpoint.

The result is always transformers' `LlavaForConditionalGeneration` + `LlavaProcessor`, so what we
save loads with `AutoModelForImageTextToText` / `AutoProcessor`. As in LLaVA: CLIP features from the
second-to-last layer with CLS dropped, a `linear` (v1.0) or `mlp2x_gelu` (v1.5) projector, the
`<image>` token added to the tokenizer, images padded to square with the mean colour (v1.5), and the
mistral_instruct chat template.
"""

import contextlib
from pathlib import Path

import torch
import transformers
from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText,
                          AutoProcessor, AutoTokenizer, CLIPConfig, CLIPVisionConfig,
                          CLIPVisionModel, LlavaConfig, LlavaForConditionalGeneration,
                          LlavaImageProcessorPil, LlavaProcessor)
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from ..config import ModelConfig
from ..data.formats import IMAGE_TOKEN
from .chat_template import MISTRAL_INSTRUCT_TEMPLATE
from .placement import join_towers, quantization_config, resolve_device, resolve_dtype
from .shapes import KNOWN_LM, KNOWN_VISION

# our name -> LlavaConfig.projector_hidden_act
PROJECTORS = {"linear": "linear", "mlp2x_gelu": "gelu"}


@contextlib.contextmanager
def quiet_transformers():
    """Silence expected load reports (CLIPVisionModel from a full CLIPModel checkpoint lists the
    text tower as unexpected; resizing for `<image>` explains its initialisation) and per-tensor
    loading bars."""
    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        with no_transformers_bars():
            yield
    finally:
        transformers.logging.set_verbosity(level)


@contextlib.contextmanager
def no_transformers_bars():
    """transformers' own progress bars off (loading weights, writing model shards): inside training a
    checkpoint's bar would break the line of the step bar. Hub downloads keep theirs."""
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()


def vision_config_of(vision: str) -> CLIPVisionConfig:
    """The CLIP vision config of a checkpoint (a CLIPModel or a CLIPVisionModel), or of a known hub
    name offline."""
    if not Path(vision).exists() and vision in KNOWN_VISION:
        return KNOWN_VISION[vision]()
    return _vision_part(AutoConfig.from_pretrained(vision))


def _vision_part(config) -> CLIPVisionConfig:
    if isinstance(config, CLIPConfig):
        return config.vision_config
    if isinstance(config, CLIPVisionConfig):
        return config
    raise ValueError(f"the vision checkpoint must be a CLIP model, got model_type "
                     f"{config.model_type!r}")


def lm_config_of(lm: str):
    if not Path(lm).exists() and lm in KNOWN_LM:
        return KNOWN_LM[lm]()
    return AutoConfig.from_pretrained(lm)


def llava_config(vision_config: CLIPVisionConfig, text_config, image_token_id: int,
                 projector: str = "mlp2x_gelu", vision_feature_layer: int = -2,
                 vision_feature_select_strategy: str = "default",
                 pad_token_id: int | None = None) -> LlavaConfig:
    if projector not in PROJECTORS:
        raise ValueError(f"unknown projector {projector!r}: choose one of {', '.join(PROJECTORS)}")
    if vision_feature_select_strategy not in ("default", "full"):
        raise ValueError(f"vision_feature_select_strategy must be 'default' (drop CLS) or 'full', "
                         f"got {vision_feature_select_strategy!r}")
    n_layers = vision_config.num_hidden_layers
    if not -n_layers <= vision_feature_layer <= n_layers:
        raise ValueError(f"vision_feature_layer {vision_feature_layer} is outside the tower's "
                         f"{n_layers} layers")
    n_patches = (vision_config.image_size // vision_config.patch_size) ** 2
    return LlavaConfig(
        vision_config=vision_config.to_dict(),
        text_config=text_config.to_dict(),
        image_token_id=image_token_id,
        projector_hidden_act=PROJECTORS[projector],
        vision_feature_layer=vision_feature_layer,
        vision_feature_select_strategy=vision_feature_select_strategy,
        image_seq_length=n_patches + (vision_feature_select_strategy == "full"),
        multimodal_projector_bias=True,
        pad_token_id=pad_token_id,
        tie_word_embeddings=getattr(text_config, "tie_word_embeddings", False),
    )


def new_projector(config: LlavaConfig,
                  dtype: torch.dtype = torch.float32) -> LlavaMultiModalProjector:
    """A freshly initialised projector. For `linear` (v1.0) the second layer is the identity and
    stays frozen, so the checkpoint keeps transformers' two-layer layout yet computes one linear
    map."""
    projector = LlavaMultiModalProjector(config).to(dtype)
    if config.projector_hidden_act == "linear":
        with torch.no_grad():
            projector.linear_2.weight.copy_(torch.eye(config.text_config.hidden_size, dtype=dtype))
            projector.linear_2.bias.zero_()
        projector.linear_2.requires_grad_(False)
    return projector


def prepare_tokenizer(lm: str):
    """The LM's tokenizer with the `<image>` token, a pad token and
    the mistral_instruct template."""
    tokenizer = AutoTokenizer.from_pretrained(lm)
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tokenizer.pad_token is None:
        # Mistral has no pad token; LLaVA v1.5 pads with <unk>.
        if tokenizer.unk_token is not None:
            tokenizer.pad_token = tokenizer.unk_token
        else:
            tokenizer.add_special_tokens({"pad_token": "<pad>"})
    tokenizer.chat_template = MISTRAL_INSTRUCT_TEMPLATE
    return tokenizer


def image_processor_for(vision: str, vision_config: CLIPVisionConfig,
                        pad_to_square: bool) -> LlavaImageProcessorPil:
    """CLIP's preprocessing (read from the vision checkpoint) plus v1.5's pad-to-square with the
    mean colour.

    Every image is opened as RGB (`images.load_image`) and padded with CLIP's mean colour, (122,
    116, 104) out of 255, the image centred. LLaVA-Med v1.5 differs for files stored as greyscale
    (mode "L", most X-rays): it pads those with one grey, 114 (the mean of the three), and places
    the image 0 or 1 pixel off-centre at random. We keep one rule for all images (training and
    answering see the same); a converted official checkpoint sees a slightly tinted border on
    greyscale images that it was trained to see as grey."""
    try:
        processor = LlavaImageProcessorPil.from_pretrained(vision, do_pad=pad_to_square)
    except OSError:
        raise FileNotFoundError(f"{vision}: no preprocessor_config.json; save the CLIP image "
                                "processor beside the vision weights "
                                "(CLIPImageProcessorPil(...).save_pretrained(dir))") from None
    crop = processor.crop_size if processor.do_center_crop else processor.size
    if isinstance(crop, dict):
        side = crop.get("height", crop.get("shortest_edge"))
    else:
        side = getattr(crop, "height", None)
    if side != vision_config.image_size:
        raise ValueError(f"{vision}: the image processor makes {side} px images but the vision "
                         f"tower expects {vision_config.image_size} px")
    return processor


def compose_llava(
    vision: str,
    lm: str,
    projector: str = "mlp2x_gelu",
    vision_feature_layer: int = -2,
    vision_feature_select_strategy: str = "default",
    pad_to_square: bool = True,
    dtype: str | torch.dtype = "float32",
    load_in_4bit: bool = False,
    attn_implementation: str = "sdpa",
    device: str | torch.device | None = None,
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """Load both towers with `from_pretrained` (local folders or hub names) and join them with a new
    projector, on one device: `device` ("auto" = the GPU when there is one), or by default where the
    LM loads (the CPU; a 4-bit LM lands on the GPU). "auto" dtype follows the device."""
    device = None if device is None else resolve_device(device)
    dtype = resolve_dtype(dtype, device or "cpu")
    tokenizer = prepare_tokenizer(lm)
    vision_config = vision_config_of(vision)
    image_processor = image_processor_for(vision, vision_config, pad_to_square)

    lm_kwargs = dict(dtype=dtype, attn_implementation=attn_implementation)
    if device is not None:
        lm_kwargs["device_map"] = {"": device}
    if load_in_4bit:
        lm_kwargs["quantization_config"] = quantization_config(dtype)
    with quiet_transformers():
        language_model = AutoModelForCausalLM.from_pretrained(lm, **lm_kwargs)
        if len(tokenizer) > language_model.get_input_embeddings().num_embeddings:
            language_model.resize_token_embeddings(len(tokenizer))  # rows for <image> (and <pad>)
        vision_tower = CLIPVisionModel.from_pretrained(vision, dtype=dtype,
                                                       attn_implementation=attn_implementation)

    config = llava_config(vision_config, language_model.config,
                          tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), projector,
                          vision_feature_layer, vision_feature_select_strategy,
                          tokenizer.pad_token_id)
    config.text_config.vocab_size = language_model.get_input_embeddings().num_embeddings
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    # Swap the loaded towers in place of the meta-device placeholders; only the projector is new.
    model.model.vision_tower = vision_tower
    model.model.language_model = language_model.model
    model.lm_head = language_model.lm_head
    model.model.multi_modal_projector = new_projector(config, dtype)
    model.generation_config = language_model.generation_config
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    still_meta = ([n for n, p in model.named_parameters() if p.is_meta]
                  + [n for n, b in model.named_buffers() if b.is_meta])
    if still_meta:
        raise RuntimeError(f"composition left parameters on the meta device: {still_meta[:5]}")
    join_towers(model)
    if load_in_4bit:
        model.is_loaded_in_4bit = True
    model.config._attn_implementation = attn_implementation

    return model, llava_processor(image_processor, tokenizer, vision_config,
                                  vision_feature_select_strategy)


def llava_processor(image_processor, tokenizer, vision_config: CLIPVisionConfig,
                    vision_feature_select_strategy: str = "default") -> LlavaProcessor:
    """The processor that expands `<image>` into one token per patch and formats chats as
    mistral_instruct."""
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=vision_config.patch_size,
        vision_feature_select_strategy=vision_feature_select_strategy,
        num_additional_image_tokens=1,  # CLIP's CLS; the "default" strategy then drops it again
        chat_template=MISTRAL_INSTRUCT_TEMPLATE,
        image_token=IMAGE_TOKEN,
    )


def compose_from_config(cfg: ModelConfig, device: str | torch.device | None = None,
                        ) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    return compose_llava(cfg.vision, cfg.lm, cfg.projector, cfg.vision_feature_layer,
                         cfg.vision_feature_select_strategy, cfg.pad_to_square, cfg.dtype,
                         cfg.load_in_4bit, cfg.attn_implementation, device)


def meta_llava(vision: str, lm: str, projector: str = "mlp2x_gelu",
               extra_tokens: int = 1) -> LlavaForConditionalGeneration:
    """The composed architecture on the meta device (no memory, no weights): for parameter counts at
    7B scale."""
    text_config = lm_config_of(lm)
    text_config.vocab_size += extra_tokens  # the added <image> token
    config = llava_config(vision_config_of(vision), text_config, text_config.vocab_size - 1,
                          projector)
    with torch.device("meta"):
        return LlavaForConditionalGeneration(config)


def load_llava(path: str | Path, dtype: str | torch.dtype = "auto",
               device: str | torch.device | None = "auto", load_in_4bit: bool = False,
               attn_implementation: str | None = None):
    """Load a checkpoint the project saved, with the plain transformers auto classes. Defaults: the
    GPU in bfloat16 when there is one, else the CPU in float32. `load_in_4bit`: the LM in nf4 (a 7B
    model in about 5 GB of GPU memory instead of 15). `device=None` leaves the model where
    from_pretrained puts it (the CPU; for 4-bit, bitsandbytes' GPU)."""
    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path}: not a saved model folder (no config.json)")
    device = None if device is None else resolve_device(device)
    kwargs = dict(dtype=resolve_dtype(dtype, device or "cpu"))
    if device is not None:
        kwargs["device_map"] = {"": device}
    if load_in_4bit:
        kwargs["quantization_config"] = quantization_config(kwargs["dtype"])
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    return model, AutoProcessor.from_pretrained(path)


def load_projector(model: LlavaForConditionalGeneration, state_dict: dict) -> None:
    """Put trained projector weights (e.g. stage 1's) into a model, checking that the shapes fit its
    towers."""
    projector = model.model.multi_modal_projector
    expected = {k: tuple(v.shape) for k, v in projector.state_dict().items()}
    got = {k.split("multi_modal_projector.")[-1]: tuple(v.shape) for k, v in state_dict.items()}
    if expected != got:
        raise ValueError(f"projector weights do not fit this model (vision "
                         f"{model.config.vision_config.hidden_size} -> LM "
                         f"{model.config.text_config.hidden_size}): expected {expected}, got {got}")
    projector.load_state_dict({k.split("multi_modal_projector.")[-1]: v
                               for k, v in state_dict.items()})
