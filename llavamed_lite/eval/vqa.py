"""VQA benchmarks read into one record type, `VQAItem`, and written back as LLaVA-Med VQA records.

Readers (each checks every row and names the file and row of the first bad one):
- `load_vqa_rad(split)`: the MEVF split JSON in data_samples/vqa_rad/data_RAD, without the templated
  `phrase_type == "frame"` rows (1,797 train / 451 test questions, as in LLaVA-Med).
- `load_vqa_rad_original(split)`: the original OSF release JSON (test = the `test_*` phrase types).
- `load_slake(split)`: SLAKE 1.0's official JSON, English rows (test: 1,061 questions).
- `load_pathvqa(source, split)`: PathVQA's Hugging Face parquet layout (columns image {bytes, path},
  question, answer).
- `load_llava_vqa(path)`: LLaVA-Med's VQA JSON `{id, image, answer_type, question_type,
  conversations}`; the tiny world writes its questions in this format.
`load_benchmark(name, split)` picks one by name. `closed_suffix=True` appends
LLaVA-Med's closed-question suffix.
"""

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

from ..data.formats import (ANSWER_TYPES, IMAGE_TOKEN, RecordError, conversations_of, load_records,
                            validate_conversation)
from ..io import atomic_write_json, read_json
from ..paths import DATA_SAMPLES

CLOSED_SUFFIX = " Please choose from the following two options: [yes, no]"
VQA_RAD_DIR = DATA_SAMPLES / "vqa_rad"
SLAKE_DIR = DATA_SAMPLES / "slake" / "Slake1.0"
SPLITS = ("train", "validation", "test")


@dataclass
class VQAItem:
    """One question about one image. `image` is a file path; `answer_type` is "OPEN" or "CLOSED"."""

    # the file's own id: an int stays an int in answer files, as LLaVA-Med's scorers expect
    question_id: str | int
    image: str
    question: str
    answer: str
    answer_type: str
    question_type: str = ""
    metadata: dict = field(default_factory=dict)


def with_closed_suffix(items: Iterable[VQAItem]) -> list[VQAItem]:
    """LLaVA-Med's VQA-RAD evaluation appended a yes/no instruction to every
    CLOSED question; so does this."""
    return [replace(it, question=it.question + CLOSED_SUFFIX)
            if it.answer_type == "CLOSED" and not it.question.endswith(CLOSED_SUFFIX) else it
            for it in items]


# ---- row checking --------------------------------------------------------------------------------
def _where(path: Path, index: int, row: Any, id_key: str) -> str:
    rid = row.get(id_key) if isinstance(row, dict) else None
    return f"{path}: row {index}" + (f" ({id_key} {rid!r})" if rid is not None else "")


def _text(row: dict, key: str, where: str, allow_number: bool = False) -> str:
    """A string field; numbers are accepted where real files hold them
    (VQA-RAD has answers such as 4)."""
    if key not in row:
        raise RecordError(f"{where}: missing field {key!r}")
    value = row[key]
    if allow_number and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        raise RecordError(f"{where}: field {key!r} must be a non-empty string, got {value!r}")
    return value.strip()


def _answer_type(row: dict, where: str, key: str = "answer_type") -> str:
    """"OPEN" or "CLOSED"; real files have "CLOSED " and lower case."""
    value = row.get(key)
    kind = value.strip().upper() if isinstance(value, str) else None
    if kind not in ANSWER_TYPES:
        raise RecordError(f"{where}: unknown {key} {value!r} (expected OPEN or CLOSED)")
    return kind


def _image(folder: Path, name: str, where: str, check: bool) -> str:
    path = Path(name) if Path(name).is_absolute() else folder / name
    if check and not path.is_file():
        raise RecordError(f"{where}: image {str(path)!r} does not exist")
    return str(path)


def _rows(path: Path) -> list:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    data = read_json(path)
    if not isinstance(data, list):
        raise RecordError(f"{path}: expected a JSON list of rows, got {type(data).__name__}")
    return data


def _check_split(split: str, allowed: tuple[str, ...]) -> str:
    if split not in allowed:
        raise ValueError(f"unknown split {split!r}: choose one of {', '.join(allowed)}")
    return split


