"""The training dataset (records tokenised up front, images read per batch) and the collator that pads a batch.

Tokenising every record before training finds bad records at once (with the record named) and gives the lengths
that length-grouped sampling needs; images are read in the collator so memory stays flat whatever the data size.
"""

from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from ..data.formats import RecordError, validate_training_record
from ..images import load_image
from .templates import IGNORE_INDEX, TruncationCounter, image_seq_length, tokenize_record, warn_truncation


class ConversationDataset(Dataset):
    """Records -> {input_ids, labels, image (path), id}. With skip_bad, bad records are skipped and listed in
    `self.errors` (a missing image file counts as bad); without it the first one raises, naming the record."""

    def __init__(self, records: list[dict], processor, template: str, max_length: int, image_folder: str | Path,
                 skip_bad: bool = False, source: str = "<records>"):
        self.image_folder = Path(image_folder)
        self.errors: list[str] = []
        self.truncation = TruncationCounter()
        n_image = image_seq_length(processor)
        self.items = []
        for i, record in enumerate(records):
            where = f"{source}: record {i}" + (f" (id {record.get('id')!r})" if isinstance(record, dict) else "")
            try:
                record = validate_training_record(record, where)
                image = self.image_folder / record["image"]
                if not image.is_file():
                    raise RecordError(f"{where}: image file {image} does not exist")
                if skip_bad:  # find unreadable images now, so they are skipped rather than stopping a batch later
                    record_image(image, record["id"])
                item = tokenize_record(record, processor.tokenizer, template, n_image, max_length, self.truncation, where)
            except RecordError as e:
                if not skip_bad:
                    raise
                self.errors.append(str(e))
                continue
            self.items.append({**item, "image": str(image), "id": record["id"]})
        warn_truncation(self.truncation, max_length)
        if not self.items:
            raise RecordError(f"{source}: no usable training records" + (f" ({len(self.errors)} bad)" if self.errors else ""))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]

    @property
    def lengths(self) -> list[int]:
        return [len(item["input_ids"]) for item in self.items]


def record_image(path: str | Path, record_id=None) -> Image.Image:
    """An RGB image, or an error that names the record and the file."""
    try:
        return load_image(path).convert("RGB")
    except (OSError, ValueError) as e:
        raise RecordError(f"record {record_id!r}: {e}") from None


class LlavaCollator:
    """Pads input_ids (with the pad token) and labels (with -100) on the right, and turns the images into
    pixel_values with the processor's image processor."""

    def __init__(self, processor):
        self.image_processor = processor.image_processor
        self.pad_id = processor.tokenizer.pad_token_id

    def __call__(self, batch: list[dict]) -> dict:
        width = max(len(item["input_ids"]) for item in batch)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)  # (B, T)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)  # (B, T)
        for row, item in enumerate(batch):
            n = len(item["input_ids"])
            input_ids[row, :n] = torch.tensor(item["input_ids"])
            labels[row, :n] = torch.tensor(item["labels"])
            attention_mask[row, :n] = 1
        images = [record_image(item["image"], item.get("id")) for item in batch]
        pixel_values = self.image_processor(images, return_tensors="pt")["pixel_values"]  # (B, 3, H, W)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "pixel_values": pixel_values}
