"""Convert the official LLaVA-Med v1.5 checkpoint into transformers' Llava format.

    llavamed-lite convert-official --src llava-med-v1.5-mistral-7b --vision openai/clip-vit-large-patch14-336 \\
        --out runs/official/model

The official release (`model_type: llava_mistral`) needs LLaVA's own code to load. Its folder holds
a config.json with the Mistral fields plus LLaVA's `mm_*` fields, the tokenizer, and safetensors
shards in which the Mistral LM sits under `model.*` / `lm_head.weight`, the projector under
`model.mm_projector.{0,2}` and, sometimes, a copy of the CLIP tower under `model.vision_tower.*`
(ignored: the tower comes from --vision, as in LLaVA).

The output is a `LlavaForConditionalGeneration` + `LlavaProcessor` folder:
`AutoModelForImageTextToText` loads it, and `llavamed-lite evaluate` / `chat` run on it
unchanged. Tensors are streamed from safetensors one at a time into output shards (never
pickle, never the whole model in memory), the folder is written beside `--out` and renamed
into place only when complete.
"""

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm
from transformers import (CLIPVisionModel, GenerationConfig, LlavaForConditionalGeneration,
                          MistralConfig, MistralForCausalLM)

from ..cli import number
from ..data.formats import IMAGE_TOKEN
from ..io import atomic_write_json, read_json
from .compose import (image_processor_for, llava_config, llava_processor, new_projector,
                      prepare_tokenizer, quiet_transformers, vision_config_of)
from .placement import resolve_dtype

# Mistral fields of the official config.json that make the text config; the rest
# are LLaVA's (mm_*, tune_*, ...).
TEXT_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
               "num_attention_heads", "num_key_value_heads", "head_dim", "hidden_act",
               "max_position_embeddings", "initializer_range", "rms_norm_eps", "pad_token_id",
               "bos_token_id", "eos_token_id", "tie_word_embeddings", "rope_theta", "rope_scaling",
               "rope_parameters", "sliding_window", "attention_dropout")
REQUIRED_TEXT_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                        "num_attention_heads")
SELECT_FEATURE = {"patch": "default", "cls_patch": "full"}  # LLaVA's name -> transformers' strategy
ASPECT_RATIO = {"pad": True, "square": False, None: False}  # LLaVA's image_aspect_ratio -> pad
IGNORED_PREFIXES = ("model.vision_tower.",)  # a CLIP copy in some releases; --vision is loaded
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)  # buffers older saves kept; the model recomputes them
SHARD_BYTES = 2 * 2**30


class ConversionError(ValueError):
    """The source is not an official LLaVA-Med v1.5 checkpoint we can
    convert; the message says why."""


def official_options(config: dict, where: str = "config.json") -> dict:
    """LLaVA's multimodal settings from the official config, mapped to ours,
    refusing what Llava cannot express."""
    if config.get("model_type") != "llava_mistral":
        raise ConversionError(f"{where}: model_type is {config.get('model_type')!r}, expected "
                              "'llava_mistral' (the official LLaVA-Med v1.5 checkpoint)")
    missing = [k for k in (*REQUIRED_TEXT_FIELDS, "mm_hidden_size") if k not in config]
    if missing:
        raise ConversionError(f"{where}: missing field(s) {missing}")
    projector = config.get("mm_projector_type", "linear")
    if projector not in ("mlp2x_gelu", "linear"):
        raise ConversionError(f"{where}: mm_projector_type {projector!r} is not supported "
                              "(mlp2x_gelu or linear)")
    feature = config.get("mm_vision_select_feature", "patch")
    if feature not in SELECT_FEATURE:
        raise ConversionError(f"{where}: mm_vision_select_feature {feature!r} is not supported "
                              "(patch or cls_patch)")
    aspect = config.get("image_aspect_ratio")
    if aspect not in ASPECT_RATIO:
        raise ConversionError(f"{where}: image_aspect_ratio {aspect!r} is not supported "
                              "(pad or square)")
    if config.get("mm_use_im_start_end") or config.get("mm_use_im_patch_token"):
        raise ConversionError(f"{where}: mm_use_im_start_end / mm_use_im_patch_token are not "
                              "supported by Llava")
    layer = config.get("mm_vision_select_layer", -2)
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise ConversionError(f"{where}: mm_vision_select_layer must be an integer, got {layer!r}")
    return {"projector": projector, "vision_feature_layer": layer,
            "vision_feature_select_strategy": SELECT_FEATURE[feature],
            "pad_to_square": ASPECT_RATIO[aspect], "mm_hidden_size": config["mm_hidden_size"],
            "vision": config.get("mm_vision_tower")}


