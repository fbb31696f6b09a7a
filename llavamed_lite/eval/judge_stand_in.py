"""A stand-in for the GPT-4 judge: rule-based, deterministic, offline. It is not a language model.

It exists so that the chat evaluation (judge.py) runs end to end without a network or a paid model:
the same prompt, the same request engine and cache, the same reply format ("score_ref score_model"
on the first line, then the reasons) and the same parsing and relative score. Its number is NOT
comparable with the paper's GPT-4 relative scores; results carry the judge's name so that they are
never put beside them unlabelled.

What it measures. It reads only what a real judge receives, the messages: the figure's caption
and context, the question, Assistant 1's answer (the reference) and Assistant 2's. Each answer
becomes findings: its content words, lower-cased and singular, where the head word of a phrase
after "no", "not" or "without" is a negated finding ("no lung nodule" -> nodule, negated). The
reference is the key, and the reference, caption and context together are the evidence. Each
answer is scored by the same rule:

    coverage  = share of the reference's findings the answer states, with the same polarity
    support   = share of the answer's words found in the evidence (a word found nowhere is
                unverifiable detail, which is how hallucinated findings show)
    accuracy  = 1 / (1 + contradictions): a finding the evidence states only with the other
                polarity ("a nodule" against "no nodule"), or a leading "Yes," where the
                reference says "No," (or the reverse)
    score     = 1 + 9 x accuracy x (coverage + support) / 2, from 1 to 10

So the reference scores 10 by construction (it is its own key), and the relative score is the
candidate's agreement with the reference's findings, without contradicting them or adding ones the
caption does not hold. It does not judge fluency, reasoning or anything a word match cannot see.
"""

import re

from ..instruct.client import Completion, Request, RequestFailed

STAND_IN_VERSION = 1  # bump when the rule changes, so cached stand-in replies are not reused
STAND_IN_MODEL = "stand-in-judge"

_PROMPT = re.compile(r"\[Context\]\n(?P<context>.*?)\n\n\[Question\]\n(?P<question>.*?)\n\n"
                     r"\[Assistant 1\]\n(?P<reference>.*?)\n\[End of Assistant 1\]\n\n"
                     r"\[Assistant 2\]\n(?P<answer>.*)\n\[End of Assistant 2\]\n\n"
                     r"\[Instructions\]", re.S)
_TOKEN = re.compile(r"[a-z0-9]+|[,.;:!?()]")
NEGATORS = {"no", "not", "without", "never", "none", "nor", "non"}
# A negated phrase ends at punctuation or at one of these; its last
# content word is the negated finding.
BOUNDARIES = {"and", "or", "but", "with", "in", "of", "on", "at", "around", "near", "within",
              "from", "to", "which", "that", "while", "is", "are", "was", "were", "showing",
              "shows", "seen"}
STOPWORDS = {"a", "an", "the", "this", "these", "those", "it", "its", "be", "been", "there", "here",
             "has", "have", "had", "can", "as", "by", "for", "also", "very", "any", "some", "image",
             "figure", "fig", "caption", "context", "show", "shown", "see", "reveal", "reveals",
             "revealed", "demonstrate", "demonstrates", "demonstrated", "i", "we", "you", "what",
             "do", "does", "yes", *BOUNDARIES}


def _singular(word: str) -> str:
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def findings(text: str) -> tuple[set[str], set[str]]:
    """(stated, negated) findings of a text: content words, and the
    head words of negated phrases."""
    tokens = _TOKEN.findall(text.lower().replace("n't", " not"))
    stated, negated = set(), set()
    i = 0
    while i < len(tokens):
        word = tokens[i]
        if word in NEGATORS:
            phrase = []
            i += 1
            while i < len(tokens) and tokens[i] not in BOUNDARIES and tokens[i].isalnum():
                if tokens[i] not in STOPWORDS and tokens[i] not in NEGATORS:
                    phrase.append(_singular(tokens[i]))
                i += 1
            # "no lung nodule": the nodule is negated; the lung is neither stated nor negated
            if phrase:
                negated.add(phrase[-1])
            continue
        if word.isalnum() and word not in STOPWORDS:
            stated.add(_singular(word))
        i += 1
    return stated, negated


