"""The tiny tokenizer: byte-level BPE trained with `tokenizers` on the tiny world's text.

Special tokens are <pad>, <image>, <s>, </s> with ids 0-3 (</s> must not be id 2: CLIP's text model takes a
legacy pooling path when eos_token_id == 2). The tokenizer adds <s> in front (as Mistral's does) and carries the
mistral_instruct chat template, so `AutoTokenizer.from_pretrained(dir)` gives everything the later stages need.
No prefix space: a caption that follows the image tokens starts with "Chest", as it does after <s> here.
"""

from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from ..data.formats import IMAGE_TOKEN
from ..model.chat_template import MISTRAL_INSTRUCT_TEMPLATE

SPECIAL_TOKENS = ["<pad>", IMAGE_TOKEN, "<s>", "</s>"]  # ids 0, 1, 2, 3


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be at least {256 + len(SPECIAL_TOKENS)} (256 bytes + special tokens), "
                         f"got {vocab_size}")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(texts, trainer)
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 2)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                        extra_special_tokens=[IMAGE_TOKEN], model_max_length=1024)
    tokenizer.chat_template = MISTRAL_INSTRUCT_TEMPLATE
    ids = [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    if ids != [0, 1, 2, 3]:
        raise RuntimeError(f"special tokens got ids {ids}, expected 0-3")
    return tokenizer