def text_config_of(config: dict) -> MistralConfig:
    text = MistralConfig(**{k: config[k] for k in TEXT_FIELDS if k in config})
    text.use_cache = True
    return text


def source_tensors(src: Path) -> dict[str, Path]:
    """Every tensor name of the checkpoint -> the safetensors file holding it
    (from the index, or the files)."""
    index = src / "model.safetensors.index.json"
    if index.exists():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ConversionError(f"{index}: no 'weight_map' object")
        files = {name: src / file for name, file in weight_map.items()}
        absent = sorted({str(p) for p in files.values() if not p.is_file()})
        if absent:
            raise ConversionError(f"{index}: names shard(s) that do not exist: {absent}")
        return files
    shards = sorted(src.glob("*.safetensors"))
    if not shards:
        pickled = (sorted(p.name for p in src.glob("*.bin"))
                   + sorted(p.name for p in src.glob("*.pt")))
        hint = (f" (found {pickled}: pickle files are not read; re-save them as safetensors)"
                if pickled else "")
        raise ConversionError(f"{src}: no .safetensors weights{hint}")
    files = {}
    for shard in shards:
        for name in _open(shard).keys():
            files[name] = shard
    return files


def _open(path: Path):
    try:
        return safe_open(str(path), framework="pt")
    except Exception as e:  # safetensors raises its own error types for truncated or foreign files
        raise ConversionError(f"{path}: not a readable safetensors file ({e})") from None


def expected_source_shapes(text_config: MistralConfig, options: dict) -> dict[str, tuple]:
    """Tensor names and shapes the official checkpoint must hold: the Mistral LM's
    own names, plus the projector."""
    with torch.device("meta"):
        lm = MistralForCausalLM(text_config)
    shapes = {k: tuple(v.shape) for k, v in lm.state_dict().items()}
    hidden, mm_hidden = text_config.hidden_size, options["mm_hidden_size"]
    if options["projector"] == "mlp2x_gelu":
        shapes.update({"model.mm_projector.0.weight": (hidden, mm_hidden),
                       "model.mm_projector.0.bias": (hidden,),
                       "model.mm_projector.2.weight": (hidden, hidden),
                       "model.mm_projector.2.bias": (hidden,)})
    else:
        shapes.update({"model.mm_projector.weight": (hidden, mm_hidden),
                       "model.mm_projector.bias": (hidden,)})
    return shapes


def check_tensors(files: dict[str, Path], expected: dict[str, tuple], src: Path) -> None:
    """Refuse a checkpoint with missing, unexpected or mis-shaped tensors, listing all of them."""
    present = {n for n in files
               if not n.startswith(IGNORED_PREFIXES) and not n.endswith(IGNORED_SUFFIXES)}
    problems = []
    missing, unexpected = sorted(set(expected) - present), sorted(present - set(expected))
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
    handles = {}
    wrong = []
    for name in sorted(present & set(expected)):
        handle = handles.setdefault(files[name], _open(files[name]))
        shape = tuple(handle.get_slice(name).get_shape())
        if shape != expected[name]:
            wrong.append(f"{name} {shape} (expected {expected[name]})")
    if wrong:
        problems.append(f"wrong shapes ({len(wrong)}): {', '.join(wrong)}")
    if problems:
        raise ConversionError(f"{src}: not the official LLaVA-Med v1.5 layout for its "
                              "config.json:\n  " + "\n  ".join(problems))


