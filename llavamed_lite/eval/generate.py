"""Greedy answers to VQA questions, written as LLaVA-Med answer files (one JSON line per question).

LLaVA-Med's scripts answer one question at a time with `model.generate`. Here up to `batch_size`
questions are answered together by a short greedy loop over the model's forward pass (KV cache on),
which does what serving engines do and `generate` cannot:
- prefix caching: every prompt is the same up to the image's last token, so each image goes through
  the vision tower and the LM once (`batch_size` images per pass), and its KV cache is copied to
  every question about it;
- continuous batching: a question that has finished leaves the batch and a waiting one takes its
  place, so the batch stays full instead of running down to its longest answer;
- questions read together have similar lengths, so little of a pass is spent on padding.

On a 2-core CPU this answers the tiny model's questions 6-9x faster than `generate` one at a time
(benchmarks/generation_speed.py). Decoding is greedy, so a question gets the same answer whatever
batch it sits in, and the same as `llavamed_lite.generation.generate` gives (engine "generate", the
way on a transformers release the loop, which edits `DynamicCache` layers, was not checked with).
Prompts come from `llavamed_lite.generation.prompt`.

Answers are appended to the answer file as they finish; a rerun skips the question_ids already
answered (resume after a crash). Once all are written, the file is rewritten in question order
(atomically), with each question's own id (an int stays an int): LLaVA-Med's scorers pair questions
and answers by position. A file that another model wrote (its model_id, or its weights' fingerprint,
differ) is refused, never resumed. A question whose prompt and answer would not fit the LM's context
is refused before anything is answered, naming the question (as the chat does): the model would
otherwise write garbage past its positions.
"""

import hashlib
import json
from collections import deque
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Iterable, Iterator

import torch
from PIL import Image
from tqdm.auto import tqdm
from transformers import DynamicCache

from ..data.formats import answer_record
from ..generation import cache_engine_supported, generate, prompt, with_image
from ..images import load_image
from ..io import append_jsonl, atomic_write_text, iter_jsonl
from ..model.placement import model_device
from ..padding import pad_rows
from .vqa import VQAItem

ENGINES = ("cache", "generate")


def item_image(item: VQAItem) -> Image.Image:
    """The question's image; an unreadable one is an error naming the question."""
    try:
        return load_image(item.image)
    except (OSError, ValueError) as e:
        raise ValueError(f"question {item.question_id}: {e}") from None


class ImagePrefixes:
    """The KV cache of the prompt up to each image's last token ("<s>[INST] <image>...", the
    prefix), for the images of the questions about to start.

    Every prompt starts with the same tokens up to the image; only the question after it differs. So
    each distinct image goes through the vision tower and the LM once, `batch_size` images in one
    pass ahead of their questions, and its prefix cache is copied to every question about it (prefix
    caching)."""

    def __init__(self, model, processor, batch_size: int):
        self.model, self.processor, self.batch_size = model, processor, batch_size
        # image -> per layer (keys, values)
        self.caches: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def encode(self, items: Iterable[VQAItem]) -> None:
        """Encode the first `batch_size` images of `items` that are not encoded yet, in one pass."""
        firsts = {}
        for it in items:
            if len(firsts) == self.batch_size:
                break
            if str(it.image) not in self.caches:
                firsts.setdefault(str(it.image), it)
        model, device = self.model, model_device(self.model)
        images = [item_image(it) for it in firsts.values()]
        pixel_values = self.processor.image_processor(images, return_tensors="pt")["pixel_values"]
        pixel_values = pixel_values.to(device, model.dtype)  # (images, 3, H, W)
        prefix = torch.tensor(image_prefix(model, self.processor))  # "<s>[INST] ", image tokens
        # keeps every column (a sliding-window cache drops the oldest), as `join` expects
        cache = DynamicCache()
        model(input_ids=prefix.expand(len(firsts), -1).to(device), cache=cache, use_cache=True,
              logits_to_keep=1, pixel_values=pixel_values)
        for row, image in enumerate(firsts):  # (1, kv_heads, prefix, head_dim) each
            self.caches[image] = [(layer.keys[row:row + 1], layer.values[row:row + 1])
                                  for layer in cache.layers]

    def cache_for(self, items: list[VQAItem]) -> DynamicCache:
        """A cache of (len(items), ...) holding each item's prefix; the images must be encoded."""
        # per layer: each item's (keys, values)
        per_layer = zip(*(self.caches[str(it.image)] for it in items))
        return DynamicCache([(torch.cat([k for k, _ in kv]), torch.cat([v for _, v in kv]))
                             for kv in per_layer])

    def ready(self, items: list[VQAItem], upcoming: Iterable[VQAItem]) -> None:
        """Make sure the images of `items` are encoded. If some are not: drop the caches no item
        needs (with the questions in image order, those images have no question left) and encode the
        next images of `items` and then of `upcoming`."""
        if all(str(it.image) in self.caches for it in items):
            return
        needed = {str(it.image) for it in items}
        self.caches = {image: cache for image, cache in self.caches.items() if image in needed}
        self.encode(chain(items, upcoming))