# ---- VQA-RAD -------------------------------------------------------------------------------------
def load_vqa_rad(split: str = "test", root: str | Path = VQA_RAD_DIR, check_images: bool = True,
                 closed_suffix: bool = False) -> list[VQAItem]:
    """The MEVF split (data_RAD/{trainset,testset}.json) that LLaVA-Med
    used, without the "frame" rows."""
    _check_split(split, ("train", "test"))
    root = Path(root)
    path = root / "data_RAD" / ("trainset.json" if split == "train" else "testset.json")
    items = []
    for i, row in enumerate(_rows(path)):
        where = _where(path, i, row, "qid")
        if not isinstance(row, dict):
            raise RecordError(f"{where}: expected an object, got {type(row).__name__}")
        if row.get("phrase_type") == "frame":
            continue
        items.append(_vqa_rad_item(row, where, root, f"vqa-rad-{split}", "vqa-rad",
                                   row.get("phrase_type"), check_images))
    return with_closed_suffix(items) if closed_suffix else items


def load_vqa_rad_original(split: str = "test", root: str | Path = VQA_RAD_DIR,
                          check_images: bool = True, closed_suffix: bool = False) -> list[VQAItem]:
    """The original OSF release (one JSON, 2,248 rows): test = phrase types test_freeform/test_para,
    train = the rest. Same 451 test questions as the MEVF split."""
    _check_split(split, ("train", "test"))
    root = Path(root)
    path = root / "original_osf" / "VQA_RAD Dataset Public.json"
    items = []
    for i, row in enumerate(_rows(path)):
        where = _where(path, i, row, "qid")
        if not isinstance(row, dict):
            raise RecordError(f"{where}: expected an object, got {type(row).__name__}")
        phrase = _text(row, "phrase_type", where)
        if phrase.startswith("test_") != (split == "test"):
            continue
        items.append(_vqa_rad_item(row, where, root, "vqa-rad-osf", "vqa-rad-osf", phrase,
                                   check_images))
    return with_closed_suffix(items) if closed_suffix else items


def _vqa_rad_item(row: dict, where: str, root: Path, id_prefix: str, source: str,
                  phrase: str | None, check_images: bool) -> VQAItem:
    """One VQA-RAD row (both releases share the fields) as a VQAItem."""
    return VQAItem(
        question_id=f"{id_prefix}-{_text(row, 'qid', where, allow_number=True)}",
        image=_image(root / "data_RAD" / "images", _text(row, "image_name", where), where,
                     check_images),
        question=_text(row, "question", where),
        answer=_text(row, "answer", where, allow_number=True),
        answer_type=_answer_type(row, where), question_type=str(row.get("question_type") or ""),
        metadata={"source": source, "qid": row["qid"], "image_organ": row.get("image_organ"),
                  "phrase_type": phrase})


# ---- SLAKE ---------------------------------------------------------------------------------------
def load_slake(split: str = "test", root: str | Path = SLAKE_DIR, language: str = "en",
               check_images: bool = True, closed_suffix: bool = False) -> list[VQAItem]:
    """SLAKE 1.0's official JSON (train.json / validate.json / test.json), rows with q_lang ==
    language. question_type is SLAKE's content_type (Organ, Position, Abnormality, ...)."""
    _check_split(split, SPLITS)
    root = Path(root)
    path = root / {"train": "train.json", "validation": "validate.json", "test": "test.json"}[split]
    items = []
    for i, row in enumerate(_rows(path)):
        where = _where(path, i, row, "qid")
        if not isinstance(row, dict):
            raise RecordError(f"{where}: expected an object, got {type(row).__name__}")
        if _text(row, "q_lang", where) != language:
            continue
        items.append(VQAItem(
            question_id=f"slake-{_text(row, 'qid', where, allow_number=True)}",
            image=_image(root / "imgs", _text(row, "img_name", where), where, check_images),
            question=_text(row, "question", where),
            answer=_text(row, "answer", where, allow_number=True),
            answer_type=_answer_type(row, where), question_type=str(row.get("content_type") or ""),
            metadata={"source": "slake", "qid": row["qid"], "img_id": row.get("img_id"),
                      "modality": row.get("modality"), "location": row.get("location"),
                      "base_type": row.get("base_type")}))
    return with_closed_suffix(items) if closed_suffix else items


