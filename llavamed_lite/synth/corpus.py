"""The text the tiny towers pretrain on, made from the TRAINING split of the tiny world only.

The LM's pretraining text decides whether stage 1 can work (measured while building the tiny
recipe): a frozen LM can only write after the image slot what it learned to write after such a slot.
So besides plain captions and inline mentions, the corpus holds the formats of the later stages with
text standing where the image will go:

    plain (stage 1):            <s>{stand-in}\\n{caption}</s>             stage 1 feeds <s><image tokens>{caption}</s>
    mistral_instruct (stage 2): <s>[INST] {stand-in}\\n{instruction} [/INST] {paraphrase}</s>
                                <s>[INST] {stand-in}\\n{q1} [/INST] {a1}</s>[INST] {q2} [/INST] {a2}</s>

The stand-in is the caption, the plain description or a paraphrase of the same figure, so the LM
learns to read the findings from whatever fills the image slot and restate them. Documents are
strings without <s>/</s>: the tokenizer adds <s>, the packer adds </s>.
"""

from typing import Any

from .findings import as_rng
from .questions import describe, questions_for
from .text import paraphrase

# Stage 1 of LLaVA-Med asks briefly for a description; these are our own phrasings.
DESCRIBE_INSTRUCTIONS = [
    "Describe the image.", "Describe the figure briefly.", "What does this image show?",
    "Give a short description of the figure.", "Summarise the visual content of the image.",
    "Write a caption for this figure.", "What is shown here?", "Explain what the figure shows.",
]

# Q&A about each figure twice (other phrasings, other stand-ins): answering from the slot is the hard part
QA_PASSES = 2


def caption_text(record: dict) -> str:
    """A caption record's text as CLIP sees it."""
    return record["fig_caption"]


def mistral_instruct_text(turns: list[tuple[str, str]]) -> str:
    """Turns in the mistral_instruct format, without the leading <s> and the final </s>."""
    return "</s>".join(f"[INST] {q} [/INST] {a}" for q, a in turns)


def lm_documents(records: list[dict], rng: Any) -> list[str]:
    """Pretraining documents for the LM from caption records (with their findings): see module
    docstring."""
    rng = as_rng(rng)
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    docs = []
    for r in records:
        f = r["findings"]
        cap = r["fig_caption"]
        stand_ins = [cap, describe(f), paraphrase(f, rng)]
        docs.append(cap)
        docs.extend(r["in_text_mention"])
        docs.append(f"{pick(stand_ins)}\n{cap}")
        describe_turn = (f"{pick(stand_ins)}\n{pick(DESCRIBE_INSTRUCTIONS)}", pick([paraphrase(f, rng), describe(f)]))
        docs.append(mistral_instruct_text([describe_turn]))
        for _ in range(QA_PASSES):
            questions = questions_for(f, rng)
            order = rng.permutation(len(questions))
            for start in range(0, len(order), 3):  # multi-turn Q&A about one figure, 3 questions a conversation
                turns = [(questions[i]["question"], questions[i]["answer"]) for i in order[start:start + 3]]
                turns[0] = (f"{pick(stand_ins)}\n{turns[0][0]}", turns[0][1])
                docs.append(mistral_instruct_text(turns))
    return docs