@dataclass
class Rows:
    """Questions being answered together: their KV cache and what the next forward pass reads."""
    items: list[int]  # the index of each row's question
    cache: DynamicCache  # per layer (rows, kv_heads, length, head_dim)
    mask: torch.Tensor  # (rows, length): 1 over each row's tokens in the cache, 0 over padding
    positions: torch.Tensor  # (rows, 1): position id of each row's next token
    last: torch.Tensor  # (rows,): the token each row wrote last, the next step's input

    def select(self, keep: list[bool]) -> "Rows":
        """Only the rows marked in `keep`; cache columns that are padding for all of them go."""
        index = torch.tensor(keep).nonzero().squeeze(1).to(self.mask.device)
        mask = self.mask[index]
        start = int(mask.any(0).int().argmax())  # first column a kept row uses
        self.cache.batch_select_indices(index)
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[:, :, start:], layer.values[:, :, start:]
        return Rows([i for i, k in zip(self.items, keep) if k], self.cache, mask[:, start:],
                    self.positions[index], self.last[index])


def join(a: Rows | None, b: Rows) -> Rows:
    """One batch of the rows of `a` and `b`, the shorter caches padded on their left (masked out) to
    one length."""
    if a is None:
        return b
    length = max(a.mask.shape[1], b.mask.shape[1])

    def pad(x: torch.Tensor, dim: int) -> torch.Tensor:
        shape = list(x.shape)
        shape[dim] = length - x.shape[dim]
        return torch.cat([x.new_zeros(shape), x], dim=dim)

    for la, lb in zip(a.cache.layers, b.cache.layers):
        la.keys = torch.cat([pad(la.keys, 2), pad(lb.keys, 2)])
        la.values = torch.cat([pad(la.values, 2), pad(lb.values, 2)])
    return Rows(a.items + b.items, a.cache, torch.cat([pad(a.mask, 1), pad(b.mask, 1)]),
                torch.cat([a.positions, b.positions]), torch.cat([a.last, b.last]))


def start_rows(model, processor, prefixes: ImagePrefixes, items: list[VQAItem],
               questions: list[list[int]], indices: list[int]) -> Rows:
    """Read the questions `indices` (token ids after the image) after their images' prefixes, and
    write each one's first answer token.

    The questions are padded on their left to one length: the padding sits between prefix and
    question, masked out, and position ids skip it."""
    batch = [questions[i] for i in indices]
    # per layer (rows, kv_heads, prefix, head_dim)
    cache = prefixes.cache_for([items[i] for i in indices])
    prefix_len = cache.get_seq_length()
    # (rows, width) each
    ids, question_mask = pad_rows(batch, processor.tokenizer.pad_token_id, side="left")
    # (rows, prefix + width)
    mask = torch.cat([question_mask.new_ones(len(batch), prefix_len), question_mask], 1)
    # (rows, width): the padding does not advance positions
    positions = (mask.cumsum(1) - 1)[:, prefix_len:]
    device = model_device(model)
    mask, positions = mask.to(device), positions.to(device)
    logits = model(input_ids=ids.to(device), attention_mask=mask, position_ids=positions,
                   cache=cache, use_cache=True, logits_to_keep=1).logits  # (rows, 1, vocab)
    return Rows(list(indices), cache, mask, positions[:, -1:] + 1, logits[:, -1].argmax(-1))