# ---- PathVQA -------------------------------------------------------------------------------------
def load_pathvqa(source: str | Path, split: str = "test", image_dir: str | Path | None = None,
                 closed_suffix: bool = False) -> list[VQAItem]:
    """PathVQA in its Hugging Face layout: parquet files `{split}-*.parquet` (or one file) with
    columns image {bytes, path}, question, answer. It has no answer_type: yes/no answers are CLOSED,
    as in the paper. Image bytes are written once to `image_dir` (default:
    `<source>/images/<split>`) so items carry a path."""
    # only PathVQA needs it; this module stays light for the `evaluate` command line
    import pyarrow.parquet as pq

    _check_split(split, SPLITS)
    source = Path(source)
    if source.is_dir():
        names = {"validation": ("validation", "val")}.get(split, (split,))
        files = sorted(p for n in names for p in source.rglob(f"{n}-*.parquet"))
        if not files:
            raise FileNotFoundError(f"{source}: no {split}-*.parquet files (PathVQA's Hugging Face "
                                    "layout)")
        folder = source
    elif source.is_file():
        files, folder = [source], source.parent
    else:
        raise FileNotFoundError(f"{source}: no such file or folder")
    image_dir = Path(image_dir) if image_dir is not None else folder / "images" / split
    items = []
    for path in files:
        try:
            table = pq.read_table(path)
        except Exception as e:  # pyarrow raises several types for truncated or non-parquet files
            raise RecordError(f"{path}: not a readable parquet file ({e})") from None
        missing = {"image", "question", "answer"} - set(table.column_names)
        if missing:
            raise RecordError(f"{path}: missing column(s) {sorted(missing)} (expected image, "
                              "question, answer)")
        for i, row in enumerate(table.to_pylist()):
            where = f"{path}: row {i}"
            question = _text(row, "question", where)
            answer = _text(row, "answer", where, allow_number=True)
            items.append(VQAItem(
                question_id=f"pathvqa-{split}-{len(items)}",
                image=_pathvqa_image(row.get("image"), image_dir, folder, where), question=question,
                answer=answer, answer_type="CLOSED" if answer.lower() in ("yes", "no") else "OPEN",
                question_type="",
                metadata={"source": "pathvqa", "file": path.name, "row": i}))
    return with_closed_suffix(items) if closed_suffix else items


def _pathvqa_image(image: Any, image_dir: Path, folder: Path, where: str) -> str:
    """Save the row's image bytes under a name from their hash (identical images share a
    file), or resolve its path."""
    if not isinstance(image, dict):
        raise RecordError(f"{where}: field 'image' must be a struct {{bytes, path}}, "
                          f"got {type(image).__name__}")
    data, name = image.get("bytes"), image.get("path")
    if isinstance(data, (bytes, bytearray)) and data:
        suffix = Path(name).suffix if isinstance(name, str) and Path(name).suffix else ".jpg"
        path = image_dir / (hashlib.sha256(data).hexdigest()[:20] + suffix)
        if not path.exists():
            image_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return str(path)
    if isinstance(name, str) and name:
        return _image(folder, name, where, check=True)
    raise RecordError(f"{where}: field 'image' has neither bytes nor a path")


# ---- LLaVA-Med VQA records -----------------------------------------------------------------------
def load_llava_vqa(path: str | Path, image_folder: str | Path | None = None,
                   check_images: bool = True, closed_suffix: bool = False) -> list[VQAItem]:
    """LLaVA-Med's VQA JSON (or JSONL): {id, image, answer_type, question_type,
    conversations}. Image paths are relative to `image_folder` (default: the file's folder).
    The question is the first human turn without `<image>` (and without the closed suffix);
    the answer is the first gpt turn."""
    path = Path(path)
    folder = Path(image_folder) if image_folder is not None else path.parent
    items = []
    for i, row in enumerate(load_records(path)):
        where = _where(path, i, row, "id")
        if not isinstance(row, dict):
            raise RecordError(f"{where}: expected an object, got {type(row).__name__}")
        convs = validate_conversation(conversations_of(row, where), where)
        question = convs[0]["value"].replace(IMAGE_TOKEN, "").strip()
        if question.endswith(CLOSED_SUFFIX.strip()):
            question = question[: -len(CLOSED_SUFFIX.strip())].strip()
        if "id" not in row or isinstance(row["id"], (dict, list, bool)) or row["id"] is None:
            raise RecordError(f"{where}: field 'id' must be a string or a number")
        extra = {k: v for k, v in row.items()
                 if k not in ("id", "image", "answer_type", "question_type", "conversations",
                              "conversatons")}
        items.append(VQAItem(
            question_id=row["id"],
            image=_image(folder, _text(row, "image", where), where, check_images),
            question=question, answer=convs[1]["value"].strip(),
            answer_type=_answer_type(row, where),
            question_type=str(row.get("question_type") or ""), metadata=extra))
    return with_closed_suffix(items) if closed_suffix else items


