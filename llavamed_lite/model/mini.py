"""Miniature stand-ins for the hub models: random-weight towers of the GPU
presets' families, written in seconds.

`make_mini(out)` saves `out/vision`, a 2-layer CLIP ViT at 336 px with patch 14 (576 image tokens,
the image processor of openai/clip-vit-large-patch14-336), and `out/lm`, a 2-layer Mistral with a
SentencePiece-style tokenizer: `▁` marks word starts, the prefix space is added only at the start of
the text (as `legacy: false` Llama tokenizers do), unknown characters fall back to bytes (`<0x0A>`
for a newline), `<unk>` `<s>` `</s>` are ids 0, 1, 2 and `<s>` is added on encode. Like Mistral's
own tokenizer it has no `<image>` and no pad token, and `[INST]` is plain text (`▁[`, `INST`, `]`),
so composition and templates meet what they meet at 7B. The weights are random: the towers exercise
the lora / full code paths on a CPU at their real shapes, and learn nothing.
"""

import argparse
import json
import string
import sys
from pathlib import Path

import torch
from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors,
                        trainers)
from transformers import (CLIPConfig, CLIPImageProcessorPil, CLIPModel, MistralConfig,
                          MistralForCausalLM, PreTrainedTokenizerFast)

from ..cli import count
from .compose import quiet_transformers

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]  # ids 0, 1, 2, as in Llama and Mistral
BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]  # ids 3-258, the byte fallback

# Training text for the tokenizer: short biomedical figure descriptions and the chat
# markers the templates write. No newline: a newline must reach the model as the byte token
# <0x0A>, as with Mistral's tokenizer.
CORPUS = """\
Chest radiograph showing a small nodule in the left upper zone with no pleural effusion.
Frontal chest X-ray demonstrates bilateral perihilar opacities and an enlarged cardiac silhouette.
Axial contrast-enhanced CT of the abdomen shows two hypodense lesions in the right hepatic lobe.
Coronal CT reveals a dilated loop of small bowel and free fluid in the pelvis.
Brain MRI, T2-weighted image, with a hyperintense mass in the right temporal lobe and surrounding oedema.
Sagittal MRI of the lumbar spine shows disc herniation at the fourth lumbar level.
Histology of the biopsy: dense sheets of atypical cells with large nuclei, haematoxylin and eosin stain.
Photomicrograph of glandular tissue with mitotic figures and focal necrosis, high magnification.
Gross specimen of the resected kidney with a well circumscribed yellow tumour beside a ruler.
Cut surface of the uterus showing a white whorled fibroid in the myometrium.
Ultrasound image of the thyroid with a hypoechoic nodule and internal calcifications.
What does the image show? Is there a nodule? Which side is abnormal? Where is the lesion located?
Is the heart enlarged? What imaging modality was used? Describe the figure briefly. Summarise the visual content.
Yes. No. Left. Right. Upper lobe. Lower lobe. Small. Large. Benign. Malignant. Axial. Coronal. Sagittal.
[INST] What is shown? [/INST] A chest radiograph. [INST] Which side? [/INST] The left side.
### Human: Describe the image. ### Assistant: A histology slide of the liver.
The patient presented with fever and cough; the radiograph confirmed a consolidation of the right lower lobe.
Follow-up imaging after three months showed partial resolution of the opacity and no new lesions.
Arrows indicate the margins of the tumour; the scale bar represents 100 micrometres (100 um).
Figure 2: (A) T1-weighted MRI before treatment; (B) after treatment, the enhancing lesion has decreased in size.
""".replace("\n", " ").split(". ")