def step(model, rows: Rows) -> Rows:
    """Every row writes its next token (greedy)."""
    mask = torch.cat([rows.mask, rows.mask.new_ones(len(rows.items), 1)], dim=1)  # (rows, length+1)
    logits = model(input_ids=rows.last[:, None], attention_mask=mask, position_ids=rows.positions,
                   cache=rows.cache, use_cache=True, logits_to_keep=1).logits  # (rows, 1, vocab)
    return Rows(rows.items, rows.cache, mask, rows.positions + 1, logits[:, -1].argmax(-1))


def question_tokens(model, processor, items: list[VQAItem]) -> list[list[int]]:
    """The token ids of each item's prompt after the image: its question and the template's end of
    turn."""
    for it in items:
        try:
            it.question.encode("utf-8")
        except UnicodeEncodeError as e:  # e.g. a lone surrogate from a "\ud800" escape in the file
            raise ValueError(f"question {it.question_id}: the text is not valid Unicode "
                             f"({e.reason} at character {e.start})") from None
    # one image token each
    prompts = [prompt(processor, with_image(it.question), n_image=1) for it in items]
    image = model.config.image_token_id
    head = prompts[0][:prompts[0].index(image) + 1] if image in prompts[0] else None
    if head is None or any(p[:len(head)] != head for p in prompts):
        raise ValueError("the prompts do not share the chat template's prefix up to the image")
    for it, p in zip(items, prompts):
        if image in p[len(head):]:
            raise ValueError(f"question {it.question_id}: the text holds the image token "
                             f"{processor.image_token!r}")
    return [p[len(head):] for p in prompts]


def image_prefix(model, processor) -> list[int]:
    """The ids every question's prompt starts with, up to the image's last token ("<s>[INST]
    <image>...")."""
    ids = prompt(processor, with_image(""))
    return ids[:max(i for i, token in enumerate(ids) if token == model.config.image_token_id) + 1]


def check_context(model, processor, items: list[VQAItem], questions: list[list[int]],
                  max_new_tokens: int) -> None:
    """Refuse, naming the first question, prompts that leave no room for `max_new_tokens` in the
    LM's context (max_position_embeddings). The prefix up to the image's last token is the same for
    every question."""
    limit = getattr(model.config.text_config, "max_position_embeddings", None)
    if limit is None or not items:
        return
    prefix = len(image_prefix(model, processor))
    for it, question in zip(items, questions):
        if prefix + len(question) + max_new_tokens > limit:
            raise ValueError(f"question {it.question_id}: {prefix + len(question)} prompt tokens + "
                             f"{max_new_tokens} new tokens exceed the model's context of {limit} "
                             "tokens (shorten the question or lower --max-new-tokens)")


def shortest_first_per_images(items: list[VQAItem], lengths: list[int], images: int) -> list[int]:
    """The order to read `items` in: runs of consecutive items about `images` images, each run
    shortest question first. Questions read together then have similar lengths (less padding) and
    images already encoded."""
    order, run, seen = [], [], set()
    for i, it in enumerate(items):
        if str(it.image) not in seen and len(seen) == images:
            order, run, seen = order + sorted(run, key=lengths.__getitem__), [], set()
        seen.add(str(it.image))
        run.append(i)
    return order + sorted(run, key=lengths.__getitem__)


