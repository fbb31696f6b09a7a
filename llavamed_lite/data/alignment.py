"""Stage-1 (concept alignment) records: one human turn asking briefly for a description of the image, the answer
the figure's caption. LLaVA-Med drew the request from about ten phrasings; these are our own words."""

import random
from pathlib import Path

from .formats import IMAGE_TOKEN, RecordError, validate_training_record

BRIEF_INSTRUCTIONS = (
    "Describe the image briefly.",
    "Give a short description of this figure.",
    "What does this image show? Answer in a sentence or two.",
    "Summarise the content of the picture concisely.",
    "Write a brief caption for this image.",
    "Provide a concise account of what is visible here.",
    "In a few words, what is shown in this figure?",
    "Briefly explain what this medical image depicts.",
    "Offer a compact summary of the visual content.",
    "Tell me, briefly, what can be seen in the image.",
)


def image_of(record: dict) -> str:
    """A caption record's image, relative to its image root: its "image" field (tiny world, curated PMC), or
    LLaVA-Med's convention `{pair_id}.jpg`."""
    return record.get("image") or f"{record['pair_id']}.jpg"


def alignment_record(record: dict, rng: random.Random) -> dict:
    instruction = rng.choice(BRIEF_INSTRUCTIONS)
    prompt = f"{IMAGE_TOKEN}\n{instruction}" if rng.random() < 0.5 else f"{instruction}\n{IMAGE_TOKEN}"
    return {"id": str(record["pair_id"]), "image": image_of(record),
            "conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": record["fig_caption"]}]}


def alignment_records(caption_records: list[dict], image_dir_or_root: str | Path, seed: int = 0,
                      check_images: bool = True) -> list[dict]:
    """Stage-1 records from caption records (curated PMC figures or the tiny world's captions_train.json).

    `image` in each output record is relative to `image_dir_or_root` (the folder to give the trainer as image
    root): the caption record's "image" when it has one, else `{pair_id}.jpg`. The instruction and the side of
    `<image>` are drawn from `seed` per record, so the same inputs give the same records. With check_images a
    missing image raises RecordError naming the record and the path."""
    root = Path(image_dir_or_root)
    rng = random.Random(seed)
    out = []
    for i, record in enumerate(caption_records):
        where = f"caption record {i} (pair_id {record.get('pair_id')!r})"
        if not isinstance(record, dict) or not isinstance(record.get("fig_caption"), str) or "pair_id" not in record:
            raise RecordError(f"{where}: needs 'pair_id' and a string 'fig_caption'")
        if not record["fig_caption"].strip():
            raise RecordError(f"{where}: empty 'fig_caption'")
        if check_images and not (root / image_of(record)).is_file():
            raise RecordError(f"{where}: image {root / image_of(record)} does not exist")
        out.append(validate_training_record(alignment_record(record, rng), where))
    return out