def sentencepiece_tokenizer(texts: list[str] = CORPUS,
                            vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """A Llama/Mistral-style BPE tokenizer trained on `texts`; vocab_size counts the pieces besides
    the 259 special and byte tokens: small, so most words are several pieces. Printable ASCII is in
    the alphabet; other characters fall back to bytes."""
    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>"))
    # Train on words split before punctuation, so `[INST]` learns `▁[`,
    # `INST`, `]` as Mistral's pieces are.
    trainer_tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
        pre_tokenizers.Split(Regex(r"▁?[^▁\p{L}\p{N}]|▁?[\p{L}\p{N}]+"), behavior="isolated")])
    trainer_tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=list(string.ascii_letters + string.digits + string.punctuation + "▁")))
    learned = json.loads(trainer_tok.to_str())["model"]
    pieces = [p for p, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1])
              if p not in SPECIAL_TOKENS]
    vocab = {p: i for i, p in enumerate(SPECIAL_TOKENS + BYTE_TOKENS + pieces)}
    merges = [tuple(m) for m in learned["merges"]]

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True,
                               fuse_unk=True))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first",
                                                 split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>")


def make_mini(out: str | Path, seed: int = 0, image_size: int = 336, patch_size: int = 14,
              vision_width: int = 64, vision_layers: int = 2, lm_width: int = 64, lm_layers: int = 2,
              max_positions: int = 4096,
              tokenizer: PreTrainedTokenizerFast | None = None) -> tuple[str, str]:
    """Save a random CLIPModel (+ CLIP's image processor) to out/vision and a random
    MistralForCausalLM (+ tokenizer, SentencePiece-style unless one is given) to
    out/lm; return the two folders."""
    out = Path(out)
    torch.manual_seed(seed)
    tokenizer = tokenizer or sentencepiece_tokenizer()
    clip = CLIPModel(CLIPConfig(
        vision_config=dict(hidden_size=vision_width, intermediate_size=2 * vision_width,
                           num_hidden_layers=vision_layers, num_attention_heads=2,
                           image_size=image_size, patch_size=patch_size),
        text_config=dict(hidden_size=vision_width, intermediate_size=2 * vision_width,
                         num_hidden_layers=2, num_attention_heads=2, vocab_size=len(tokenizer),
                         bos_token_id=1, eos_token_id=2, pad_token_id=0),
        projection_dim=vision_width))
    with quiet_transformers():  # no per-shard progress bars
        clip.save_pretrained(out / "vision")
    # CLIP's defaults are openai/clip-vit-large-patch14-336's: bicubic resize,
    # centre crop, CLIP mean and std.
    CLIPImageProcessorPil(size={"shortest_edge": image_size},
                          crop_size={"height": image_size, "width": image_size}
                          ).save_pretrained(out / "vision")
    lm = MistralForCausalLM(MistralConfig(
        vocab_size=len(tokenizer), hidden_size=lm_width, intermediate_size=2 * lm_width,
        num_hidden_layers=lm_layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=max_positions, bos_token_id=1, eos_token_id=2,
        tie_word_embeddings=False))
    with quiet_transformers():
        lm.save_pretrained(out / "lm")
    tokenizer.save_pretrained(out / "lm")
    info = {"what": "random weights, for smoke tests only: they learn nothing and answer nothing",
            "seed": seed,
            "vision": f"CLIP ViT, {image_size} px, patch {patch_size}, {vision_layers} layers, "
            f"width {vision_width} ({(image_size // patch_size) ** 2} image tokens)",
            "lm": f"Mistral, {lm_layers} layers, width {lm_width}, SentencePiece-style tokenizer of "
            f"{len(tokenizer)} tokens (no <image>, no pad)"}
    (out / "mini.json").write_text(json.dumps(info, indent=1) + "\n")
    return str(out / "vision"), str(out / "lm")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True,
                        help="output folder; gets vision/, lm/ and mini.json")
    parser.add_argument("--seed", type=count(0), default=0, help="seed of the random weights")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")


def main(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"llavamed-lite make-mini: --out {out} is a file, not a folder", file=sys.stderr)
        return 2
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        print(f"llavamed-lite make-mini: --out {out} is not empty (use --overwrite to write into it)",
              file=sys.stderr)
        return 2
    vision, lm = make_mini(out, args.seed)
    print(json.dumps({"vision": vision, "lm": lm}))
    return 0
