"""Batched greedy answers to VQA questions, written as LLaVA-Med answer files (one JSON line per question).

LLaVA-Med's scripts answer one question at a time with `model.generate`. Here questions are answered in batches by
a short greedy loop over the model's forward pass (KV cache on), which does two things `generate` cannot:
questions about the same image share one pass over the image and the prompt before the question (prefix caching),
and a row leaves the batch as soon as it has written </s>. Decoding is greedy, so a question gets the same answer
whatever batch it sits in. Each batch is appended to the answer file as it is done; a rerun skips the question_ids
already answered (resume after a crash).
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


def image_groups(items: list[VQAItem]) -> tuple[list[int], list[int]]:
    """(index of the first item of each distinct image, group number of every item), images in order of appearance."""
    firsts, group, number = [], [], {}
    for i, it in enumerate(items):
        if str(it.image) not in number:
            number[str(it.image)] = len(firsts)
            firsts.append(i)
        group.append(number[str(it.image)])
    return firsts, group


@torch.inference_mode()
def answer_batch(model, processor, items: list[VQAItem], max_new_tokens: int = 64) -> list[str]:
    """Greedy answers for one batch of questions, with a KV cache.

    Every prompt starts with the same tokens up to the image's last token ("[INST] <image>...", the prefix); only the
    question after it differs. So each distinct image goes through the vision tower and the LM once, and its prefix
    cache is copied to the questions about it (prefix caching, as serving engines do). The questions then run after
    their prefixes, padded on their left to one length (the padding sits between prefix and question, masked out,
    and position ids skip it). Rows leave the batch when they write </s>, so a long answer costs only its own row.
    """
    tokenizer = processor.tokenizer
    if not items:
        return []
    prompts = [chat_prompt(processor, it.question) for it in items]
    firsts, group = image_groups(items)
    images = {i: open_image(items[i]) for i in firsts}
    inputs = processor(images=[images[firsts[g]] for g in group], text=prompts, return_tensors="pt", padding=True,
                       padding_side="left")
    rows = [ids[mask.bool()] for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"])]  # unpadded prompts
    is_image = rows[0] == model.config.image_token_id
    prefix_len = int(is_image.nonzero().max()) + 1  # "<s>[INST] " and the image tokens
    prefix = rows[0][:prefix_len]
    if any(not torch.equal(r[:prefix_len], prefix) for r in rows):
        raise ValueError("the prompts do not share the chat template's prefix up to the image")

    # One pass per distinct image over the shared prefix; its cache is then repeated for each question on it.
    pixel_values = inputs["pixel_values"][firsts].to(model.device, model.dtype)  # (images, 3, H, W)
    cache = model(input_ids=prefix.expand(len(firsts), -1).to(model.device), pixel_values=pixel_values, use_cache=True,
                  logits_to_keep=1).cache
    cache.batch_select_indices(torch.tensor(group, device=model.device))  # (images, ...) -> (batch, ...)

    # The questions, left-padded to one length, after their prefixes.
    questions = [r[prefix_len:] for r in rows]
    width = max(len(q) for q in questions)
    ids = torch.full((len(items), width), tokenizer.pad_token_id, dtype=torch.long)  # (batch, width)
    mask = torch.zeros(len(items), prefix_len + width, dtype=torch.long)  # (batch, prefix + width)
    mask[:, :prefix_len] = 1
    for i, q in enumerate(questions):
        ids[i, width - len(q):] = q
        mask[i, prefix_len + width - len(q):] = 1
    positions = (mask.cumsum(1) - 1)[:, prefix_len:]  # (batch, width): the padding does not advance positions
    ids, mask, positions = ids.to(model.device), mask.to(model.device), positions.to(model.device)

    answers = [[] for _ in items]
    live = torch.arange(len(items), device=model.device)  # rows of the batch still writing, by their item index
    for _ in range(max_new_tokens):
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache,
                       use_cache=True, logits_to_keep=1).logits  # (live, 1, vocab)
        next_ids = logits[:, -1].argmax(-1)  # (live,) greedy
        for row, token in zip(live.tolist(), next_ids.tolist()):
            answers[row].append(token)
        going = next_ids != tokenizer.eos_token_id
        if not going.any():
            break
        if not going.all():  # finished rows leave the batch and its cache
            keep = going.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            live, next_ids, mask, positions = live[keep], next_ids[keep], mask[keep], positions[keep]
        ids = next_ids[:, None]  # (live, 1)
        mask = torch.cat([mask, mask.new_ones(len(live), 1)], dim=1)
        positions = positions[:, -1:] + 1
    return [text.strip() for text in tokenizer.batch_decode(answers, skip_special_tokens=True)]


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
    """Answer every item not yet in `out_path` and append the answers there (questions on one image together);
    return the answer records of `items`, in their order."""
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
    _, group = image_groups(todo)
    todo = [it for _, it in sorted(zip(group, todo), key=lambda pair: pair[0])]  # questions on one image share a batch
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
    records = {str(r["question_id"]): r for r in iter_jsonl(out_path)}
    return [records[i] for i in ids]