def target_name(name: str) -> str:
    """Official tensor name -> LlavaForConditionalGeneration's."""
    if name == "lm_head.weight":
        return name
    for old, new in (("model.mm_projector.0.", "model.multi_modal_projector.linear_1."),
                     ("model.mm_projector.2.", "model.multi_modal_projector.linear_2."),
                     ("model.mm_projector.", "model.multi_modal_projector.linear_1.")):
        if name.startswith(old):
            return new + name[len(old):]
    return "model.language_model." + name[len("model."):]


class ShardWriter:
    """Collect tensors into safetensors shards of about `max_bytes`, writing
    each as soon as it is full."""

    def __init__(self, folder: Path, max_bytes: int = SHARD_BYTES):
        self.folder, self.max_bytes = folder, max_bytes
        self.current: dict[str, torch.Tensor] = {}
        self.size = self.total = 0
        self.shards: list[list[str]] = []

    def add(self, name: str, tensor: torch.Tensor) -> None:
        nbytes = tensor.numel() * tensor.element_size()
        if self.current and self.size + nbytes > self.max_bytes:
            self.flush()
        self.current[name] = tensor.contiguous()
        self.size += nbytes
        self.total += nbytes

    def flush(self) -> None:
        if self.current:
            save_file(self.current, str(self.folder / f"part-{len(self.shards):05d}.safetensors"),
                      metadata={"format": "pt"})
            self.shards.append(list(self.current))
            self.current, self.size = {}, 0

    def finish(self) -> list[str]:
        """Name the shards as transformers does (an index when there are
        several); return every tensor name."""
        self.flush()
        n = len(self.shards)
        if n == 1:
            (self.folder / "part-00000.safetensors").rename(self.folder / "model.safetensors")
        else:
            weight_map = {}
            for i, names in enumerate(self.shards):
                final = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
                (self.folder / f"part-{i:05d}.safetensors").rename(self.folder / final)
                weight_map.update({name: final for name in names})
            atomic_write_json(self.folder / "model.safetensors.index.json",
                              {"metadata": {"total_size": self.total},
                               "weight_map": dict(sorted(weight_map.items()))})
        return [name for names in self.shards for name in names]


def load_tokenizer(source: str):
    """The release's tokenizer with `<image>`, a pad token and the chat
    template (`prepare_tokenizer`)."""
    try:
        return prepare_tokenizer(source)
    except (OSError, ValueError, ImportError) as e:
        raise ConversionError(
            f"{source}: could not load the tokenizer ({type(e).__name__}: {e}). A folder with only "
            "tokenizer.model (SentencePiece) needs `pip install sentencepiece`; or pass "
            "--tokenizer "
            "mistralai/Mistral-7B-Instruct-v0.2 (the same vocabulary)") from None


