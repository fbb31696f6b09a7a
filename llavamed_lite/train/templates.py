"""Conversation templates: a training record -> input_ids and labels, with labels only on what the assistant says.

    plain (stage 1):             <s><image>\\n{caption}</s>
    mistral_instruct (stage 2+): <s>[INST] <image>\\n{q1} [/INST] {a1}</s>[INST] {q2} [/INST] {a2}</s>

`plain` is LLaVA's alignment format: the human's instruction ("Describe the figure.") is dropped and the model
learns to continue the image with its caption (the newline matches the tiny LM's pretraining text, in which a
caption-like stand-in, a newline and the caption come in that order: synth/corpus.py). `mistral_instruct` is
LLaVA-Med v1.5's chat format, the same text the processor's chat template renders at inference (a test checks
they agree token for token). `<image>` expands to `image_seq_length` image-token ids, as `LlavaProcessor` does.
Labels are -100 except on the assistant's tokens and its end-of-turn `</s>`, so the loss never trains the model to
write questions or image tokens.
"""

import warnings
from dataclasses import dataclass, field

from ..data.formats import IMAGE_TOKEN, RecordError, conversations_of, validate_conversation

IGNORE_INDEX = -100
TEMPLATES = ("plain", "mistral_instruct")


@dataclass
class TruncationCounter:
    """How many records were shortened to max_length, and how many turns that dropped (reported after a run)."""
    records: int = 0
    dropped_turns: int = 0
    cut_tokens: int = 0
    ids: list = field(default_factory=list)


def image_seq_length(processor) -> int:
    """How many image tokens the processor puts in place of one `<image>` (16 for the tiny 64 px / patch 16 CLIP)."""
    size = processor.image_processor.crop_size if processor.image_processor.do_center_crop else processor.image_processor.size
    side = size["height"] if "height" in size else size["shortest_edge"]
    n = (side // processor.patch_size) ** 2 + processor.num_additional_image_tokens
    return n - (1 if processor.vision_feature_select_strategy == "default" else 0)


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _human_ids(tokenizer, text: str, n_image: int) -> list[int]:
    """Tokenise a human turn, expanding each `<image>` into n_image image-token ids."""
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    out = []
    for i, part in enumerate(text.split(IMAGE_TOKEN)):
        if i:
            out += [image_id] * n_image
        if part:
            out += _ids(tokenizer, part)
    return out


def turn_segments(convs: list[dict], tokenizer, template: str, n_image: int,
                  where: str = "<record>") -> list[tuple[list[int], list[int]]]:
    """One (ids, labels) segment per human/gpt pair, without the leading <s>."""
    eos = [tokenizer.eos_token_id]
    segments = []
    for k in range(0, len(convs), 2):
        question, answer = convs[k]["value"], convs[k + 1]["value"]
        if template == "plain":
            if k:
                raise RecordError(f"{where}: the plain template takes one human/gpt pair (an image and its caption), "
                                  f"got {len(convs) // 2}")
            prompt = _human_ids(tokenizer, f"{IMAGE_TOKEN}\n" if IMAGE_TOKEN in question else "", n_image)
            reply = _ids(tokenizer, answer.strip()) + eos
        elif template == "mistral_instruct":
            prompt = _human_ids(tokenizer, f"[INST] {question.strip()} [/INST]", n_image)
            reply = _ids(tokenizer, " " + answer.strip()) + eos
        else:
            raise ValueError(f"unknown template {template!r}: choose one of {', '.join(TEMPLATES)}")
        segments.append((prompt + reply, [IGNORE_INDEX] * len(prompt) + reply))
    return segments


def tokenize_record(record: dict, tokenizer, template: str, n_image: int, max_length: int,
                    counter: TruncationCounter | None = None, where: str = "<record>",
                    needs_image: bool = True) -> dict:
    """input_ids and labels for one record (validated first; errors name the record).

    Truncation to max_length never cuts image tokens: whole trailing turns are dropped first, then the end of the
    last answer is cut; a prompt that alone exceeds max_length is an error (a bad record under skip_bad)."""
    convs = validate_conversation(conversations_of(record, where), where, needs_image)
    segments = turn_segments(convs, tokenizer, template, n_image, where)
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    length = len(bos) + sum(len(s[0]) for s in segments)
    dropped = cut = 0
    while length > max_length and len(segments) > 1:
        length -= len(segments.pop()[0])
        dropped += 1
    if length > max_length:
        ids, labels = segments[-1]
        n_prompt = labels.count(IGNORE_INDEX)
        if len(bos) + n_prompt >= max_length:
            raise RecordError(f"{where}: its first question with {n_image} image tokens needs more than max_length "
                              f"{max_length} tokens, leaving no room for the answer; raise max_length")
        cut = length - max_length
        segments[-1] = (ids[:-cut], labels[:-cut])
    if (dropped or cut) and counter is not None:
        counter.records += 1
        counter.dropped_turns += dropped
        counter.cut_tokens += cut
        counter.ids.append(record.get("id"))
    ids = bos + [t for s in segments for t in s[0]]
    labels = [IGNORE_INDEX] * len(bos) + [t for s in segments for t in s[1]]
    return {"input_ids": ids, "labels": labels}


def warn_truncation(counter: TruncationCounter, max_length: int) -> None:
    if counter.records:
        warnings.warn(f"{counter.records} record(s) longer than max_length {max_length} were shortened "
                      f"({counter.dropped_turns} trailing turn(s) dropped, {counter.cut_tokens} text token(s) cut; "
                      f"image tokens kept), e.g. {counter.ids[:3]}", stacklevel=2)


def prompt_ids(question: str, tokenizer, template: str, n_image: int, history: list[tuple[str, str]] = ()) -> list[int]:
    """The ids a model continues at inference: earlier (question, answer) turns, then the new question."""
    convs = []
    for q, a in history:
        convs += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    convs += [{"from": "human", "value": question}, {"from": "gpt", "value": ""}]
    segments = turn_segments(convs, tokenizer, template, n_image)
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    ids = bos + [t for s in segments for t in s[0]]
    # drop the empty answer's tail: the eos, and for mistral_instruct the " " that precedes the answer
    n_tail = len(segments[-1][0]) - segments[-1][1].count(IGNORE_INDEX)
    return ids[:len(ids) - n_tail]