def stream_answers(model, processor, items: list[VQAItem], batch_size: int = 16,
                   max_new_tokens: int = 64,
                   engine: str | None = None) -> Iterator[tuple[int, str]]:
    """(index, answer) of every question in `items`, in the order they finish, by greedy decoding.

    Up to `batch_size` questions are answered at once. A row that has finished stays in the batch
    (what it writes is ignored) until half the batch has finished: then they leave together, and
    while questions wait, new ones are read and join the rows still writing (continuous batching).
    Leaving copies the cache, and on a CPU a row more or less barely changes a step's time; reading
    new questions in bunches takes fewer passes than one per free row, and the batch never runs down
    to a few long answers. Keep questions on one image next to each other in `items`: their images
    are encoded `batch_size` at a time, in the order of `items`. Bad input (a batch size, a question
    that is not Unicode or too long for the context) is refused by this call itself, before anything
    is answered.

    `engine` "cache" is this loop; "generate" is `llavamed_lite.generation.generate`, `batch_size`
    questions at a time, slower but with the same greedy answers. By default the loop runs on the
    transformers releases it was checked with (`CACHE_ENGINE_TRANSFORMERS`), `generate` on
    others."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    engine = engine or ("cache" if cache_engine_supported() else "generate")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    questions = question_tokens(model, processor, items) if items else []
    check_context(model, processor, items, questions, max_new_tokens)
    if engine == "generate":
        return _generate_in_batches(model, processor, items, batch_size, max_new_tokens)
    return _decode(model, processor, items, questions, batch_size, max_new_tokens)


def _generate_in_batches(model, processor, items: list[VQAItem], batch_size: int,
                         max_new_tokens: int) -> Iterator[tuple[int, str]]:
    """The "generate" engine of `stream_answers`: `batch_size` questions per `generate` call, in
    order."""
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        prompts = [prompt(processor, with_image(it.question)) for it in batch]
        images = [item_image(it) for it in batch]
        yield from enumerate(generate(model, processor, prompts, images, max_new_tokens), start)


@torch.inference_mode()
def _decode(model, processor, items: list[VQAItem], questions: list[list[int]], batch_size: int,
            max_new_tokens: int) -> Iterator[tuple[int, str]]:
    """The decoding loop of `stream_answers`, over questions already checked and tokenized."""
    if not items:
        return
    eos, half = processor.tokenizer.eos_token_id, max(batch_size // 2, 1)
    prefixes = ImagePrefixes(model, processor, batch_size)
    waiting = deque(shortest_first_per_images(items, [len(q) for q in questions], batch_size))
    rows, written = None, {}  # written: the tokens of each question being answered
    while waiting or rows is not None:
        writing = [i in written for i in rows.items] if rows is not None else []
        refill = bool(waiting) and batch_size - sum(writing) >= min(half, len(waiting))
        if rows is not None and (refill or len(writing) - sum(writing) >= half or not any(writing)):
            rows = rows.select(writing) if any(writing) else None  # the finished rows leave
        if refill:
            take = [waiting.popleft() for _ in range(min(batch_size - sum(writing), len(waiting)))]
            written.update((i, []) for i in take)
            prefixes.ready([items[i] for i in take], (items[i] for i in waiting))
            out = start_rows(model, processor, prefixes, items, questions, take)
            rows = join(rows, out)
        elif rows is not None:
            out = rows = step(model, rows)
        else:
            break
        for i, token in zip(out.items, out.last.tolist()):
            if i in written:
                written[i].append(token)
                if token == eos or len(written[i]) >= max_new_tokens:
                    text = processor.tokenizer.decode(written.pop(i), skip_special_tokens=True)
                    yield i, text.strip()


def answer_questions(model, processor, items: list[VQAItem], batch_size: int = 16,
                     max_new_tokens: int = 64, engine: str | None = None) -> list[str]:
    """Greedy answers to `items`, in their order (see `stream_answers`)."""
    answers = dict(stream_answers(model, processor, items, batch_size, max_new_tokens, engine))
    return [answers[i] for i in range(len(items))]


def answered(path: str | Path, model_id: str | None = None,
             fingerprint: str | None = None) -> dict[str, str]:
    """question_id -> prompt of the answers already in an answer file (a line cut short by a crash
    does not count). With model_id (and the weights' fingerprint, `evaluate.model_fingerprint`),
    refuse a file that another model wrote, so answers of two models never mix: two models can share
    a model_id, a folder retrained in place too."""
    path = Path(path)
    if not path.exists():
        return {}
    done = {}
    for i, row in enumerate(iter_jsonl(path), 1):
        if not isinstance(row, dict) or "question_id" not in row:
            raise ValueError(f"{path}: line {i} is not an answer record (no question_id)")
        if model_id is not None and row.get("model_id") != model_id:
            raise ValueError(f"{path}: line {i} was written by model {row.get('model_id')!r}, "
                             f"not {model_id!r}; use another output file")
        written_by = (row.get("metadata") or {}).get("model_fingerprint")
        if fingerprint is not None and written_by != fingerprint:
            raise ValueError(f"{path}: line {i} was answered by other weights (fingerprint "
                             f"{written_by}, this model's is {fingerprint}); pass --restart "
                             "(restart=True) to answer again, or use another output file")
        done[str(row["question_id"])] = row.get("prompt")
    return done


def answer_id(model_id: str, question_id: str) -> str:
    """Deterministic, so a rerun writes identical files."""
    return hashlib.sha256(f"{model_id}\n{question_id}".encode()).hexdigest()[:22]


def generate_answers(model, processor, items: Iterable[VQAItem], out_path: str | Path,
                     model_id: str, batch_size: int = 16, max_new_tokens: int = 64,
                     progress: bool = True, fingerprint: str | None = None,
                     engine: str | None = None) -> list[dict]:
    """Answer every item not yet in `out_path` and append the answers there (questions on one image
    together), then put the file in the order of `items` (`in_question_order`); return the answer
    records of `items`, in their order. `fingerprint` (of the weights) is kept in each answer's
    metadata, and a file written by other weights is refused."""
    items = list(items)
    ids = [str(it.question_id) for it in items]
    if len(set(ids)) != len(ids):
        raise ValueError("question_ids are not unique: answers could not be matched to questions")
    done = answered(out_path, model_id, fingerprint)
    # e.g. a rerun with the closed suffix switched on: the old answers are to other prompts
    for it in items:
        if str(it.question_id) in done and done[str(it.question_id)] != it.question:
            raise ValueError(f"{out_path}: question {it.question_id} was answered with another "
                             f"prompt ({done[str(it.question_id)]!r}); use another output file")
    todo = [it for it in items if str(it.question_id) not in done]
    first_seen = {}
    for it in todo:
        first_seen.setdefault(str(it.image), len(first_seen))
    # questions on one image together, images in order
    todo.sort(key=lambda it: first_seen[str(it.image)])
    model.eval()
    # refuses bad input before the bar
    answers = stream_answers(model, processor, todo, batch_size, max_new_tokens, engine)
    bar = tqdm(total=len(items), initial=len(items) - len(todo), desc="answering", unit="q",
               disable=not progress)
    with bar:
        for i, text in answers:
            it = todo[i]
            metadata = {"answer_type": it.answer_type, "question_type": it.question_type,
                        **({"model_fingerprint": fingerprint} if fingerprint else {})}
            record = answer_record(it.question_id, it.question, text,
                                   answer_id(model_id, str(it.question_id)), model_id, metadata)
            append_jsonl(out_path, [record])
            bar.update()
    return in_question_order(out_path, ids)


def in_question_order(path: str | Path, ids: list[str]) -> list[dict]:
    """Rewrite an answer file with the answers to `ids` first, in that order, then any others it
    holds (another run's questions: kept, not lost); return the answers to `ids`. The file is
    replaced atomically, so a crash leaves the old one, which resumes as before."""
    rows = list(iter_jsonl(path))
    records = {str(r["question_id"]): r for r in rows}
    ordered = [records.pop(i) for i in ids] + list(records.values())
    if ordered != rows:
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ordered))
    return ordered[:len(ids)]