def to_llava_record(item: VQAItem, image_folder: str | Path | None = None,
                    closed_suffix: bool = False) -> dict:
    """A LLaVA-Med VQA record (image path relative to image_folder when
    given), for VQA fine-tuning files."""
    image = item.image
    if image_folder is not None:
        try:
            image = str(Path(image).relative_to(Path(image_folder)))
        except ValueError:
            raise ValueError(f"question {item.question_id}: image {image} is not under "
                             f"{image_folder}") from None
    question = item.question
    if closed_suffix and item.answer_type == "CLOSED" and not question.endswith(CLOSED_SUFFIX):
        question += CLOSED_SUFFIX
    record = {"id": item.question_id, "image": image, "answer_type": item.answer_type,
              "question_type": item.question_type,
              "conversations": [{"from": "human", "value": f"{IMAGE_TOKEN}\n{question}"},
                                {"from": "gpt", "value": item.answer}]}
    record.update({k: v for k, v in item.metadata.items() if k not in record})
    return record


def with_small_images(items: Iterable[VQAItem], out_dir: str | Path,
                      max_side: int) -> list[VQAItem]:
    """The items with their images shrunk (aspect kept) so that the longer side is at most
    `max_side`, saved once as PNG under `out_dir` (named by the original's file stem).
    Real benchmark images are 500-1300 px; a 64 px model reading them at every training
    step spends its time resizing."""
    # PIL and pydicom only to shrink images: reading benchmarks stays light
    # for the `evaluate` command line
    from PIL import Image

    from ..images import load_image

    out_dir, out, done = Path(out_dir), [], {}
    for it in items:
        if it.image not in done:
            target = out_dir / (Path(it.image).stem + ".png")
            if not target.exists():
                try:
                    image = load_image(it.image)
                except (OSError, ValueError) as e:
                    raise RecordError(f"question {it.question_id}: {e}") from None
                image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
                out_dir.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(target.name + ".tmp")
                image.save(tmp, format="PNG")
                tmp.replace(target)
            done[it.image] = str(target)
        out.append(replace(it, image=done[it.image]))
    return out


def write_llava_vqa(path: str | Path, items: Iterable[VQAItem],
                    image_folder: str | Path | None = None, closed_suffix: bool = False) -> Path:
    return atomic_write_json(path, [to_llava_record(it, image_folder, closed_suffix)
                                    for it in items])


# ---- by name -------------------------------------------------------------------------------------
BENCHMARKS = ("tiny", "vqa-rad", "slake", "pathvqa")


def load_benchmark(name: str, split: str = "test", source: str | Path | None = None,
                   closed_suffix: bool = False) -> list[VQAItem]:
    """A benchmark by name. `source`: for "tiny", the tiny world's folder (run_dir/data) or a VQA
    JSON file; for "pathvqa", the parquet folder or file; for "vqa-rad"/"slake", another copy of the
    data (default: data_samples/)."""
    if name == "vqa-rad":
        return load_vqa_rad(split, source or VQA_RAD_DIR, closed_suffix=closed_suffix)
    if name == "slake":
        return load_slake(split, source or SLAKE_DIR, closed_suffix=closed_suffix)
    if name == "pathvqa":
        if source is None:
            raise ValueError("PathVQA is not shipped (its images are copyrighted): "
                             "pass its parquet folder (--data, or source=)")
        return load_pathvqa(source, split, closed_suffix=closed_suffix)
    if name == "tiny":
        if source is None:
            raise ValueError("the tiny benchmark needs its data (--data, or source=): "
                             "the tiny world's folder (run_dir/data) or a VQA JSON file")
        source = Path(source)
        if source.is_dir():
            source = source / ("vqa_train.json" if split == "train" else "vqa_heldout.json")
        return load_llava_vqa(source, closed_suffix=closed_suffix)
    raise ValueError(f"unknown benchmark {name!r}: choose one of {', '.join(BENCHMARKS)}")
