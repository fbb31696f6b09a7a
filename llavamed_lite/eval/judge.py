"""LLaVA-Med's chat evaluation: an LLM judge compares the model's answer with a reference answer.

Set up as in the paper. The judge is told that the user asked the question while looking at an
image, which it cannot see: the figure's caption and context (the article's sentences citing it)
stand in for the image. It sees the question, the reference answer (GPT-4's in the paper, written
from the caption) as Assistant 1 and the model's answer as Assistant 2, rates both for helpfulness,
relevance, accuracy and level of detail from 1 to 10, and puts "score_ref score_model" on its first
line, then explains. It is not told how either answer was written (the reference writer read the
caption, the model saw the image); nothing it is told is false. It answers at temperature 0. The
paper's relative score is the mean over questions of score_model / score_ref x 100, grouped by
question type ("conversation", "detailed_description") and by domain.

The model's chat answers are written greedily with up to CHAT_MAX_NEW_TOKENS new tokens,
LLaVA-Med's 1,024: a detailed description cut short would lower the judge's score for a
reason that is not the model's.

Requests go through the instruction-synthesis engine (llavamed_lite.instruct): cached, concurrent,
retried. The judge is the one the caller names, never one picked because a key is in the
environment: by default the local stand-in (judge_stand_in.py: rule-based, offline, not comparable
with GPT-4's numbers), or with `base_url` any OpenAI-compatible server, or with backend="openai" and
no base_url OpenAI itself (OPENAI_API_KEY). Results carry the judge's name. The chat-evaluation
questions for the tiny world come from `chat_questions(caption_records)`.
"""

import asyncio
import concurrent.futures
import json
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from ..data.formats import DOMAIN_NAMES, mention_texts, record_domain
from ..instruct.cache import ResponseCache, request_key
from ..instruct.client import Request
from ..instruct.engine import run_requests
from ..instruct.offline import answer_sentence
from ..instruct.prompts import user_message
from ..instruct.synthesize import make_backend
from ..io import atomic_write_json, atomic_write_text
from ..synth.questions import describe, questions_for
from .judge_stand_in import StandInJudge
from .vqa import VQAItem

CHAT_TYPES = ("conversation", "detailed_description")
DETAIL_PROMPTS = ("Describe this image in detail.",
                  "Give a detailed description of what this figure shows.",
                  "Walk me through the findings in this image.",
                  "What are the key findings in this image?")

# LLaVA-Med's cap on chat answers (short VQA answers: evaluate.VQA_MAX_NEW_TOKENS)
CHAT_MAX_NEW_TOKENS = 1024
JUDGE_BACKENDS = ("stand-in", "openai")
# what the judge's prompt is built from
QUESTION_FIELDS = ("question_id", "text", "gpt4_answer", "fig_caption")
SCORES_FILE, REVIEWS_FILE = "judge_scores.json", "judge_reviews.jsonl"

JUDGE_SYSTEM = "You are a precise and helpful assistant who reviews the quality of answers."
JUDGE_INSTRUCTIONS = (
    "Please give your feedback on how well two AI assistants answered the user's question above. "
    "The user asked it while looking at a biomedical image. You cannot see the image: the figure "
    "caption and context above describe what it shows.\n"
    "Rate the helpfulness, relevance, accuracy and level of detail of each answer, and give each "
    "assistant one overall score from 1 to 10, where a higher score means a better answer "
    "overall.\n"
    "On the first line write only the two scores, Assistant 1 first, separated by a space (for "
    "example: 8 6). From the next line on, explain your evaluation in full. Stay impartial: the "
    "order in which the two answers were presented must not affect your judgment."
)


# ---- chat-evaluation questions -------------------------------------------------------------------
def chat_questions(caption_records: Iterable[dict], n_conversation: int = 3,
                   seed: int = 0) -> list[dict]:
    """Questions in LLaVA-Med's chat-evaluation format from tiny-world caption records (which carry
    `findings` and `image`): per figure one "detailed_description" (reference: a plain description
    of the findings) and up to `n_conversation` "conversation" questions (reference: one true
    sentence about the finding asked for)."""
    rng = np.random.default_rng(seed)
    out = []
    for i, record in enumerate(caption_records):
        findings = record.get("findings")
        if not isinstance(findings, dict) or "image" not in record:
            raise ValueError(f"caption record {i} (pair_id {record.get('pair_id')!r}): chat "
                             "questions need the tiny world's 'findings' and 'image' fields")
        asked = questions_for(findings, rng)
        picks = [asked[int(k)] for k in rng.permutation(len(asked))[:n_conversation]]
        detail = DETAIL_PROMPTS[int(rng.integers(len(DETAIL_PROMPTS)))]
        pairs = [(detail, describe(findings), "detailed_description")]
        pairs += [(q["question"], answer_sentence(findings, q), "conversation") for q in picks]
        for text, reference, kind in pairs:
            out.append({"question_id": len(out), "image": record["image"],
                        "pair_id": record["pair_id"], "text": text, "gpt4_answer": reference,
                        "fig_caption": record["fig_caption"],
                        "in_text_mention": record.get("in_text_mention", []),
                        "domain": record["domain"], "type": kind,
                        "fig_label": record.get("fig_label", "")})
    return out


