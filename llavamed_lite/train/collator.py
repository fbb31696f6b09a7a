"""The training dataset (records tokenised and images checked up front) and
the collator that pads a batch.

Tokenising every record and opening every image before training finds bad records at once, all of
them, named (a truncated or corrupt file would otherwise stop a batch hours in), and gives the
lengths that length-grouped sampling needs. Images are read again in the collator so memory stays
flat whatever the data size; with an image cache they are shrunk once, during the check, to the
model's input size, so a training step no longer decodes 1,000 px JPEGs.
"""

import hashlib
import os
import random
import sys
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from ..data.formats import RecordError, even_parts, validate_training_record
from ..images import load_image
from ..padding import pad_rows
from .templates import (IGNORE_INDEX, TruncationCounter, image_seq_length, tokenize_record,
                        warn_truncation)


class ConversationDataset(Dataset):
    """Records -> {input_ids, labels, image (path), id}. Every record is checked, its image
    opened once: bad records (a missing, truncated, corrupt or too large image counts as bad) are
    listed in `self.errors`; without skip_bad any raises one error listing all of them, with it
    they are skipped and reported. With `image_cache` (a folder) and `image_size` ((side,
    pad_to_square), see image_input_size), images larger than the model's input are read from
    shrunk copies made there once."""

    def __init__(self, records: list[dict], processor, template: str, max_length: int,
                 image_folder: str | Path, skip_bad: bool = False, source: str = "<records>",
                 image_cache: str | Path | None = None, image_size: tuple[int, bool] | None = None):
        if image_cache is not None and image_size is None:
            raise ValueError("image_cache needs image_size (the model's input side and "
                             "pad_to_square)")
        self.image_folder = Path(image_folder)
        self.errors: list[str] = []
        self.truncation = TruncationCounter()
        n_image = image_seq_length(processor)
        self.items = []
        for i, record in enumerate(records):
            where = f"{source}: record {i}"
            if isinstance(record, dict):
                where += f" (id {record.get('id')!r})"
            try:
                record = validate_training_record(record, where)
                image = checked_image(self.image_folder / record["image"], where, image_cache,
                                      image_size)
                item = tokenize_record(record, processor.tokenizer, template, n_image, max_length,
                                       self.truncation, where)
            except RecordError as e:
                self.errors.append(str(e))
                continue
            self.items.append({**item, "image": str(image), "id": record["id"]})
        self.n_records = len(self.items)  # pack_by_image may put several in one row
        warn_truncation(self.truncation, max_length)
        if self.errors and not skip_bad:
            raise RecordError(bad_records_message(source, self.errors))
        if self.errors:
            print(f"{source}: skipped {len(self.errors)} bad records (skip_bad); the first: "
                  f"{self.errors[0]}", file=sys.stderr)
        if not self.items:
            bad = f" ({len(self.errors)} bad)" if self.errors else ""
            raise RecordError(f"{source}: no usable training records{bad}")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]

    @property
    def lengths(self) -> list[int]:
        return [len(item["input_ids"]) for item in self.items]


def bad_records_message(source: str, errors: list[str], shown: int = 20) -> str:
    more = f"\n  ... and {len(errors) - shown} more" if len(errors) > shown else ""
    return (f"{source}: {len(errors)} bad training records (fix them, or set skip_bad=true to "
            "skip them):\n  " + "\n  ".join(errors[:shown]) + more)


def image_input_size(processor) -> tuple[int, bool]:
    """(side, pad_to_square): the processor resizes the shorter side (the
    padded square's side) to `side`."""
    ip = processor.image_processor
    size = ip.crop_size if ip.do_center_crop else ip.size
    get = size.get if isinstance(size, dict) else lambda key: getattr(size, key, None)
    side = get("height") or get("shortest_edge")
    return int(side), bool(getattr(ip, "do_pad", False))


def checked_image(path: Path, where: str, cache: str | Path | None,
                  size: tuple[int, bool] | None) -> Path:
    """Open an image once, fully decoded, and return the file training should read: the image
    itself, or with a cache a copy shrunk to the model's input size (made once, named by the
    source's path, size and time)."""
    if not path.is_file():
        raise RecordError(f"{where}: image file {path} does not exist")
    target = None
    if cache is not None:
        stat = path.stat()
        key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{size}"
        target = Path(cache) / f"{hashlib.sha1(key.encode()).hexdigest()[:24]}.png"
        if target.is_file():
            return target
    try:
        image = load_image(path)
    except (OSError, ValueError) as e:
        raise RecordError(f"{where}: {e}") from None
    if target is None:
        return path
    side, pad = size
    # pad: the square's side is the longer side
    scale = side / (max(image.size) if pad else min(image.size))
    if scale >= 1 and path.suffix.lower() in (".png", ".jpg", ".jpeg"):
        # small enough already (DICOM is cached anyway: it is windowed once, not at every step)
        return path
    if scale < 1:
        new_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(new_size, Image.Resampling.BICUBIC)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.stem}.{os.getpid()}.partial.png")
    image.save(partial)
    os.replace(partial, target)
    return target


