"""LLaVA-Med's record formats, read and validated with errors that name the file, record and field.

- caption file: {pair_id, pmid, fig_id, fig_label, fig_caption, in_text_mention, domain: {chest_xray, mri, ...}}
- image manifest (JSONL): {pmc_tar_url, image_file_path, pair_id}
- training records: {id, image, conversations: [{from: human|gpt, value}]} (instruct adds domain; VQA adds
  answer_type, question_type). Released alignment files spell the key `conversatons`: both are accepted.
- answer files (JSONL): {question_id, prompt, text, answer_id, model_id, metadata}
"""

import random
from pathlib import Path
from typing import Any, Iterable

from ..io import atomic_write_json, iter_jsonl, read_json

IMAGE_TOKEN = "<image>"
DOMAINS = ("chest_xray", "mri", "histology", "gross", "ct_scan")
DOMAIN_NAMES = {"chest_xray": "chest X-ray", "mri": "MRI", "histology": "histology", "gross": "gross pathology",
                "ct_scan": "CT"}
ANSWER_TYPES = ("OPEN", "CLOSED")
CAPTION_FIELDS = ("pair_id", "pmid", "fig_id", "fig_label", "fig_caption", "in_text_mention", "domain")
ANSWER_FIELDS = ("question_id", "prompt", "text", "answer_id", "model_id", "metadata")


class RecordError(ValueError):
    """A record that breaks its format; the message names the file, the record and the field."""


def _where(path: Any, index: int, record: Any) -> str:
    rid = record.get("id", record.get("pair_id", record.get("question_id"))) if isinstance(record, dict) else None
    return f"{path or '<records>'}: record {index}" + (f" (id {rid!r})" if rid is not None else "")


def load_records(path: str | Path) -> list[dict]:
    """A JSON list of records, or JSON lines."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such records file")
    if path.suffix == ".jsonl":
        return list(iter_jsonl(path, skip_truncated_tail=False))
    data = read_json(path)
    if not isinstance(data, list):
        raise RecordError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return data


def write_records(path: str | Path, records: Iterable[dict]) -> Path:
    """Write a JSON list atomically (temp file + rename)."""
    return atomic_write_json(path, list(records))


# ---- caption files -------------------------------------------------------------------------------------------
def validate_caption_record(record: Any, where: str = "<record>") -> dict:
    if not isinstance(record, dict):
        raise RecordError(f"{where}: expected an object, got {type(record).__name__}")
    for key in CAPTION_FIELDS:
        if key not in record:
            raise RecordError(f"{where}: missing field {key!r}")
    if not isinstance(record["fig_caption"], str) or not record["fig_caption"].strip():
        raise RecordError(f"{where}: field 'fig_caption' must be a non-empty string")
    mentions = record["in_text_mention"]
    if not isinstance(mentions, list) or not all(
        isinstance(m, str) or (isinstance(m, dict) and isinstance(m.get("tokens"), str)) for m in mentions
    ):
        raise RecordError(f"{where}: field 'in_text_mention' must be a list of strings or of {{'tokens': str}}")
    domain = record["domain"]
    if (not isinstance(domain, dict) or set(domain) - set(DOMAINS)
            or not all(isinstance(v, bool) for v in domain.values())):
        raise RecordError(f"{where}: field 'domain' must map some of {DOMAINS} to true/false")
    return record


def mention_texts(record: dict) -> list[str]:
    """in_text_mention as plain strings (the released files use either strings or {"tokens": ...})."""
    return [m if isinstance(m, str) else m["tokens"] for m in record.get("in_text_mention") or []]


def record_domain(record: dict) -> str | None:
    """The one domain flagged true in a caption/instruct record (instruct records may give it as a string)."""
    domain = record.get("domain")
    if isinstance(domain, str):
        return domain
    hits = [d for d in DOMAINS if (domain or {}).get(d)]
    return hits[0] if hits else None


def read_caption_file(path: str | Path) -> list[dict]:
    """A caption file: a list of records, or LLaVA-Med's dict of domain -> list of records."""
    path = Path(path)
    data = read_json(path)
    if isinstance(data, dict):
        data = [r for group in data.values() if isinstance(group, list) for r in group]
    if not isinstance(data, list):
        raise RecordError(f"{path}: expected a list of caption records or a dict of domain -> list")
    return [validate_caption_record(r, _where(path, i, r)) for i, r in enumerate(data)]


# ---- training records ----------------------------------------------------------------------------------------
def conversations_of(record: dict, where: str = "<record>") -> list[dict]:
    """The record's turns, accepting the released files' misspelling `conversatons`."""
    convs = record.get("conversations", record.get("conversatons"))
    if convs is None:
        raise RecordError(f"{where}: missing field 'conversations'")
    return convs