def chat_items(questions: Iterable[dict], image_folder: str | Path) -> list[VQAItem]:
    """Chat questions as VQAItems, so `generate_answers` answers them like any benchmark."""
    return [VQAItem(q["question_id"], str(Path(image_folder) / q["image"]), q["text"],
                    q["gpt4_answer"], "OPEN", q["type"],
                    {"pair_id": q["pair_id"], "domain": record_domain(q)})
            for q in questions]


def answer_chat(model_dir: str | Path, questions: list[dict], image_folder: str | Path,
                out_path: str | Path, max_new_tokens: int = CHAT_MAX_NEW_TOKENS,
                **kwargs) -> list[dict]:
    """A saved model's answers to chat questions, greedy, up to LLaVA-Med's 1,024 new tokens
    unless told otherwise, resuming `out_path`; kwargs go to `evaluate.answer_items` (batch_size,
    device, progress, restart, ...)."""
    # torch and transformers: judging saved answers does not need them
    from .evaluate import answer_items

    return answer_items(model_dir, chat_items(questions, image_folder), out_path,
                        max_new_tokens=max_new_tokens, **kwargs)


# ---- the judge's prompt and reply ----------------------------------------------------------------
def judge_messages(question: dict, model_answer: str) -> list[dict]:
    """Assistant 1 is the reference, Assistant 2 the model (the order of LLaVA-Med's reviews). The
    context is the caption and the inline mentions, as the instruction prompts show them."""
    context = user_message(question.get("fig_label") or "Figure", question["fig_caption"],
                           mention_texts(question))
    user = (f"[Context]\n{context}\n\n[Question]\n{question['text']}\n\n"
            f"[Assistant 1]\n{question['gpt4_answer']}\n[End of Assistant 1]\n\n"
            f"[Assistant 2]\n{model_answer}\n[End of Assistant 2]\n\n"
            f"[Instructions]\n{JUDGE_INSTRUCTIONS}")
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def preview_prompt(question: dict, model_answer: str) -> str:
    """The judge's messages as readable text."""
    return "\n\n".join(f"--- {m['role']} ---\n{m['content']}"
                       for m in judge_messages(question, model_answer))