def record_image(path: str | Path, record_id=None) -> Image.Image:
    """An RGB image, or an error that names the record and the file."""
    try:
        return load_image(path).convert("RGB")
    except (OSError, ValueError) as e:
        raise RecordError(f"record {record_id!r}: {e}") from None


def pack_by_image(items: list[dict], per_row: int, image_token_id: int, seed: int = 0) -> list[dict]:
    """Rows of up to `per_row` tokenised records about the same image that encode the image once (`pack_questions`).

    A row is the ids all its records start with (`<s>[INST]` and the image tokens) followed by each record's
    remaining ids as its own segment; the collator's mask lets a segment see only that shared start and itself,
    and gives it the positions it has alone, so every answer trains on exactly the context it has alone, unlike
    join_by_image's one conversation, whose later answers read the earlier ones. Records come in a seeded order,
    an image with more than `per_row` of them gets several rows of near-equal size; a record whose image tokens
    would not all fall in the shared start keeps a row of its own."""
    if per_row < 1:
        raise ValueError(f"pack_questions must be >= 1 records per row, got {per_row}")
    rng = random.Random(seed)
    groups: dict[str, list[dict]] = {}
    for item in items:
        groups.setdefault(item["image"], []).append(item)
    rows = []
    for image, group in groups.items():
        for part in even_parts(group, per_row, rng):
            prefix = shared_start(part)
            if any(image_token_id in item["input_ids"][prefix:] for item in part):
                rows += [{**item, "prefix": len(item["input_ids"]), "segments": []} for item in part]
                continue
            ids, labels = list(part[0]["input_ids"][:prefix]), list(part[0]["labels"][:prefix])
            for item in part:
                ids += item["input_ids"][prefix:]
                labels += item["labels"][prefix:]
            rows.append({"input_ids": ids, "labels": labels, "image": image, "prefix": prefix,
                         "segments": [len(item["input_ids"]) - prefix for item in part],
                         "id": "+".join(str(item["id"]) for item in part)})
    return rows


def shared_start(items: list[dict]) -> int:
    """How many leading ids the items share, ending before the token that predicts any item's first
    labelled token (that token must sit in the item's own segment)."""
    first = min(next((i for i, t in enumerate(item["labels"]) if t != IGNORE_INDEX), len(item["labels"]))
                for item in items)
    n = max(0, first - 1)
    for item in items[1:]:
        n = next((i for i, (a, b) in enumerate(zip(items[0]["input_ids"][:n], item["input_ids"])) if a != b), n)
    return n


def segment_attention(rows: list[tuple[int, list[int]]], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask (B, 1, T, T), True where a query may attend a key; position_ids (B, T)) for rows of a shared start of
    `prefix` tokens, then segments of the given lengths, then padding. Causal; a segment sees the shared start and
    itself, its positions continue from the shared start; a padding token sees only itself, so no softmax row is
    empty."""
    block = torch.full((len(rows), width), -1, dtype=torch.long)  # (B, T): 0 shared start, k segment k, -1 padding
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    for i, (prefix, lengths) in enumerate(rows):
        block[i, :prefix] = 0
        position_ids[i, :prefix] = torch.arange(prefix)
        start = prefix
        for k, n in enumerate(lengths, 1):
            block[i, start:start + n] = k
            position_ids[i, start:start + n] = torch.arange(prefix, prefix + n)
            start += n
    query, key = block[:, :, None], block[:, None, :]  # (B, T, 1), (B, 1, T)
    causal = torch.ones(width, width, dtype=torch.bool).tril()  # (T, T)
    seen = causal & (query >= 0) & (key >= 0) & ((key == 0) | (key == query))  # (B, T, T)
    mask = seen | torch.eye(width, dtype=torch.bool)  # (B, T, T)
    return mask[:, None], position_ids


class LlavaCollator:
    """Pads input_ids (with the pad token) and labels (with -100) on the right, and
    turns the images into pixel_values with the processor's image processor, or, with a
    feature cache (train/features.py), into the cached vision features (B, T, D) that
    the tower then passes through. Rows packed by pack_by_image get the 4D attention mask
    and position ids that keep their segments apart."""

    def __init__(self, processor, features=None):
        self.image_processor = processor.image_processor
        self.pad_id = processor.tokenizer.pad_token_id
        self.features = features

    def __call__(self, batch: list[dict]) -> dict:
        input_ids, attention_mask = pad_rows([item["input_ids"] for item in batch], self.pad_id)  # (B, T) each
        labels, _ = pad_rows([item["labels"] for item in batch], IGNORE_INDEX)  # (B, T)
        if self.features is not None:
            pixel_values = self.features.batch([item["image"] for item in batch])  # (B, T, D)
        else:
            images = [record_image(item["image"], item.get("id")) for item in batch]
            pixel_values = self.image_processor(images, return_tensors="pt")["pixel_values"]  # (B, 3, H, W)
        out = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
               "pixel_values": pixel_values}
        if any("segments" in item for item in batch):
            rows = [(item.get("prefix", len(item["input_ids"])), item.get("segments", [])) for item in batch]
            out["attention_mask"], out["position_ids"] = segment_attention(rows, input_ids.shape[1])
        return out
