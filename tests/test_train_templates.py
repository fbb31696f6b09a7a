"""Conversation templates: exact label masks, <image> expansion, truncation that keeps image tokens, bad records,
and training ids equal to the processor's at inference for a byte-level and a SentencePiece-style tokenizer."""

import pytest
from PIL import Image

from llavamed_lite.data.formats import IMAGE_TOKEN, RecordError
from llavamed_lite.train.templates import (IGNORE_INDEX, V1_SYSTEM, TruncationCounter, image_seq_length, prompt_ids,
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


@pytest.fixture(scope="module")
def sp_processor(tmp_path_factory):
    """The processor of a make-mini LM: a SentencePiece-style tokenizer (Mistral-like), at 32 px to stay fast."""
    from llavamed_lite.model.compose import image_processor_for, llava_processor, prepare_tokenizer, vision_config_of
    from llavamed_lite.model.mini import make_mini

    vision, lm = make_mini(tmp_path_factory.mktemp("mini"), image_size=32, patch_size=8)
    config = vision_config_of(vision)
    return llava_processor(image_processor_for(vision, config, True), prepare_tokenizer(lm), config)


@pytest.fixture(scope="module", params=["byte_level", "sentencepiece"])
def any_processor(request, processor, sp_processor):
    return processor if request.param == "byte_level" else sp_processor


TURNS = [("What is shown?", "A chest radiograph."), ("Which side?", "The left upper zone."), ("Is it large?", "No.")]


@pytest.mark.parametrize("image_first", [True, False])
def test_training_ids_are_the_processors_ids_turn_by_turn(any_processor, image_first):
    """For each prefix of a 3-turn chat: the training ids are the processor's ids for the chat template's rendering,
    the generation prompt (processor and prompt_ids) is their prefix, and labels cover exactly the answers."""
    processor, tok = any_processor, any_processor.tokenizer
    n_image, image = image_seq_length(processor), Image.new("RGB", (40, 30), (200, 30, 60))
    q0 = f"{IMAGE_TOKEN}\n{TURNS[0][0]}" if image_first else f"{TURNS[0][0]}\n{IMAGE_TOKEN}"
    parts = [{"type": "image"}, {"type": "text", "text": TURNS[0][0]}]
    messages, turns, done = [], [], 0  # done: how many ids the earlier turns take
    for k, (q, a) in enumerate(TURNS):
        messages.append({"role": "user", "content": (parts if image_first else parts[::-1]) if k == 0 else q})
        turns.append((q0 if k == 0 else q, a))
        prompt = processor(images=[image], text=processor.apply_chat_template(messages, add_generation_prompt=True))
        messages.append({"role": "assistant", "content": a})
        full = processor(images=[image], text=processor.apply_chat_template(messages))
        prompt, full = prompt["input_ids"][0], full["input_ids"][0]

        out = tokenize_record(record(*[t for pair in turns for t in pair]), tok, "mistral_instruct", n_image, 4096)
        assert out["input_ids"] == full and full[:len(prompt)] == prompt
        assert prompt_ids(turns[-1][0], tok, "mistral_instruct", n_image, turns[:-1]) == prompt
        assert out["labels"][done:len(prompt)] == [IGNORE_INDEX] * (len(prompt) - done)
        assert out["labels"][len(prompt):] == full[len(prompt):]
        assert tok.decode(full[len(prompt):]).strip() == a + tok.eos_token
        done = len(full)
    assert out["input_ids"].count(tok.convert_tokens_to_ids(IMAGE_TOKEN)) == n_image


def test_sentencepiece_newline_after_image_and_inst_after_eos_are_as_at_inference(sp_processor):
    """The mismatch this guards against: `▁ <0x0A>` after the image and `▁[` after `</s>` from tokenising pieces."""
    tok = sp_processor.tokenizer
    out = tokenize_record(record(f"{IMAGE_TOKEN}\nWhat?", "Yes.", "Where?", "Left."), tok, "mistral_instruct", 4, 256)
    tokens = tok.convert_ids_to_tokens(out["input_ids"])
    assert tokens[tokens.index(IMAGE_TOKEN) + 4] == "<0x0A>"
    assert tokens[tokens.index(tok.eos_token) + 1] == "["


@pytest.mark.parametrize("template", ["plain", "llava_med_v1"])
def test_alignment_prompts_are_a_prefix_and_only_the_caption_is_labelled(any_processor, template):
    tok, caption = any_processor.tokenizer, "Axial CT of the abdomen with two liver lesions."
    out = tokenize_record(record(f"Describe the figure briefly.\n{IMAGE_TOKEN}", caption), tok, template, 4, 256)
    prompt = prompt_ids(f"Describe the figure briefly.\n{IMAGE_TOKEN}", tok, template, 4)
    assert out["input_ids"][:len(prompt)] == prompt and out["labels"][:len(prompt)] == [IGNORE_INDEX] * len(prompt)
    assert out["labels"][len(prompt):] == out["input_ids"][len(prompt):]
    assert tok.decode(out["input_ids"][len(prompt):]).strip() == caption + tok.eos_token
    assert out["input_ids"].count(tok.convert_tokens_to_ids(IMAGE_TOKEN)) == 4
    text = tok.decode(prompt)
    # plain drops the instruction; the v1.0 format keeps a system header and the human's instruction
    assert ("Describe the figure briefly." in text) == (template == "llava_med_v1")
    v1_header = V1_SYSTEM in text and "### Human:" in text and text.endswith("### Assistant:")
    assert v1_header == (template == "llava_med_v1")


def test_truncation_with_a_sentencepiece_tokenizer_keeps_image_tokens_and_whole_turns(sp_processor):
    tok = sp_processor.tokenizer
    rec = record(f"{IMAGE_TOKEN}\nWhat does the image show?", "A nodule in the upper zone. " * 4, "Which?", "Left.")
    full = tokenize_record(rec, tok, "mistral_instruct", 16, 4096)
    first_turn = full["input_ids"].index(tok.eos_token_id) + 1
    counter = TruncationCounter()
    assert tokenize_record(rec, tok, "mistral_instruct", 16, len(full["input_ids"]) - 1, counter) == {
        "input_ids": full["input_ids"][:first_turn], "labels": full["labels"][:first_turn]}
    cut = tokenize_record(rec, tok, "mistral_instruct", 16, first_turn - 3, counter)
    assert cut["input_ids"] == full["input_ids"][:first_turn - 3]
    assert cut["input_ids"].count(tok.convert_tokens_to_ids(IMAGE_TOKEN)) == 16
    assert (counter.records, counter.dropped_turns, counter.cut_tokens) == (2, 2, 3)


def test_the_stage_template_option_takes_llava_med_v1_and_refuses_others():
    from llavamed_lite.config import load_config

    assert load_config("tiny", {"stage1.template": "llava_med_v1"}).stage1.template == "llava_med_v1"
    with pytest.raises(ValueError, match="stage1.template"):
        load_config("tiny", {"stage1.template": "vicuna"})
