"""Conversation templates: exact label masks, <image> expansion, truncation that keeps image tokens, bad records."""

import pytest

from llavamed_lite.data.formats import IMAGE_TOKEN, RecordError
from llavamed_lite.train.templates import (IGNORE_INDEX, TruncationCounter, image_seq_length, prompt_ids,
                                           tokenize_record)


@pytest.fixture(scope="module")
def processor(tiny_llava):
    return tiny_llava[1]


@pytest.fixture(scope="module")
def tok(processor):
    return processor.tokenizer


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def record(*turns, rid="r1"):
    roles = ["human", "gpt"]
    return {"id": rid, "image": "x.png", "conversations": [{"from": roles[i % 2], "value": v} for i, v in enumerate(turns)]}


def test_image_seq_length_matches_model_and_processor(tiny_llava):
    model, processor = tiny_llava
    assert image_seq_length(processor) == model.config.image_seq_length == 16


def test_plain_drops_the_instruction_and_labels_caption_and_eos(tok, processor):
    out = tokenize_record(record(f"Describe the image.\n{IMAGE_TOKEN}", "Chest radiograph."), tok, "plain", 16, 256)
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    caption = ids(tok, "Chest radiograph.") + [tok.eos_token_id]
    newline = ids(tok, "\n")
    assert out["input_ids"] == [tok.bos_token_id] + [image_id] * 16 + newline + caption
    assert out["labels"] == [IGNORE_INDEX] * (17 + len(newline)) + caption


def test_mistral_single_turn_exact_mask(tok):
    out = tokenize_record(record(f"{IMAGE_TOKEN}\nIs there a nodule?", "Yes."), tok, "mistral_instruct", 4, 256)
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    prompt = [tok.bos_token_id] + ids(tok, "[INST] ") + [image_id] * 4 + ids(tok, "\nIs there a nodule? [/INST]")
    answer = ids(tok, " Yes.") + [tok.eos_token_id]
    assert out["input_ids"] == prompt + answer
    assert out["labels"] == [IGNORE_INDEX] * len(prompt) + answer


def test_mistral_multi_turn_exact_mask(tok):
    rec = record(f"{IMAGE_TOKEN}\nWhat is shown?", "A chest radiograph.", "Which side?", "Left.", "Is it large?", "No.")
    out = tokenize_record(rec, tok, "mistral_instruct", 4, 256)
    image_id, eos = tok.convert_tokens_to_ids(IMAGE_TOKEN), tok.eos_token_id
    expected_ids, expected_labels = [tok.bos_token_id], [IGNORE_INDEX]
    for k, (q, a) in enumerate([("What is shown?", "A chest radiograph."), ("Which side?", "Left."), ("Is it large?", "No.")]):
        q_ids = ids(tok, "[INST] ") + [image_id] * 4 + ids(tok, f"\n{q} [/INST]") if k == 0 else ids(tok, f"[INST] {q} [/INST]")
        a_ids = ids(tok, " " + a) + [eos]
        expected_ids += q_ids + a_ids
        expected_labels += [IGNORE_INDEX] * len(q_ids) + a_ids
    assert out["input_ids"] == expected_ids
    assert out["labels"] == expected_labels
    assert sum(t == eos for t in out["labels"]) == 3  # every assistant turn ends with a trained </s>