def _grow_rows(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    """Append rows for the added tokens (<image>), set to the mean row, as transformers' resize
    does on average. The <image> embedding is never used (image features replace it); its output
    row keeps its logit ordinary."""
    if rows <= 0:
        return tensor
    mean = tensor.float().mean(dim=0, keepdim=True).to(tensor.dtype)
    return torch.cat([tensor, mean.expand(rows, -1)], dim=0)


def convert_official(src: str | Path, vision: str | None, out: str | Path, dtype: str | None = None,
                     overwrite: bool = False, max_shard_bytes: int = SHARD_BYTES,
                     progress: bool = True, tokenizer: str | None = None) -> Path:
    """Write the Llava model + processor folder for the official checkpoint in `src`; return `out`.
    The tokenizer comes from `src` unless `tokenizer` names another folder or hub name with the
    same vocabulary (Mistral's)."""
    src, out = Path(src), Path(out)
    _check_paths(src, out, overwrite, max_shard_bytes)
    raw, options, vision, vision_config = _read_source(src, vision)
    out_dtype = resolve_dtype(dtype or raw.get("torch_dtype") or "float32")

    text_config = text_config_of(raw)
    files = source_tensors(src)
    check_tensors(files, expected_source_shapes(text_config, options), src)

    tokenizer = load_tokenizer(tokenizer or str(src))
    n_tokens = len(tokenizer)
    if n_tokens - 1 > text_config.vocab_size:
        raise ConversionError(f"{src}: the tokenizer has {n_tokens - 1} tokens but the weights "
                              f"only {text_config.vocab_size} rows (wrong tokenizer files?)")
    extra_rows = max(n_tokens - text_config.vocab_size, 0)
    config = llava_config(vision_config, text_config, tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                          options["projector"], options["vision_feature_layer"],
                          options["vision_feature_select_strategy"], tokenizer.pad_token_id)
    config.text_config.vocab_size = text_config.vocab_size + extra_rows
    config.dtype = out_dtype
    processor = llava_processor(image_processor_for(vision, vision_config, options["pad_to_square"]),
                                tokenizer, vision_config, options["vision_feature_select_strategy"])
    with quiet_transformers():  # before any writing: a missing or unreachable tower fails here
        tower = CLIPVisionModel.from_pretrained(vision, dtype=out_dtype)

    tmp = out.parent / f".{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        written = write_weights(tmp, files, tower, config, extra_rows, out_dtype, max_shard_bytes,
                                progress)
        del tower
        _check_complete(config, written)
        config.save_pretrained(tmp)
        _generation_config(src, text_config, tokenizer.pad_token_id).save_pretrained(tmp)
        processor.save_pretrained(tmp)
        atomic_write_json(tmp / "conversion.json",
                          {"source": str(src.resolve()), "vision": vision,
                           "source_model_type": raw["model_type"], **options})
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # never leave half a model behind
        raise
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def _check_paths(src: Path, out: Path, overwrite: bool, max_shard_bytes: int) -> None:
    """Refuse bad arguments before any slow step: reading the tower
    and the weights takes minutes."""
    if max_shard_bytes < 1:
        raise ValueError(f"the shard size must be positive, got {max_shard_bytes} bytes")
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"{src}: no config.json (expected the official LLaVA-Med v1.5 "
                                "folder)")
    # replacing `out` would delete the source
    if out.resolve() == src.resolve() or out.resolve().is_relative_to(src.resolve()) \
            or src.resolve().is_relative_to(out.resolve()):
        raise ValueError(f"--out {out} and --src {src} overlap (the same folder, or one inside the "
                         "other); write the converted model to a folder of its own")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty (pass overwrite=True / --overwrite "
                              "to replace it)")


def _read_source(src: Path, vision: str | None) -> tuple[dict, dict, str, object]:
    """The official config.json, its multimodal options, and the CLIP tower it names
    (or `vision`), checked to fit."""
    raw = read_json(src / "config.json")
    if not isinstance(raw, dict):
        raise ConversionError(f"{src / 'config.json'}: expected a JSON object")
    options = official_options(raw, str(src / "config.json"))
    vision = vision or options["vision"]
    if not vision:
        raise ConversionError(f"{src / 'config.json'}: no mm_vision_tower; pass the CLIP tower "
                              "with --vision")
    vision_config = _vision_config(vision)
    if vision_config.hidden_size != options["mm_hidden_size"]:
        raise ConversionError(f"{vision}: CLIP width {vision_config.hidden_size} does not match "
                              f"the checkpoint's mm_hidden_size {options['mm_hidden_size']} "
                              "(wrong --vision?)")
    return raw, options, vision, vision_config