def validate_conversation(convs: Any, where: str = "<record>", needs_image: bool = True) -> list[dict]:
    """Turns alternate human/gpt starting with human, every value a string, `<image>` once, in the first turn."""
    if not isinstance(convs, list) or not convs:
        raise RecordError(f"{where}: the conversation is empty")
    for t, turn in enumerate(convs):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise RecordError(f"{where}: turn {t} must be an object with 'from' and 'value'")
        expected = "human" if t % 2 == 0 else "gpt"
        if turn["from"] != expected:
            raise RecordError(f"{where}: turn {t} is from {turn['from']!r}, expected {expected!r} "
                              "(roles alternate, human first)")
        if not isinstance(turn["value"], str):
            raise RecordError(f"{where}: turn {t} 'value' must be a string")
    if len(convs) % 2:
        raise RecordError(f"{where}: the conversation ends with a human turn that has no answer")
    n_images = sum(turn["value"].count(IMAGE_TOKEN) for turn in convs)
    if needs_image and (n_images != 1 or IMAGE_TOKEN not in convs[0]["value"]):
        raise RecordError(f"{where}: expected exactly one {IMAGE_TOKEN} token, in the first human turn "
                          f"(found {n_images})")
    return convs


def validate_training_record(record: Any, where: str = "<record>", needs_image: bool = True) -> dict:
    if not isinstance(record, dict):
        raise RecordError(f"{where}: expected an object, got {type(record).__name__}")
    for key in ("id", "image") if needs_image else ("id",):
        if key not in record:
            raise RecordError(f"{where}: missing field {key!r}")
    convs = validate_conversation(conversations_of(record, where), where, needs_image)
    if "conversations" not in record:
        record = {**{k: v for k, v in record.items() if k != "conversatons"}, "conversations": convs}
    if "answer_type" in record and str(record["answer_type"]).strip().upper() not in ANSWER_TYPES:
        raise RecordError(f"{where}: unknown answer_type {record['answer_type']!r} (expected OPEN or CLOSED)")
    return record


def join_by_image(records: list[dict], seed: int = 0, max_questions: int = 10) -> list[dict]:
    """Multi-turn conversations about one image from single-question records (LLaVA-1.5's way with VQAv2): the
    image and the prompt's frame are encoded once for up to `max_questions` of an image's questions (an image with
    more gets several conversations of near-equal size), and every answer is still trained. Questions come in a
    seeded random order, so no answer always follows the same earlier one. Records that are not one well-formed
    question about an image pass through unchanged, for the dataset's checks to report."""
    rng = random.Random(seed)
    groups: dict[str, list[dict]] = {}
    joined: list[dict] = []
    for record in records:
        try:
            validate_training_record(record)
            single = len(record["conversations"]) == 2 and isinstance(record["image"], str)
        except RecordError:
            single = False
        if single:
            groups.setdefault(record["image"], []).append(record)
        else:
            joined.append(record)
    for image, group in groups.items():
        for part in even_parts(group, max_questions, rng):
            turns = []
            for k, record in enumerate(part):
                question, answer = record["conversations"]
                text = question["value"].replace(IMAGE_TOKEN, "").strip()
                turns += [{"from": "human", "value": f"{IMAGE_TOKEN}\n{text}" if k == 0 else text}, answer]
            ids = [str(record["id"]) for record in part]
            joined.append({"id": ids[0] if len(ids) == 1 else f"{ids[0]}+{len(ids) - 1}", "image": image,
                           "conversations": turns})
    return joined


def even_parts(items: list, most: int, rng: random.Random) -> list[list]:
    """The items shuffled with `rng` and dealt into the fewest parts of at most `most` items each, of near-equal
    size (23 at most 10 -> 8, 8, 7): an image's questions for join_by_image and train.collator.pack_by_image."""
    items = list(items)
    rng.shuffle(items)
    n_parts = -(-len(items) // most)
    return [items[k::n_parts] for k in range(n_parts)]


def read_training_records(path: str | Path, skip_bad: bool = False) -> tuple[list[dict], list[str]]:
    """Alignment, instruct or VQA records. Returns (records, errors): with skip_bad, bad records are skipped and
    their errors returned; without it the first bad record raises."""
    records, errors = [], []
    for i, record in enumerate(load_records(path)):
        try:
            records.append(validate_training_record(record, _where(path, i, record)))
        except RecordError as e:
            if not skip_bad:
                raise
            errors.append(str(e))
    return records, errors


# ---- answer files --------------------------------------------------------------------------------------------
def answer_record(question_id: Any, prompt: str, text: str, answer_id: str, model_id: str,
                  metadata: dict | None = None) -> dict:
    return {"question_id": question_id, "prompt": prompt, "text": text, "answer_id": answer_id,
            "model_id": model_id, "metadata": metadata or {}}
