"""Tiny random-init towers written to disk, for tests and benchmarks of the full-scale code paths without a hub."""

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
from transformers import (CLIPConfig, CLIPImageProcessorPil, CLIPModel, MistralConfig, MistralForCausalLM,
                          PreTrainedTokenizerFast)

_TEXT = ("Chest radiograph showing a nodule in the left upper zone. Axial CT of the abdomen with two liver lesions. "
         "Brain MRI with a mass in the right hemisphere and surrounding oedema. Histology of dense nuclei and glands. "
         "Gross specimen with a discoloured lesion beside a ruler. What does the image show? Is there a nodule? "
         "Yes. No. Left. Right. Upper. Lower. Small. Large.").split(". ")


def make_tokenizer(texts: list[str] = _TEXT, vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with Mistral's special tokens and no `<image>` (composition must add it)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def make_tiny_towers(out: str | Path, image_size: int = 32, patch_size: int = 8, vision_width: int = 32,
                     lm_width: int = 64) -> tuple[str, str]:
    """Save a random CLIPModel (+ image processor) and a random MistralForCausalLM (+ tokenizer); return their dirs."""
    out = Path(out)
    torch.manual_seed(0)
    tokenizer = make_tokenizer()
    clip = CLIPModel(CLIPConfig(
        vision_config=dict(hidden_size=vision_width, intermediate_size=2 * vision_width, num_hidden_layers=3,
                           num_attention_heads=2, image_size=image_size, patch_size=patch_size),
        text_config=dict(hidden_size=vision_width, intermediate_size=2 * vision_width, num_hidden_layers=2,
                         num_attention_heads=2, vocab_size=len(tokenizer), bos_token_id=1, eos_token_id=2,
                         pad_token_id=0),
        projection_dim=vision_width))
    clip.save_pretrained(out / "clip")
    CLIPImageProcessorPil(size={"shortest_edge": image_size},
                          crop_size={"height": image_size, "width": image_size}).save_pretrained(out / "clip")
    lm = MistralForCausalLM(MistralConfig(
        vocab_size=len(tokenizer), hidden_size=lm_width, intermediate_size=2 * lm_width, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, bos_token_id=1, eos_token_id=2,
        tie_word_embeddings=False))
    lm.save_pretrained(out / "lm")
    tokenizer.save_pretrained(out / "lm")
    return str(out / "clip"), str(out / "lm")
