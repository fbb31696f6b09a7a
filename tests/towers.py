"""Test helpers. The small towers the tests compose: `make_mini` at 32 px with a byte-level BPE tokenizer (the tiny
LM's kind), so the tests run in seconds and cover both tokenizer families (the SentencePiece-style one is make_mini's
own); and `StopAt`, a training run cut short."""

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast, TrainerCallback

from llavamed_lite.model.mini import make_mini

_TEXT = ("Chest radiograph showing a nodule in the left upper zone. Axial CT of the abdomen with two liver lesions. "
         "Brain MRI with a mass in the right hemisphere and surrounding oedema. Histology of dense nuclei and glands. "
         "Gross specimen with a discoloured lesion beside a ruler. What does the image show? Is there a nodule? "
         "Yes. No. Left. Right. Upper. Lower. Small. Large.").split(". ")


def byte_level_tokenizer(texts: list[str] = _TEXT, vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with Mistral's special tokens, `<s>` added on encode, and no `<image>` or pad."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts * 4, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def make_tiny_towers(out: str | Path, image_size: int = 32, patch_size: int = 8, vision_width: int = 32,
                     lm_width: int = 64) -> tuple[str, str]:
    """(vision_dir, lm_dir): a 3-layer 32 px CLIP and a 2-layer Mistral of 512 positions with the byte-level
    tokenizer."""
    return make_mini(out, image_size=image_size, patch_size=patch_size, vision_width=vision_width, vision_layers=3,
                     lm_width=lm_width, max_positions=512, tokenizer=byte_level_tokenizer())


class StopAt(TrainerCallback):
    """Stop a training run after `step` steps, as a kill would (the checkpoint of that step is written first)."""

    def __init__(self, step):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True
