"""make-mini: random towers of the GPU presets' shapes that compose, run and save like the hub models."""

import json
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

from llavamed_lite.cli import main
from llavamed_lite.data.formats import IMAGE_TOKEN
from llavamed_lite.model.compose import compose_llava
from llavamed_lite.model.mini import make_mini


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    return make_mini(tmp_path_factory.mktemp("mini"))


@pytest.fixture(scope="module")
def mini_llava(mini):
    torch.manual_seed(0)
    return compose_llava(*mini)


def chat_inputs(processor, image_size=(400, 300)):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    return processor(images=[Image.new("RGB", image_size, (90, 40, 200))], text=text, return_tensors="pt")


def test_command_writes_both_folders_in_seconds_and_keeps_an_existing_out(tmp_path, capsys):
    start = time.perf_counter()
    assert main(["make-mini", "--out", str(tmp_path / "m"), "--seed", "3"]) == 0
    assert time.perf_counter() - start < 20
    for name in ("vision/config.json", "vision/model.safetensors", "vision/preprocessor_config.json",
                 "lm/config.json", "lm/model.safetensors", "lm/tokenizer.json"):
        assert (tmp_path / "m" / name).is_file(), name
    info = json.loads((tmp_path / "m" / "mini.json").read_text())
    assert "random weights" in info["what"] and info["seed"] == 3
    assert json.loads(capsys.readouterr().out) == {"vision": str(tmp_path / "m/vision"), "lm": str(tmp_path / "m/lm")}

    before = (tmp_path / "m/lm/model.safetensors").read_bytes()
    assert main(["make-mini", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--overwrite" in err and str(tmp_path / "m") in err
    assert (tmp_path / "m/lm/model.safetensors").read_bytes() == before
    (tmp_path / "file").write_text("keep")
    assert main(["make-mini", "--out", str(tmp_path / "file"), "--overwrite"]) == 2
    assert "is a file" in capsys.readouterr().err and (tmp_path / "file").read_text() == "keep"


def test_the_seed_decides_the_weights(tmp_path):
    weights = [Path(make_mini(tmp_path / name, seed=seed)[1], "model.safetensors").read_bytes()
               for name, seed in (("a", 1), ("b", 1), ("c", 2))]
    assert weights[0] == weights[1] != weights[2]


def test_tokenizer_is_sentencepiece_style_without_image_or_pad(mini):
    tok = AutoTokenizer.from_pretrained(mini[1])
    assert IMAGE_TOKEN not in tok.get_vocab() and tok.pad_token is None
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok("What is shown?")["input_ids"][0] == tok.bos_token_id  # <s> added on encode
    assert tok.convert_ids_to_tokens(tok("\n", add_special_tokens=False)["input_ids"]) == ["▁", "<0x0A>"]
    assert tok.tokenize("a [INST]")[-3:] == ["▁[", "INST", "]"]  # plain text, as in Mistral's tokenizer
    pieces = tok.tokenize("haemorrhage pneumothorax")
    assert pieces[0].startswith("▁") and len(pieces) > 4  # unseen words are several pieces
    text = "Is there a nodule?\nYes, in the left lung (2 cm)."
    assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text


def test_composition_gives_576_image_tokens_and_a_forward_pass(mini_llava):
    model, processor = mini_llava
    assert model.config.image_seq_length == 576 and model.config.vision_config.image_size == 336
    assert processor.tokenizer.pad_token is not None and IMAGE_TOKEN in processor.tokenizer.get_vocab()
    inputs = chat_inputs(processor)
    assert inputs["pixel_values"].shape == (1, 3, 336, 336)
    assert (inputs["input_ids"] == model.config.image_token_id).sum() == 576
    with torch.no_grad():
        logits = model(**inputs).logits  # (1, L, vocab)
    assert logits.shape == (1, inputs["input_ids"].shape[1], model.config.text_config.vocab_size)
    assert torch.isfinite(logits).all()


def test_saved_composition_loads_with_the_auto_classes(mini_llava, tmp_path):
    model, processor = mini_llava
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path)
    loaded_processor = AutoProcessor.from_pretrained(tmp_path)
    inputs = chat_inputs(loaded_processor)
    assert torch.equal(inputs["input_ids"], chat_inputs(processor)["input_ids"])
    with torch.no_grad():
        assert torch.allclose(loaded(**inputs).logits, model(**inputs).logits, atol=1e-5)