class JudgeParseError(ValueError):
    """A judge reply without two usable scores on its first line: `reason` is a short category
    (failures are counted by it), the message adds the offending line."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


_NUMBER = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(?:\s*/\s*10\b)?")
# markdown, and "Assistant 1: 8" labels
_LABELS = re.compile(r"[*`#]|assistant\s*[12]\b", re.IGNORECASE)


def parse_judge_reply(text: str | None) -> tuple[float, float]:
    """(score_ref, score_model) from the first non-empty line (markdown, "Scores:" and "Assistant
    1:" labels are tolerated; a first line without numbers, such as "Scores:", defers to the next).
    Raises JudgeParseError with a reason when the line does not hold exactly two scores in 0-10."""
    if not isinstance(text, str) or not text.strip():
        raise JudgeParseError("empty reply")
    lines = [_LABELS.sub(" ", ln) for ln in text.strip().splitlines() if ln.strip()]
    # the scores' line: the first, or the second after a "Scores:" line alone ("Scores:",
    # then "8 6")
    line = lines[0] if _NUMBER.search(lines[0]) or len(lines) == 1 else lines[1]
    scores = [float(m) for m in _NUMBER.findall(line)]
    if len(scores) != 2:
        raise JudgeParseError("not two scores", f"{len(scores)} number(s) in {line.strip()[:80]!r}")
    if not all(0 <= s <= 10 for s in scores):
        raise JudgeParseError("score outside 0-10", repr(line.strip()[:80]))
    if scores[0] == 0:
        raise JudgeParseError("reference scored 0", "the ratio is undefined")
    return scores[0], scores[1]


@dataclass
class Review:
    question_id: str
    type: str
    domain: str | None
    score_ref: float | None = None
    score_model: float | None = None
    failed: str | None = None  # the reason, when the request or the parsing failed
    reply: str | None = None


def review_of(question: dict, reply: str | None, failed: str | None = None) -> Review:
    review = Review(str(question["question_id"]), question.get("type", ""), record_domain(question),
                    reply=reply)
    if failed:
        review.failed = failed
        return review
    try:
        review.score_ref, review.score_model = parse_judge_reply(reply)
    except JudgeParseError as e:
        review.failed = f"unparsed: {e.reason}"
    return review


def relative_scores(reviews: Iterable[Review]) -> dict:
    """The paper's relative score (mean of score_model / score_ref x 100) overall, by type and by
    domain, with counts; failed reviews are counted by reason and left out of the means."""
    reviews = list(reviews)
    ok = [r for r in reviews if r.failed is None]

    def summary(group: list[Review]) -> dict:
        if not group:
            return {"relative_score": None, "n": 0, "mean_ref": None, "mean_model": None}
        ratios = [r.score_model / r.score_ref for r in group]
        return {"relative_score": 100 * sum(ratios) / len(group),
                "n": len(group), "mean_ref": sum(r.score_ref for r in group) / len(group),
                "mean_model": sum(r.score_model for r in group) / len(group)}

    by_type, by_domain = defaultdict(list), defaultdict(list)
    for r in ok:
        by_type[r.type].append(r)
        by_domain[DOMAIN_NAMES.get(r.domain, r.domain or "unknown")].append(r)
    return {"overall": summary(ok), "by_type": {k: summary(v) for k, v in sorted(by_type.items())},
            "by_domain": {k: summary(v) for k, v in sorted(by_domain.items())},
            "n_failed": len(reviews) - len(ok),
            "failures": dict(Counter(r.failed for r in reviews if r.failed))}


# ---- running the judge ---------------------------------------------------------------------------
def judge_backend_name(backend: str | None = None, base_url: str | None = None) -> str:
    """The judge that runs: the one named; else the OpenAI-compatible server at base_url; else the
    stand-in. A key in the environment never chooses one."""
    name = backend or ("openai" if base_url else "stand-in")
    # not a judge, e.g. the instruction engine's offline backend, which writes conversations
    if name not in JUDGE_BACKENDS:
        raise ValueError(f"judge backend {name!r}: choose one of {', '.join(JUDGE_BACKENDS)}")
    if name == "stand-in" and base_url:
        raise ValueError(f"judge backend 'stand-in' runs in-process; it takes no base_url "
                         f"(got {base_url!r})")
    return name


def judge_status(backend: str | None = None, base_url: str | None = None) -> str | None:
    """None when the named judge can be called; otherwise why not (OpenAI
    itself named, without its key)."""
    if (judge_backend_name(backend, base_url) != "openai" or base_url
            or os.environ.get("OPENAI_API_KEY")):
        return None
    return ("No judge available: backend='openai' without base_url is OpenAI's own API and needs "
            "OPENAI_API_KEY in the environment; pass base_url of an OpenAI-compatible server, or "
            "leave backend unset for the local stand-in. Nothing was sent; preview_prompt() shows "
            "what the judge would receive.")


@dataclass
class JudgeResult:
    reviews: list[Review]
    scores: dict
    # the engine's counts: requests, cached, failed, tokens, cost
    run: dict = field(default_factory=dict)
    judge: dict = field(default_factory=dict)  # {"backend", "model"}: which judge gave these scores


def check_chat_inputs(questions: list[dict], answers: Iterable[dict]) -> dict[str, str]:
    """question_id -> the model's answer text; a question without its
    fields or its answer is an error."""
    by_id = {}
    for i, a in enumerate(answers):
        if not isinstance(a, dict) or "question_id" not in a:
            raise ValueError(f"answer {i}: not an answer record with a question_id")
        by_id[str(a["question_id"])] = a.get("text") if isinstance(a.get("text"), str) else ""
    for i, q in enumerate(questions):
        missing = [k for k in QUESTION_FIELDS if not isinstance(q, dict) or k not in q]
        if missing:
            raise ValueError(f"chat question {i}: missing field(s) {', '.join(missing)}")
    missing = [q["question_id"] for q in questions if str(q["question_id"]) not in by_id]
    if missing:
        raise ValueError(f"{len(missing)} chat question(s) have no model answer, "
                         f"e.g. {missing[:3]}")
    return by_id


async def judge_async(questions: list[dict], answers: Iterable[dict], backend, cache=None,
                      concurrency: int = 4, retry=None, progress: bool = True) -> JudgeResult:
    """Ask the judge about every (question, model answer) pair; `backend` is the engine's (a
    judge_stand_in.StandInJudge, or `llavamed_lite.instruct.synthesize.make_backend("openai",
    model=..., base_url=...)`), `cache` a path or ResponseCache (a rerun asks only what is not
    cached), `retry` an engine RetryPolicy. A request that fails or a reply without two scores is a
    review counted by its reason."""
    by_id = check_chat_inputs(questions, answers)
    requests = []
    for q in questions:
        messages = judge_messages(q, by_id[str(q["question_id"])])
        key = request_key(backend.model, messages, backend.params)
        requests.append(Request(str(q["question_id"]), q, messages, key))
    cache = cache if isinstance(cache, ResponseCache) else ResponseCache(cache)
    try:
        stats = await run_requests(requests, backend, cache, concurrency, retry=retry,
                                   progress=progress)
    finally:
        if hasattr(backend, "aclose"):
            await backend.aclose()
    reviews = []
    for r in requests:
        entry = cache.get(r.key)
        if entry is None:
            failed = stats.failed_keys.get(r.key, "request_failed")
            reviews.append(review_of(r.record, None, failed=failed))
        else:
            reviews.append(review_of(r.record, entry["response"]))
    return JudgeResult(reviews, relative_scores(reviews), stats.to_dict(), {"backend": backend.name,
                                                                            "model": backend.model})


def judge(questions: list[dict], answers: Iterable[dict], backend, **kwargs) -> JudgeResult:
    """judge_async from plain code, or from a notebook whose event loop is already running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(judge_async(questions, answers, backend, **kwargs))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, judge_async(questions, answers, backend, **kwargs)).result()


