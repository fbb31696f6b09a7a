"""Conversation templates: a training record -> input_ids and labels, with labels
only on what the assistant says.

    plain (stage 1):             <s><image>\\n{caption}</s>
    llava_med_v1 (stage 1):      <s>{system}\\n\\n### Human: {instruction and <image>}\\n### Assistant: {caption}</s>
    mistral_instruct (stage 2+): <s>[INST] <image>\\n{q1} [/INST] {a1}</s>[INST] {q2} [/INST] {a2}</s>

`plain` is LLaVA-1.5's alignment format: the human's instruction ("Describe the figure.") is dropped
and the model learns to continue the image with its caption (the newline matches the tiny LM's
pretraining text, in which a caption-like stand-in, a newline and the caption come in that order:
synth/corpus.py). `llava_med_v1` is the shape of LLaVA-Med v1.0's released alignment training: a
system header, the human's brief instruction with the image, and the caption as the answer (v1.0
closed turns with `###`; we close them with `</s>`, which generation stops at). `mistral_instruct`
is LLaVA-Med v1.5's chat format, the text the processor's chat template renders at inference.

The whole conversation is rendered as text and tokenised in one call, with each `<image>` written
out `image_seq_length` times, exactly as `LlavaProcessor` does at inference; labels go on the
tokens inside the assistant's character spans (its answer and end-of-turn `</s>`), -100
elsewhere. Tokenising in one piece matters for SentencePiece tokenizers: "\\n" after `<image>` is
`<0x0A>` and "[INST]" after `</s>` is `[`, `INST`, `]` in the whole text, but `▁ <0x0A>` and
`▁[`, `INST`, `]` when tokenised alone.
"""

import warnings
from dataclasses import dataclass, field

from ..data.formats import IMAGE_TOKEN, RecordError, conversations_of, validate_conversation

IGNORE_INDEX = -100
TEMPLATES = ("plain", "llava_med_v1", "mistral_instruct")
# Our own words for a v1.0-style system header (the released one is not copied).
V1_SYSTEM = ("You are a biomedical assistant that looks at figures from research articles and "
             "describes what they show, accurately and briefly.")


@dataclass
class TruncationCounter:
    """How many records were shortened to max_length, and how many turns that
    dropped (reported after a run)."""
    records: int = 0
    dropped_turns: int = 0
    cut_tokens: int = 0
    ids: list = field(default_factory=list)


def image_seq_length(processor) -> int:
    """How many image tokens the processor puts in place of one `<image>` (16 for the
    tiny 64 px / patch 16 CLIP)."""
    image_processor = processor.image_processor
    size = image_processor.crop_size if image_processor.do_center_crop else image_processor.size
    side = size["height"] if "height" in size else size["shortest_edge"]
    n = (side // processor.patch_size) ** 2 + processor.num_additional_image_tokens
    return n - (1 if processor.vision_feature_select_strategy == "default" else 0)


def render(convs: list[dict], template: str, eos: str, n_image: int,
           where: str = "<record>") -> tuple[str, list[tuple[int, int, int]]]:
    """The conversation as the text the model reads (`<image>` written n_image times), and for
    each human/gpt pair (start of the turn, start of the answer, end of the answer's `</s>`)
    as character offsets into it."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}: choose one of {', '.join(TEMPLATES)}")
    if template != "mistral_instruct" and len(convs) > 2:
        raise RecordError(f"{where}: the {template} template takes one human/gpt pair (an image "
                          f"and its caption), got {len(convs) // 2}")
    image = IMAGE_TOKEN * n_image
    text, spans = f"{V1_SYSTEM}\n\n" if template == "llava_med_v1" else "", []
    for k in range(0, len(convs), 2):
        question = convs[k]["value"].strip().replace(IMAGE_TOKEN, image)
        answer = convs[k + 1]["value"].strip()
        start = len(text)
        if template == "plain":
            text += f"{image}\n" if IMAGE_TOKEN in convs[k]["value"] else ""
        elif template == "llava_med_v1":
            text += f"### Human: {question}\n### Assistant:"
            answer = " " + answer
        else:
            text += f"[INST] {question} [/INST]"
            answer = " " + answer
        # The answer's leading space belongs to the answer, so a prompt ends before it
        # (SentencePiece joins it to the first word: `▁Yes`).
        answer_start = len(text)
        text += answer + eos
        spans.append((start, answer_start, len(text)))
    return text, spans


def tokenize_record(record: dict, tokenizer, template: str, n_image: int, max_length: int,
                    counter: TruncationCounter | None = None, where: str = "<record>",
                    needs_image: bool = True) -> dict:
    """input_ids and labels for one record (validated first; errors name the record).

    Truncation to max_length never cuts image tokens: whole trailing turns are dropped first,
    then the end of the last answer is cut; a prompt that alone exceeds max_length is an error (a
    bad record under skip_bad)."""
    convs = validate_conversation(conversations_of(record, where), where, needs_image)
    text, spans = render(convs, template, tokenizer.eos_token, n_image, where)
    encoding = tokenizer(text, return_offsets_mapping=True)  # with <s>, as the processor calls it
    ids, offsets = encoding["input_ids"], encoding["offset_mapping"]
    # A token is the assistant's when its characters overlap an answer span; added
    # <s> has the empty span (0, 0).
    labels = [t if any(s < a_end and e > a_start for _, a_start, a_end in spans) else IGNORE_INDEX
              for t, (s, e) in zip(ids, offsets)]
    turn_starts = [next(i for i, (s, e) in enumerate(offsets) if s >= start and e > s)
                   for start, _, _ in spans[1:]]

    end, dropped = len(ids), 0
    while end > max_length and turn_starts:
        end = turn_starts.pop()
        dropped += 1
    cut = 0
    if end > max_length:
        first_answer = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
        if first_answer >= max_length:
            raise RecordError(f"{where}: its first question with {n_image} image tokens needs "
                              f"more than max_length {max_length} tokens, leaving no room for the "
                              "answer; raise max_length")
        cut, end = end - max_length, max_length
    if (dropped or cut) and counter is not None:
        counter.records += 1
        counter.dropped_turns += dropped
        counter.cut_tokens += cut
        counter.ids.append(record.get("id"))
    return {"input_ids": ids[:end], "labels": labels[:end]}


def warn_truncation(counter: TruncationCounter, max_length: int) -> None:
    if counter.records:
        warnings.warn(f"{counter.records} record(s) longer than max_length {max_length} were "
                      f"shortened ({counter.dropped_turns} trailing turn(s) dropped, "
                      f"{counter.cut_tokens} text token(s) cut; image tokens kept), e.g. "
                      f"{counter.ids[:3]}", stacklevel=2)


def prompt_ids(question: str, tokenizer, template: str, n_image: int,
               history: list[tuple[str, str]] = ()) -> list[int]:
    """The ids a model continues at inference: earlier (question, answer) turns, then the new
    question; the same ids as the training text up to the answer, and as the processor gives for
    the chat template's rendering."""
    convs = []
    for q, a in list(history) + [(question, "")]:
        convs += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    text, spans = render(convs, template, tokenizer.eos_token, n_image)
    return tokenizer(text[:spans[-1][1]])["input_ids"]
