"""What an instruct data set contains: turns per conversation, question kinds per domain, lengths.

Question kinds come from keywords, so they work the same on offline conversations and on a model's; a question
that matches none is "other".
"""

import re
from collections import Counter

from ..data.formats import IMAGE_TOKEN, record_domain

# First match wins: order from the most specific.
QUESTION_KINDS: tuple[tuple[str, re.Pattern], ...] = (
    ("description", re.compile(r"\bdescribe\b|\bwhat (?:does|can you see)\b.*\b(?:show|image)\b", re.I)),
    ("count", re.compile(r"\bhow many\b|\bnumber of\b", re.I)),
    ("appearance", re.compile(r"\bcolou?r\b|\bdense\b|\bsparse\b|\bcellular\b|\batypi|\bcontrast\b", re.I)),
    ("modality", re.compile(r"\b(?:kind|type) of (?:image|scan)\b|\bmodality\b|\bis this (?:image )?(?:a|an)\b|"
                            r"\bsequence\b|\bweighted\b|\bstain", re.I)),
    ("location", re.compile(r"\bwhere\b|\bwhich (?:side|lung|hemisphere|zone|organ|part|lobe)\b|\bon which side\b|"
                            r"\bupper or\b|\bleft\b|\bright\b|\bbody region\b|\bwhat organ\b|\bin which\b", re.I)),
    ("size", re.compile(r"\bsize\b|\blarge\b|\bsmall\b|\bhow (?:large|big)\b|\benlarged\b", re.I)),
    ("abnormality", re.compile(r"\babnormal", re.I)),
    ("presence", re.compile(r"^\s*(?:is|are|does|do|was|were|can)\b", re.I)),
    ("interpretation", re.compile(r"\bwhy\b|\bcause\b|\bmean\b|\bsignifican|\bsuggest|\bdiagnos", re.I)),
)


def question_kind(question: str) -> str:
    question = question.replace(IMAGE_TOKEN, "")
    for kind, pattern in QUESTION_KINDS:
        if pattern.search(question):
            return kind
    return "other"


def dataset_stats(records: list[dict]) -> dict:
    """turns (list, one per conversation), question kinds per domain (domain -> Counter), question and answer
    lengths in words (lists)."""
    turns, kinds, q_words, a_words = [], {}, [], []
    for r in records:
        convs = r["conversations"]
        turns.append(len(convs))
        domain = record_domain(r) or "unknown"
        counter = kinds.setdefault(domain, Counter())
        for turn in convs:
            words = len(turn["value"].replace(IMAGE_TOKEN, "").split())
            if turn["from"] == "human":
                counter[question_kind(turn["value"])] += 1
                q_words.append(words)
            else:
                a_words.append(words)
    return {"turns": turns, "question_kinds": kinds, "question_words": q_words, "answer_words": a_words}