def test_mistral_matches_the_processors_chat_template(processor, tok):
    """Training text = inference text: the processor's chat template, with <image> expanded, gives the same ids."""
    rec = record(f"{IMAGE_TOKEN}\nWhat is shown?", "A chest radiograph.", "Which side?", "Left.")
    out = tokenize_record(rec, tok, "mistral_instruct", 16, 256)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown?"}]},
                {"role": "assistant", "content": "A chest radiograph."},
                {"role": "user", "content": "Which side?"}, {"role": "assistant", "content": "Left."}]
    text = processor.apply_chat_template(messages, tokenize=False)
    expected = tok(text.replace(IMAGE_TOKEN, IMAGE_TOKEN * 16), add_special_tokens=False)["input_ids"]
    if expected[0] != tok.bos_token_id:
        expected = [tok.bos_token_id] + expected
    assert out["input_ids"] == expected
    # and the generation prompt is the same text up to the answer
    prompt = prompt_ids(f"{IMAGE_TOKEN}\nWhat is shown?", tok, "mistral_instruct", 16)
    assert out["input_ids"][:len(prompt)] == prompt
    assert out["labels"][len(prompt)] != IGNORE_INDEX and out["labels"][len(prompt) - 1] == IGNORE_INDEX


def test_truncation_drops_trailing_turns_then_cuts_text_but_keeps_every_image_token(tok):
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    long_answer = "Chest radiograph showing a nodule in the left upper zone. " * 6
    rec = record(f"{IMAGE_TOKEN}\nWhat does the image show?", long_answer, "Is there a nodule?", "Yes.")
    full = tokenize_record(rec, tok, "mistral_instruct", 16, 4096)
    counter = TruncationCounter()
    n_prompt = next(i for i, label in enumerate(full["labels"]) if label != IGNORE_INDEX)
    for max_length in (len(full["input_ids"]) - 3, n_prompt + 10, n_prompt + 1):
        out = tokenize_record(rec, tok, "mistral_instruct", 16, max_length, counter)
        assert len(out["input_ids"]) <= max_length
        assert out["input_ids"].count(image_id) == 16
        assert len(out["labels"]) == len(out["input_ids"])
        assert any(label != IGNORE_INDEX for label in out["labels"])
    assert counter.records == 3 and counter.dropped_turns == 3 and counter.cut_tokens > 0


def test_a_prompt_longer_than_max_length_is_a_named_error(tok):
    with pytest.raises(RecordError, match="rec 7: .*max_length 20"):
        tokenize_record(record(f"{IMAGE_TOKEN}\nWhat?", "Yes."), tok, "mistral_instruct", 16, 20, where="rec 7")


@pytest.mark.parametrize("turns, message", [
    ([], "empty"),
    (["What is shown?", "A radiograph."], "<image>"),
    ([f"{IMAGE_TOKEN}\nWhat?", "A.", "Q?"], "no answer"),
])
def test_bad_records_are_named(tok, turns, message):
    with pytest.raises(RecordError, match=message) as err:
        tokenize_record(record(*turns, rid="bad-7"), tok, "mistral_instruct", 4, 256, where="recs.json: record 3 (id 'bad-7')")
    assert "bad-7" in str(err.value)


def test_roles_out_of_order_are_named(tok):
    rec = {"id": "swap", "image": "x.png", "conversations": [{"from": "gpt", "value": f"{IMAGE_TOKEN}\nHi"},
                                                              {"from": "human", "value": "Q"}]}
    with pytest.raises(RecordError, match="turn 0 is from 'gpt'"):
        tokenize_record(rec, tok, "mistral_instruct", 4, 256, where="record 0 (id 'swap')")


def test_misspelt_conversatons_key_is_accepted(tok):
    rec = {"id": "old", "image": "x.png", "conversatons": [{"from": "human", "value": f"{IMAGE_TOKEN}\nQ"},
                                                             {"from": "gpt", "value": "A"}]}
    assert tokenize_record(rec, tok, "plain", 4, 64)["input_ids"]


def test_plain_refuses_multi_turn_and_unknown_template(tok):
    rec = record(f"{IMAGE_TOKEN}\nQ", "A", "Q2", "A2", rid="mt")
    with pytest.raises(RecordError, match="plain template"):
        tokenize_record(rec, tok, "plain", 4, 64, where="record 0 (id 'mt')")
    with pytest.raises(ValueError, match="unknown template"):
        tokenize_record(record(f"{IMAGE_TOKEN}\nQ", "A"), tok, "vicuna", 4, 64)
