"""The chat function behind the UI: conversation formatting, streaming, and bad input answered with ChatError."""

import argparse
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from llavamed_lite.paths import DATA_SAMPLES
from llavamed_lite.serve.chat import (ChatError, add_turn, chat, history_turns, prepare_inputs, read_upload,
                                      stream_chat, text_of)

XRAY = DATA_SAMPLES / "xray" / "00000001_000.png"


def _image(seed=0, h=40, w=60):
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((h, w, 3)) * 255).astype("uint8"))


def test_template_puts_the_image_in_the_first_user_turn_only(tiny_llava):
    _, processor = tiny_llava
    history = add_turn([], "Q1", "A1")
    ids, _ = prepare_inputs(*tiny_llava, _image(), history, "Q2", max_new_tokens=4)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q1"}]},
                {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert text == "[INST] <image>\nQ1 [/INST] A1</s>[INST] Q2 [/INST]"
    assert ids == processor(images=_image(), text=text)["input_ids"][0]  # the processor's chat template
    model = tiny_llava[0]
    assert ids.count(model.config.image_token_id) == (32 // 8) ** 2  # one image's tokens


def test_gradio_content_parts_are_read_as_text(tiny_llava):
    history = [{"role": "user", "content": [{"type": "text", "text": "Q1"}]},
               {"role": "assistant", "content": [{"type": "text", "text": "A1"}]}]
    assert history_turns(history) == [("<image>\nQ1", "A1")]
    assert text_of(None) == "" and text_of("x") == "x"


def test_greedy_chat_equals_generate(tiny_llava):
    model, processor = tiny_llava
    image = _image(1)
    answer = chat(model, processor, image, [], "Is there a nodule?", max_new_tokens=6)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is there a nodule?"}]}]
    inputs = processor(images=image, text=processor.apply_chat_template(messages, add_generation_prompt=True),
                       return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=6, do_sample=False,
                             pad_token_id=processor.tokenizer.pad_token_id)
    expected = processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    assert answer == expected


def test_stream_yields_growing_prefixes(tiny_llava):
    pieces = list(stream_chat(*tiny_llava, XRAY, [], "What does the image show?", max_new_tokens=8))
    assert pieces, "no text streamed"
    for shorter, longer in zip(pieces, pieces[1:]):
        assert longer.startswith(shorter)
    assert pieces[-1] == chat(*tiny_llava, XRAY, [], "What does the image show?", max_new_tokens=8)


def test_sampling_runs_and_multi_turn(tiny_llava):
    torch.manual_seed(0)
    first = chat(*tiny_llava, XRAY, [], "Q1", temperature=0.8, max_new_tokens=4)
    second = chat(*tiny_llava, XRAY, add_turn([], "Q1", first), "Q2", temperature=0.8, max_new_tokens=4)
    assert isinstance(second, str)


def test_generation_errors_reach_the_caller(tiny_llava, monkeypatch):
    model, processor = tiny_llava

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(model, "generate", broken)
    with pytest.raises(RuntimeError, match="boom"):
        chat(model, processor, XRAY, [], "Q", max_new_tokens=4)


@pytest.mark.parametrize("question, settings, message", [
    ("", {}, "Type a question"),
    ("Q", {"max_new_tokens": 0}, "at least 1"),
    ("Q", {"temperature": -1.0}, "temperature"),
    ("Q", {"max_new_tokens": 10_000}, "too long for this model"),
])
def test_bad_settings_and_questions(tiny_llava, question, settings, message):
    with pytest.raises(ChatError, match=message):
        chat(*tiny_llava, XRAY, [], question, **settings)


def test_long_conversations_keep_the_first_turn_and_the_latest(tiny_llava):
    model, processor = tiny_llava
    limit = model.config.text_config.max_position_embeddings  # 512 in the tiny model
    history = []
    for i in range(40):
        history = add_turn(history, f"Question {i} about the nodule in the left upper zone?", "Yes. " * 5)
    ids, _ = prepare_inputs(model, processor, XRAY, history, "Last question?", max_new_tokens=8)
    assert len(ids) + 8 <= limit
    text = processor.tokenizer.decode(ids)
    assert "Question 0 " in text and "Question 39 " in text and "Question 1 " not in text
    assert ids.count(model.config.image_token_id) == 16


def test_bad_history(tiny_llava):
    with pytest.raises(ChatError, match="role"):
        chat(*tiny_llava, XRAY, [{"role": "robot", "content": "x"}], "Q", max_new_tokens=2)
    with pytest.raises(ChatError, match="start with a user"):
        chat(*tiny_llava, XRAY, [{"role": "assistant", "content": "x"}], "Q", max_new_tokens=2)
    with pytest.raises(ChatError, match="alternate"):
        chat(*tiny_llava, XRAY, [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}], "Q")


def test_read_upload_refuses_bad_files(tmp_path, png_header_only):
    with pytest.raises(ChatError, match="No image"):
        read_upload(None)
    with pytest.raises(ChatError, match="no such file"):
        read_upload(tmp_path / "missing.png")
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    with pytest.raises(ChatError, match="notes.png: not a readable image"):
        read_upload(text)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(XRAY.read_bytes()[:5000])
    with pytest.raises(ChatError, match="truncated.png: not a readable image"):
        read_upload(truncated)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(20000, 20000))  # 400 megapixels: PIL's own bomb check fires
    with pytest.raises(ChatError, match="bomb.png: image is too large.*decompression bomb"):
        read_upload(bomb)
    big = tmp_path / "big.png"
    big.write_bytes(png_header_only(9000, 9000))  # 81 megapixels: under PIL's limit, over ours
    with pytest.raises(ChatError, match="9000 x 9000 pixels"):
        read_upload(big)
    with pytest.raises(ChatError, match="MB"):
        read_upload(XRAY, max_bytes=1000)
    with pytest.raises(ChatError, match="megapixels"):
        read_upload(_image(h=100, w=100), max_pixels=5000)


