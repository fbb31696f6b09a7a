"""One way to make a model write: the prompt in a stage's template, `model.generate`, the decoded
continuation. Stage-1 samples, stage-2 chats, evaluation and the web chat all call `generate`.

The prompt is the training text up to the answer (`train/templates.py`), so the model reads at
inference what it was trained on; for mistral_instruct that is also the processor's chat template.
Prompts are padded on the left, so every prompt ends where generation starts.
"""

from importlib.metadata import version

import torch

from .data.formats import IMAGE_TOKEN
from .model.placement import model_device
from .padding import pad_rows
from .train.templates import image_seq_length, prompt_ids

# The batched evaluation engine (eval/generate.py) edits `DynamicCache` layers. It was checked
# with these transformers releases (major.minor), [lowest, below); tests/test_generation.py
# fails outside them.
CACHE_ENGINE_TRANSFORMERS = ("5.24", "5.25")


def cache_engine_supported(installed: str | None = None) -> bool:
    """Whether the installed transformers is one the batched engine was checked with."""
    def release(v: str) -> tuple[int, int]:
        return tuple(int(part) for part in v.split(".")[:2])  # "5.25.0.dev0" -> (5, 25)

    lowest, below = (release(v) for v in CACHE_ENGINE_TRANSFORMERS)
    return lowest <= release(installed or version("transformers")) < below


def prompt(processor, question: str, template: str = "mistral_instruct",
           history: list[tuple[str, str]] = (), n_image: int | None = None) -> list[int]:
    """Token ids of `question` after the earlier (question, answer) turns, in `template`; each
    `<image>` is written out `n_image` times (by default as the processor expands it)."""
    n_image = image_seq_length(processor) if n_image is None else n_image
    return prompt_ids(question, processor.tokenizer, template, n_image, history)


def with_image(question: str) -> str:
    """The first question of a conversation: the image, then the text (LLaVA-Med's order)."""
    return f"{IMAGE_TOKEN}\n{question}"


@torch.inference_mode()
def generate(model, processor, prompts: list[list[int]], images: list, max_new_tokens: int = 48,
             temperature: float = 0.0, top_p: float = 1.0, streamer=None) -> list[str]:
    """The continuations of token-id prompts (one PIL image each), batched with left padding: greedy
    at temperature 0, sampled otherwise. A `streamer` (e.g. TextIteratorStreamer) gets the tokens as
    they come."""
    tokenizer = processor.tokenizer
    input_ids, attention_mask = pad_rows(prompts, tokenizer.pad_token_id, side="left")  # (B, T)
    pixel_values = processor.image_processor(images, return_tensors="pt")["pixel_values"]
    sampling = dict(do_sample=False)
    if temperature > 0:
        sampling = dict(do_sample=True, temperature=temperature, top_p=top_p)
    device = model_device(model)
    out = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                         pixel_values=pixel_values.to(device, model.dtype),  # (B, 3, H, W)
                         max_new_tokens=max_new_tokens, num_beams=1, streamer=streamer,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         **sampling)  # (B, T + new)
    new_tokens = out[:, input_ids.shape[1]:]
    return [t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