def write_judge_results(out_dir: str | Path, result: JudgeResult) -> tuple[Path, Path]:
    """`judge_scores.json` ({"judge", "scores", "run"}) and `judge_reviews.jsonl` (one line
    per question: id, type, domain, both scores, why it failed, the judge's reply), each
    written whole or not at all."""
    out_dir = Path(out_dir)
    reviews = "".join(json.dumps(vars(r), ensure_ascii=False) + "\n" for r in result.reviews)
    scores = atomic_write_json(out_dir / SCORES_FILE,
                               {"judge": result.judge, "scores": result.scores, "run": result.run})
    return scores, atomic_write_text(out_dir / REVIEWS_FILE, reviews)


def judge_table(result: JudgeResult) -> str:
    """The relative scores as a markdown table: overall, by question type, by domain, with the
    judge's name above and the failed reviews below (a stand-in's number is not GPT-4's: the
    caption says which judge it was)."""
    judge_name = f"{result.judge.get('backend', '?')} ({result.judge.get('model', '?')})"
    lines = [f"Judge: **{judge_name}**", "",
             "| group | questions | mean score, reference | mean score, model "
             "| relative score (model / reference x 100) |",
             "| --- | ---: | ---: | ---: | ---: |"]
    s = result.scores
    groups = [("overall", s["overall"])] + [(f"type: {k}", v) for k, v in s["by_type"].items()]
    for name, g in groups + [(f"domain: {k}", v) for k, v in s["by_domain"].items()]:
        cells = ["" if g[k] is None else f"{g[k]:.1f}"
                 for k in ("mean_ref", "mean_model", "relative_score")]
        lines.append(f"| {name} | {g['n']} | " + " | ".join(cells) + " |")
    if s["n_failed"]:
        failures = ", ".join(f"{k}: {v}" for k, v in s["failures"].items())
        lines += ["", f"Left out: {s['n_failed']} review(s), {failures}"]
    return "\n".join(lines)


def run_judge(questions: list[dict], answers: list[dict], backend: str | None = None,
              model: str | None = None, base_url: str | None = None,
              out_dir: str | Path | None = None, **kwargs) -> JudgeResult | None:
    """The chat evaluation with the judge the caller names (judge_backend_name): the stand-in by
    default, an OpenAI-compatible server at base_url, or OpenAI itself (backend="openai"; key from
    the environment, or it prints why not and the first prompt, sends nothing and returns None).
    With out_dir the scores and reviews are written there (write_judge_results). kwargs go to
    `judge` (cache, concurrency, retry, progress). Azure: build the backend with
    `make_backend("openai", azure_endpoint=...)` and call `judge`."""
    name = judge_backend_name(backend, base_url)
    reason = judge_status(name, base_url)
    if reason is not None:
        by_id = check_chat_inputs(questions, answers)
        print(reason)
        if questions:
            print("\n" + preview_prompt(questions[0], by_id[str(questions[0]["question_id"])]))
        return None
    if name == "stand-in":
        engine_backend = StandInJudge()
    else:
        engine_backend = make_backend("openai", model=model or "gpt-4o", base_url=base_url,
                                      temperature=0.0)
    result = judge(questions, answers, engine_backend, **kwargs)
    if out_dir is not None:
        write_judge_results(out_dir, result)
    return result