def test_read_upload_converts_to_rgb(tmp_path):
    grey = tmp_path / "grey.png"
    Image.new("L", (20, 10), 128).save(grey)
    image = read_upload(grey)
    assert image.mode == "RGB" and image.size == (20, 10)
    assert read_upload(XRAY).mode == "RGB"
    dicom = next((DATA_SAMPLES / "dicom").rglob("*.dcm"), None)
    if dicom is not None:  # DICOM slices are windowed to RGB by llavamed_lite.images
        assert read_upload(dicom).mode == "RGB"


def test_build_app_and_cli_defaults(tiny_llava):
    import gradio as gr

    from llavamed_lite.serve import cli
    from llavamed_lite.serve.app import build_app, example_images

    model, processor = tiny_llava
    assert isinstance(build_app(model=model, processor=processor, examples=[str(XRAY)]), gr.Blocks)
    examples = example_images()
    assert any("xray" in p for p in examples) and sum("tw-heldout-" in p for p in examples) == 4
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--model", "m"])
    assert args.host == "127.0.0.1"
    with pytest.raises(ValueError, match="model_dir"):
        build_app()


def test_cli_reports_a_missing_model(tmp_path, capsys):
    from llavamed_lite.cli import main

    assert main(["chat", "--model", str(tmp_path / "nothing")]) == 2
    assert "no config.json" in capsys.readouterr().err


def _handler(app, name):
    return next(f.fn for f in app.fns.values() if getattr(f.fn, "__name__", "") == name)


def test_ui_handlers_stream_and_report_bad_input(tiny_llava, tmp_path, monkeypatch):
    """The app's event handlers without a browser: answers arrive as several updates; bad input becomes a status."""
    from llavamed_lite.serve.app import build_app

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))  # Gradio's upload folder: files there count as uploads

    app = build_app(model=tiny_llava[0], processor=tiny_llava[1], examples=[str(XRAY)])
    use_image, respond = _handler(app, "use_image"), _handler(app, "respond")

    image, preview, history, status = use_image(str(XRAY))
    assert image.mode == "RGB" and history == [] and "loaded" in status
    updates = list(respond(image, [], "Is there a nodule?", 0.0, 8))
    assert len(updates) >= 2 and updates[-2][2] == "Answering..."
    history, question_box, status = updates[-1]
    assert status.startswith("Done") and question_box == ""
    assert [m["role"] for m in history] == ["user", "assistant"] and history[1]["content"]
    follow_up = list(respond(image, history, "And on the right?", 0.0, 4))[-1][0]
    assert len(follow_up) == 4

    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    assert use_image(str(text))[0] is None and "not a readable image" in use_image(str(text))[3]
    assert list(respond(None, [], "Q", 0.0, 4))[-1][2].startswith("⚠️ No image")
    history, question_box, status = list(respond(image, [], "   ", 0.0, 4))[-1]
    assert history == [] and "Type a question" in status


def test_use_image_serves_only_uploads_and_examples(tiny_llava, tmp_path, monkeypatch):
    """issue 18.7: the `/use_image` endpoint opened any image on the server by path, and said whether one existed."""
    from llavamed_lite.serve.app import build_app

    uploads, elsewhere = tmp_path / "uploads", tmp_path / "elsewhere"
    uploads.mkdir()
    elsewhere.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    shutil.copy(XRAY, uploads / "scan.png")
    shutil.copy(XRAY, elsewhere / "private.png")
    (uploads / "link.png").symlink_to(elsewhere / "private.png")  # a link out of the upload folder
    use_image = _handler(build_app(model=tiny_llava[0], processor=tiny_llava[1], examples=[str(XRAY)]), "use_image")
    assert use_image(str(XRAY))[0] is not None and use_image(str(uploads / "scan.png"))[0] is not None
    refused = "⚠️ Only an uploaded image or one of the examples can be used."
    for path in (elsewhere / "private.png", elsewhere / "absent.png", uploads / "link.png",
                 uploads / ".." / "elsewhere" / "private.png", "/etc/passwd"):  # existing or not: the same answer
        assert use_image(str(path)) == (None, None, [], refused)
