"""Answer a VQA benchmark with a saved model and score it: out_dir/answers.jsonl (LLaVA-Med's answer
format, in question order) and out_dir/scores.json (`vqa_scores` in the paper's mode, our strict
figures beside them, with a breakdown by question type)."""

import hashlib
from pathlib import Path
from typing import Iterable

from ..io import atomic_write_json
from ..model.compose import load_llava
from .generate import generate_answers
from .metrics import PAPER_METRIC_NOTE, vqa_scores
from .vqa import VQAItem, load_benchmark

ANSWERS_FILE = "answers.jsonl"
SCORES_FILE = "scores.json"
# short VQA answers; chat answers get LLaVA-Med's 1,024 (judge.CHAT_MAX_NEW_TOKENS)
VQA_MAX_NEW_TOKENS = 64


def score_answers(items: Iterable[VQAItem], answers: Iterable[dict]) -> dict:
    """`vqa_scores` (the paper's mode) of answer records against their questions, matched
    by question_id; every question needs an answer. `metric` says which figures are the
    paper's and which are ours."""
    by_id = {str(a["question_id"]): a.get("text", "") for a in answers}
    items = list(items)
    missing = [it.question_id for it in items if str(it.question_id) not in by_id]
    if missing:
        raise ValueError(f"{len(missing)} question(s) have no answer, e.g. {missing[:3]}")
    return {"metric": PAPER_METRIC_NOTE,
            **vqa_scores([by_id[str(it.question_id)] for it in items], [it.answer for it in items],
                         [it.answer_type for it in items], [it.question_type for it in items])}


def default_model_id(model_dir: str | Path) -> str:
    # e.g. "stage2/model": stages all save to "model"
    return "/".join(Path(model_dir).resolve().parts[-2:])


def model_fingerprint(model_dir: str | Path) -> str:
    """What identifies a saved model's answers: a hash of its config.json and of each weight file's
    name, size and modification time (cheap on a 14 GB model, and new whenever the folder is
    retrained or replaced in place)."""
    model_dir, digest = Path(model_dir), hashlib.sha256()
    if (model_dir / "config.json").is_file():
        digest.update((model_dir / "config.json").read_bytes())
    for path in sorted(model_dir.iterdir()) if model_dir.is_dir() else []:
        weights = path.name.endswith((".safetensors", ".bin", ".safetensors.index.json"))
        if path.is_file() and weights:
            stat = path.stat()
            digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def answer_items(model_dir: str | Path, items: Iterable[VQAItem], out_path: str | Path,
                 model_id: str | None = None, batch_size: int = 16, max_new_tokens: int = 64,
                 device: str = "auto", dtype: str = "auto", progress: bool = True,
                 restart: bool = False, load_in_4bit: bool = False) -> list[dict]:
    """Load a saved model and answer any questions (a benchmark's, the chat evaluation's) into an
    answer file, resuming it when the same weights wrote it (`model_fingerprint`; another model's
    file is refused), or starting it afresh with `restart`; return all its answer records."""
    if restart:
        Path(out_path).unlink(missing_ok=True)
    model, processor = load_llava(model_dir, dtype=dtype, device=device, load_in_4bit=load_in_4bit)
    return generate_answers(model, processor, items, out_path,
                            model_id or default_model_id(model_dir), batch_size, max_new_tokens,
                            progress, fingerprint=model_fingerprint(model_dir))


def evaluate(model_dir: str | Path, benchmark: str, out_dir: str | Path, split: str = "test",
             source: str | Path | None = None, batch_size: int = 16, limit: int | None = None,
             closed_suffix: bool = False, max_new_tokens: int = VQA_MAX_NEW_TOKENS,
             model_id: str | None = None, device: str = "auto", dtype: str = "auto",
             progress: bool = True, restart: bool = False, load_in_4bit: bool = False) -> dict:
    """Load a saved model, answer the benchmark's questions (resuming answers.jsonl), write and
    return the scores. Answers written by other weights (another model, or this folder before it was
    retrained) are never resumed: the run is refused until `restart` deletes them."""
    items = load_benchmark(benchmark, split, source, closed_suffix=closed_suffix)
    if limit is not None:
        items = items[:limit]
    if not items:
        raise ValueError(f"{benchmark} ({split}{', ' + str(source) if source else ''}"
                         f"{f', limit {limit}' if limit is not None else ''}): "
                         "no questions to answer")
    model_id, out_dir = model_id or default_model_id(model_dir), Path(out_dir)
    answers = answer_items(model_dir, items, out_dir / ANSWERS_FILE, model_id, batch_size,
                           max_new_tokens, device, dtype, progress, restart, load_in_4bit)
    scores = {"benchmark": benchmark, "split": split, "model_id": model_id,
              "n_questions": len(items), "closed_suffix": closed_suffix,
              **score_answers(items, answers)}
    atomic_write_json(out_dir / SCORES_FILE, scores)
    return scores
