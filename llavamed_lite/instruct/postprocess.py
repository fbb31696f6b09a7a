"""From a model's raw `User: ...\\n\\nAssistant: ...` text to a LLaVA-Med instruct record, or a rejection reason.

The model only read the caption, and it shows: it says "the caption mentions", apologises that it cannot see
the image, or opens with "Based on the figure caption,". Such turns teach the trained model to talk about a
text it will never be given, so, as LLaVA-Med did, we strip lead-ins and drop leaky exchanges (a question and
its answer go together, so the roles still alternate). Every dropped exchange and every rejected response is
counted by reason, so a run reports what it threw away and why.
"""

import random
import re
from collections import Counter
from dataclasses import dataclass, field

from ..data.formats import IMAGE_TOKEN, validate_training_record

# "User:" / "Assistant:" at the start of a line; tolerates markdown bold and a few common synonyms.
_ROLE = re.compile(r"^[ \t]*(?:\*\*|__)?(User|Human|Assistant|AI|GPT)(?:\*\*|__)?[ \t]*:[ \t]*(?:\*\*|__)?[ \t]*",
                   re.IGNORECASE | re.MULTILINE)
_HUMAN = {"user", "human"}

# Lead-ins that cite the text; removed from the start of a turn (the rest of the turn is kept).
_LEAD_IN = re.compile(
    r"^(?:(?:based|judging)\s+(?:on|from)|according\s+to|from|as\s+(?:described|stated|shown|noted)\s+in|"
    r"as\s+per|given)\s+(?:the\s+)?(?:information\s+(?:provided|given)(?:\s+in\s+the\s+\w+)?|"
    r"(?:figure\s+|image\s+)?(?:caption|legend|description|context)s?(?:\s+(?:provided|given))?)\s*[,:]\s*",
    re.IGNORECASE)

# What still leaks after the lead-in is stripped: the exchange is dropped, counted under the reason's name.
LEAK_PATTERNS: dict[str, re.Pattern] = {
    "cannot_see_image": re.compile(
        r"\b(?:i\s+(?:cannot|can't|can\s*not|am\s+unable\s+to|am\s+not\s+able\s+to|do\s+not|don't)\s+"
        r"(?:see|view|look\s+at|access|visuali[sz]e|analy[sz]e)|as\s+an\s+ai\b|i'?m\s+sorry|i\s+apologi[sz]e|"
        r"(?:without|no)\s+(?:access\s+to|seeing)\s+the\s+(?:actual\s+)?(?:image|figure))", re.IGNORECASE),
    "caption": re.compile(r"\bcaptions?\b|\blegends?\b", re.IGNORECASE),
    "description": re.compile(r"\bdescri(?:ption|bed)\b", re.IGNORECASE),
    "mentioned": re.compile(r"\bmention(?:ed|s)?\b", re.IGNORECASE),
    "context": re.compile(r"\b(?:figure\s+context|the\s+context\s+(?:provided|given)"
                          r"|the\s+(?:provided\s+|given\s+)?text)\b", re.IGNORECASE),
}


@dataclass
class Cleaned:
    """The result of post-processing one response: turns (or a rejection reason) and what was dropped."""

    turns: list[tuple[str, str]] = field(default_factory=list)  # ("human" | "gpt", text), alternating
    reject: str | None = None
    dropped: Counter = field(default_factory=Counter)  # dropped exchanges by reason
    removed: list[dict] = field(default_factory=list)  # each dropped exchange: question, answer, reason
    stripped_lead_ins: int = 0


def split_turns(text: str) -> list[tuple[str, str]]:
    """("human" | "gpt", text) for every `User:` / `Assistant:` block; anything before the first one is ignored."""
    matches = list(_ROLE.finditer(text))
    turns = []
    for m, nxt in zip(matches, matches[1:] + [None]):
        role = "human" if m.group(1).lower() in _HUMAN else "gpt"
        turns.append((role, text[m.end(): nxt.start() if nxt else len(text)].strip()))
    return turns


def strip_lead_in(text: str) -> tuple[str, bool]:
    """Remove one lead-in such as "Based on the figure caption," and re-capitalise."""
    new = _LEAD_IN.sub("", text, count=1)
    if new == text:
        return text, False
    return new[:1].upper() + new[1:], True


def leak_reason(text: str) -> str | None:
    for reason, pattern in LEAK_PATTERNS.items():
        if pattern.search(text):
            return reason
    return None


def clean_response(text: str | None, truncated: bool = False) -> Cleaned:
    """Split, strip lead-ins, drop leaky exchanges, validate: at least one question-answer pair, alternating,
    human first. Rejections: empty_response, no_turns, not_human_first, not_alternating, empty_turn,
    all_turns_dropped. `truncated` (the model stopped at max_tokens) drops the last, cut-off exchange."""
    out = Cleaned()
    if not text or not text.strip():
        out.reject = "empty_response"
        return out
    turns = split_turns(text.replace(IMAGE_TOKEN, ""))
    if not turns:
        out.reject = "no_turns"
        return out
    if turns[0][0] != "human":
        out.reject = "not_human_first"
        return out
    if any(a[0] == b[0] for a, b in zip(turns, turns[1:])):
        out.reject = "not_alternating"
        return out
    if truncated and len(turns) % 2 == 0:  # the last answer was cut off mid-sentence
        out.removed.append({"question": turns[-2][1], "answer": turns[-1][1], "reason": "truncated"})
        turns = turns[:-2]
        out.dropped["truncated"] += 1
    if len(turns) % 2:  # a last question without an answer (or a question cut off)
        out.removed.append({"question": turns[-1][1], "answer": None, "reason": "unanswered_question"})
        turns = turns[:-1]
        out.dropped["unanswered_question"] += 1
    if any(not t for _, t in turns):
        out.reject = "empty_turn"
        return out
    for (_, question), (_, answer) in zip(turns[::2], turns[1::2]):
        question, _ = strip_lead_in(question)
        answer, stripped = strip_lead_in(answer)
        out.stripped_lead_ins += stripped
        reason = leak_reason(question) or leak_reason(answer)
        if reason:
            out.dropped[reason] += 1
            out.removed.append({"question": question, "answer": answer, "reason": reason})
            continue
        out.turns += [("human", question), ("gpt", answer)]
    if not out.turns:
        out.reject = "all_turns_dropped"
    return out


def place_image_token(question: str, rng: random.Random) -> str:
    """LLaVA-Med puts `<image>` before or after the first question, on its own line."""
    return f"{IMAGE_TOKEN}\n{question}" if rng.random() < 0.5 else f"{question}\n{IMAGE_TOKEN}"


def item_rng(seed: int, item_id: str, purpose: str) -> random.Random:
    """A generator for one item, independent of the order items are processed in (so concurrency changes nothing)."""
    return random.Random(f"{seed}:{purpose}:{item_id}")


def instruct_record(caption_record: dict, turns: list[tuple[str, str]], seed: int) -> dict:
    """A LLaVA-Med instruct record (id, image, domain, conversations), validated with llavamed_lite.data.formats."""
    pair_id = str(caption_record["pair_id"])
    convs = [{"from": role, "value": text} for role, text in turns]
    convs[0]["value"] = place_image_token(convs[0]["value"], item_rng(seed, pair_id, "image-token"))
    record = {"id": pair_id, "image": caption_record.get("image") or f"{pair_id}.jpg",
              "domain": caption_record["domain"], "conversations": convs}
    return validate_training_record(record, f"instruct record {pair_id!r}")
