"""What a stage's model writes, to look at before and after training: captions (stage 1's plain format) and
multi-turn chats (stage 2's mistral_instruct format), with the prompts built by the same code as the training ids.

Greedy decoding, prompts padded on the left so that every prompt ends where generation starts.
"""

from pathlib import Path

import torch

from ..data.domains import classify_caption
from ..data.formats import IMAGE_TOKEN
from ..model.placement import model_device
from .collator import record_image
from .templates import image_seq_length, prompt_ids


@torch.inference_mode()
def generate_from_ids(model, processor, prompts: list[list[int]], images: list, max_new_tokens: int = 48) -> list[str]:
    """Greedy continuations of token-id prompts (one image each), batched with left padding."""
    tokenizer = processor.tokenizer
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), tokenizer.pad_token_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)  # (B, T)
    for row, p in enumerate(prompts):
        input_ids[row, width - len(p):] = torch.tensor(p)
        attention_mask[row, width - len(p):] = 1
    pixel_values = processor.image_processor(images, return_tensors="pt")["pixel_values"]  # (B, 3, H, W)
    device = model_device(model)
    out = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                         pixel_values=pixel_values.to(device, model.dtype), max_new_tokens=max_new_tokens,
                         do_sample=False, num_beams=1, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    return [t.strip() for t in tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)]


def generate_captions(model, processor, image_paths: list[str | Path], batch_size: int = 64,
                      max_new_tokens: int = 40) -> list[str]:
    """Captions in stage 1's plain format: the image, then whatever the model writes."""
    prompt = prompt_ids(IMAGE_TOKEN, processor.tokenizer, "plain", image_seq_length(processor))
    captions = []
    for start in range(0, len(image_paths), batch_size):
        paths = image_paths[start:start + batch_size]
        captions += generate_from_ids(model, processor, [prompt] * len(paths), [record_image(p) for p in paths],
                                      max_new_tokens)
    return captions


def chat(model, processor, image_path: str | Path, questions: list[str], max_new_tokens: int = 48) -> list[tuple[str, str]]:
    """A multi-turn conversation about one image in the mistral_instruct format: each answer joins the history of
    the next question. The first question carries the image."""
    n_image, history = image_seq_length(processor), []
    image = record_image(image_path)
    for k, question in enumerate(questions):
        text = f"{IMAGE_TOKEN}\n{question}" if k == 0 else question
        ids = prompt_ids(text, processor.tokenizer, "mistral_instruct", n_image,
                         [(f"{IMAGE_TOKEN}\n{q}" if i == 0 else q, a) for i, (q, a) in enumerate(history)])
        history.append((question, generate_from_ids(model, processor, [ids], [image], max_new_tokens)[0]))
    return history


def caption_domain_accuracy(captions: list[str], domains: list[str]) -> float:
    """Share of generated captions whose named modality (curation's caption vocabulary, data/domains.py) is the
    figure's true domain."""
    if len(captions) != len(domains) or not captions:
        raise ValueError(f"need as many captions as domains, and at least one (got {len(captions)} and {len(domains)})")
    return sum(classify_caption(c) == d for c, d in zip(captions, domains)) / len(captions)