def _generation_config(src: Path, text_config, pad_token_id: int | None) -> GenerationConfig:
    """The source's generation settings when it has them, else its LM's bos/eos;
    padding with our pad token."""
    if (src / "generation_config.json").is_file():
        generation = GenerationConfig.from_pretrained(src)
    else:
        generation = GenerationConfig(bos_token_id=text_config.bos_token_id,
                                      eos_token_id=text_config.eos_token_id)
    generation.pad_token_id = pad_token_id
    return generation


def _vision_config(vision: str):
    """vision_config_of, with a missing folder or an unreachable hub name as one ConversionError."""
    looks_local = Path(vision).is_absolute() or vision.startswith(".") or vision.count("/") > 1
    if looks_local and not Path(vision).is_dir():
        raise ConversionError(f"--vision {vision}: no such folder")
    try:
        return vision_config_of(vision)
    except OSError as e:
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise ConversionError(f"--vision {vision}: not a local CLIP folder, and not loadable from "
                              f"the hub ({first})") from None


def write_weights(folder: Path, files: dict[str, Path], tower, config, extra_rows: int,
                  dtype: torch.dtype, max_shard_bytes: int, progress: bool) -> list[str]:
    """Stream the official tensors, renamed, then the CLIP tower's, into shards under
    `folder`; return the names."""
    writer = ShardWriter(folder, max_shard_bytes)
    names = sorted(n for n in files
                   if not n.startswith(IGNORED_PREFIXES) and not n.endswith(IGNORED_SUFFIXES))
    if progress:
        names = tqdm(names, desc="converting tensors")
    handles = {}
    for name in names:
        handle = handles.setdefault(files[name], _open(files[name]))
        tensor = handle.get_tensor(name)
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            tensor = _grow_rows(tensor, extra_rows)
        writer.add(target_name(name), tensor.to(dtype))
    handles.clear()
    if config.projector_hidden_act == "linear":
        # transformers' projector has two layers: the second is the identity
        identity = new_projector(config, dtype).linear_2
        writer.add("model.multi_modal_projector.linear_2.weight", identity.weight.detach())
        writer.add("model.multi_modal_projector.linear_2.bias", identity.bias.detach())
    for name, tensor in tower.state_dict().items():
        writer.add("model.vision_tower." + name, tensor.detach())
    return writer.finish()


def _check_complete(config, written: list[str]) -> None:
    """Every tensor the Llava model declares was written, under its exact name, and nothing else."""
    with torch.device("meta"):
        expected = set(LlavaForConditionalGeneration(config).state_dict())
    missing, extra = sorted(expected - set(written)), sorted(set(written) - expected)
    if missing or extra:
        raise RuntimeError(f"conversion wrote a layout Llava does not expect: missing "
                           f"{missing[:10]}, extra {extra[:10]}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--src", required=True,
                        help="the official checkpoint folder (llava-med-v1.5-mistral-7b)")
    parser.add_argument("--vision", default=None,
                        help="CLIP tower: a hub name or a local folder (default: the config's "
                             "mm_vision_tower, openai/clip-vit-large-patch14-336)")
    parser.add_argument("--out", required=True,
                        help="output folder for the Llava model and processor")
    parser.add_argument("--dtype", default=None,
                        help="float32, bfloat16 or float16 (default: the checkpoint's)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer folder or hub name (default: --src); must be Mistral-7B's "
                             "vocabulary")
    parser.add_argument("--shard-gb", type=number(), default=SHARD_BYTES / 2**30,
                        help="output shard size in GB")


def main(args: argparse.Namespace) -> int:
    try:
        out = convert_official(args.src, args.vision, args.out, args.dtype, args.overwrite,
                               int(args.shard_gb * 2**30), tokenizer=args.tokenizer)
    except (ValueError, FileNotFoundError, FileExistsError) as e:  # ConversionError is a ValueError
        print(f"llavamed-lite convert-official: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"out": str(out)}))
    return 0