def yes_no(text: str) -> str | None:
    """"yes" or "no" when the answer opens with one as a reply ("No, the
    heart ..."), not as a negator."""
    match = re.match(r"\s*(yes|no)\b\s*([,.;:!]|$)", text.lower())
    return match.group(1) if match else None


def score_answer(answer: str, reference: str, evidence: str) -> tuple[float, dict]:
    """The score from 1 to 10 and its parts (module docstring)."""
    stated, negated = findings(answer)
    ref_stated, ref_negated = findings(reference)
    ev_stated, ev_negated = findings(evidence)
    ev_stated, ev_negated = ev_stated | ref_stated, ev_negated | ref_negated
    key = {(w, True) for w in ref_stated} | {(w, False) for w in ref_negated}
    facts = {(w, True) for w in stated} | {(w, False) for w in negated}
    words = stated | negated
    covered = len(key & facts)
    supported = words & (ev_stated | ev_negated)
    contradictions = sorted(w for w in stated if w in ev_negated and w not in ev_stated)
    contradictions += sorted(w for w in negated if w in ev_stated and w not in ev_negated)
    ref_reply, reply = yes_no(reference), yes_no(answer)
    if ref_reply and reply and ref_reply != reply:
        contradictions.append(f'"{reply}" where the reference says "{ref_reply}"')
    coverage = covered / len(key) if key else 1.0
    support = len(supported) / len(words) if words else 0.0
    accuracy = 1 / (1 + len(contradictions))
    score = round(1 + 9 * accuracy * (coverage + support) / 2, 1)
    return score, {"covered": covered, "key": len(key), "supported": len(supported),
                   "words": len(words), "unsupported": sorted(words - supported),
                   "contradictions": contradictions}


def _reasons(name: str, score: float, parts: dict) -> str:
    text = (f"{name}: {score:g}. States {parts['covered']} of the reference's {parts['key']} "
            f"findings; {parts['supported']} of its {parts['words']} words are in the caption, "
            "context or reference")
    if parts["unsupported"]:
        text += f" (not: {', '.join(parts['unsupported'][:12])})"
    n = len(parts["contradictions"])
    if n:
        return text + f"; {n} contradiction(s): {', '.join(parts['contradictions'])}."
    return text + "; no contradiction."


def stand_in_reply(messages: list[dict]) -> str:
    """The judge's reply to judge.judge_messages(...): "score_ref score_model", then one line of
    reasons per assistant. Raises ValueError when the messages are not a judge prompt."""
    user = next((m.get("content") for m in reversed(messages)
                 if isinstance(m, dict) and m.get("role") == "user"), None)
    match = _PROMPT.search(user) if isinstance(user, str) else None
    if match is None:
        raise ValueError("not a judge prompt: expected [Context], [Question], [Assistant 1] and "
                         "[Assistant 2]")
    evidence, reference, answer = match["context"], match["reference"], match["answer"]
    ref_score, ref_parts = score_answer(reference, reference, evidence)
    model_score, model_parts = score_answer(answer, reference, evidence)
    return "\n".join([f"{ref_score:g} {model_score:g}",
                      "Stand-in judge (rule-based, not a language model): score = 1 + 9 x "
                      "accuracy x (coverage + support) / 2.",
                      _reasons("Assistant 1", ref_score, ref_parts),
                      _reasons("Assistant 2", model_score, model_parts)])


class StandInJudge:
    """The request engine's backend interface (instruct.client.OpenAIBackend), answered
    in-process by `stand_in_reply`: the judge's requests still go through the engine, its
    cache and the reply parser."""

    name = "stand-in"
    model = STAND_IN_MODEL

    def __init__(self):
        self.params = {"version": STAND_IN_VERSION}

    async def complete(self, request: Request) -> Completion:
        try:
            return Completion(stand_in_reply(request.messages), usage={}, finish_reason="stop")
        except ValueError:
            raise RequestFailed("not_a_judge_prompt") from None
