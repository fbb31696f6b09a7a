"""Batched greedy answers to VQA questions, written as LLaVA-Med answer files (one JSON line per question).

LLaVA-Med's scripts answer one question at a time. Here questions go through `model.generate` in batches: the
tokenizer pads on the LEFT, so every prompt ends at the last position and the new tokens line up; the KV cache
is on and decoding is greedy, so a question gets the same answer whatever batch it sits in. Each batch is appended
to the answer file as it is done; a rerun skips the question_ids already answered (resume after a crash).
"""

import hashlib
from pathlib import Path
from typing import Iterable

import torch
from PIL import Image
from tqdm.auto import tqdm

from ..data.formats import answer_record
from ..images import load_image
from ..io import append_jsonl, iter_jsonl
from .vqa import VQAItem


def chat_prompt(processor, question: str) -> str:
    """The question in the model's chat template, image first (as in LLaVA-Med's VQA records), ready for an answer."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def open_image(item: VQAItem) -> Image.Image:
    try:
        return load_image(item.image)
    except (OSError, ValueError) as e:
        raise ValueError(f"question {item.question_id}: {e}") from None


@torch.inference_mode()
def answer_batch(model, processor, items: list[VQAItem], max_new_tokens: int = 64) -> list[str]:
    """Greedy answers for one batch of questions (left padding, KV cache)."""
    tokenizer = processor.tokenizer
    prompts = [chat_prompt(processor, it.question) for it in items]
    inputs = processor(images=[open_image(it) for it in items], text=prompts, return_tensors="pt", padding=True,
                       padding_side="left")
    inputs = inputs.to(model.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, use_cache=True,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    new_tokens = out[:, inputs["input_ids"].shape[1]:]  # (batch, new), left padding puts every prompt end at one place
    return [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


def answered(path: str | Path, model_id: str | None = None) -> dict[str, str]:
    """question_id -> prompt of the answers already in an answer file (a line cut short by a crash does not count).
    With model_id, refuse a file that another model wrote, so answers of two models never mix."""
    path = Path(path)
    if not path.exists():
        return {}
    done = {}
    for i, row in enumerate(iter_jsonl(path), 1):
        if not isinstance(row, dict) or "question_id" not in row:
            raise ValueError(f"{path}: line {i} is not an answer record (no question_id)")
        if model_id is not None and row.get("model_id") != model_id:
            raise ValueError(f"{path}: line {i} was written by model {row.get('model_id')!r}, not {model_id!r}; "
                             "use another output file")
        done[str(row["question_id"])] = row.get("prompt")
    return done


def answer_id(model_id: str, question_id: str) -> str:
    """Deterministic, so a rerun writes identical files."""
    return hashlib.sha256(f"{model_id}\n{question_id}".encode()).hexdigest()[:22]


def generate_answers(model, processor, items: Iterable[VQAItem], out_path: str | Path, model_id: str,
                     batch_size: int = 16, max_new_tokens: int = 64, progress: bool = True) -> list[dict]:
    """Answer every item not yet in `out_path` and append the answers there; return all answer records in the file."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    items = list(items)
    ids = [str(it.question_id) for it in items]
    if len(set(ids)) != len(ids):
        raise ValueError("question_ids are not unique: answers could not be matched to questions")
    done = answered(out_path, model_id)
    for it in items:  # e.g. a rerun with the closed suffix switched on: the old answers are to other prompts
        if str(it.question_id) in done and done[str(it.question_id)] != it.question:
            raise ValueError(f"{out_path}: question {it.question_id} was answered with another prompt "
                             f"({done[str(it.question_id)]!r}); use another output file")
    todo = [it for it in items if str(it.question_id) not in done]
    model.eval()
    with tqdm(total=len(items), initial=len(items) - len(todo), desc="answering", unit="q", disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            texts = answer_batch(model, processor, batch, max_new_tokens)
            append_jsonl(out_path, [
                answer_record(str(it.question_id), it.question, text, answer_id(model_id, str(it.question_id)), model_id,
                              {"answer_type": it.answer_type, "question_type": it.question_type})
                for it, text in zip(batch, texts)])
            bar.update(len(batch))
    return list(iter_jsonl(out_path))
