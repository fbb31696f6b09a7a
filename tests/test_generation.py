"""The one generation helper: prompts in a stage's template, batched greedy answers equal to the processor's path
one at a time, the padding helper, and the transformers releases the batched evaluation engine supports."""

import numpy as np
import pytest
import torch
from PIL import Image

from llavamed_lite.generation import cache_engine_supported, generate, prompt, with_image
from llavamed_lite.padding import pad_rows


def _image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((40, 50, 3)) * 255).astype("uint8"))


def test_the_installed_transformers_is_one_the_batched_engine_was_checked_with():
    """eval/generate.py's loop edits DynamicCache layers: a transformers upgrade must fail here until it is checked
    (then widen CACHE_ENGINE_TRANSFORMERS); meanwhile evaluation falls back to `generate`."""
    assert cache_engine_supported()
    assert cache_engine_supported("5.24.3") and not cache_engine_supported("5.23.0")
    assert not cache_engine_supported("5.25.0") and not cache_engine_supported("6.0.0")


def test_pad_rows_on_either_side():
    ids, mask = pad_rows([[5, 6, 7], [8]], pad_id=0, side="left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    ids, mask = pad_rows([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match="side"):
        pad_rows([[1]], 0, side="middle")


def _processor_path(model, processor, text: str, image: Image.Image, max_new_tokens: int) -> str:
    """What the chat did before the helper: the processor's own rendering and `model.generate`, one prompt alone."""
    inputs = processor(images=image, text=text, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=processor.tokenizer.pad_token_id)
    return processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def test_batched_greedy_answers_equal_the_processor_path_one_at_a_time(tiny_llava):
    model, processor = tiny_llava
    questions = ["Is there a nodule?", "What does the image show in the left upper zone of the chest?", "Left?"]
    images = [_image(k) for k in range(len(questions))]
    prompts = [prompt(processor, with_image(q)) for q in questions]  # of different lengths: left padding matters
    assert len({len(p) for p in prompts}) == 3
    answers = generate(model, processor, prompts, images, max_new_tokens=6)
    for q, image, answer in zip(questions, images, answers):
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True)
        assert prompt(processor, with_image(q)) == processor(images=image, text=text)["input_ids"][0]
        assert answer == _processor_path(model, processor, text, image, 6)
    # stage 1's plain template: the image, then the caption
    caption = generate(model, processor, [prompt(processor, f"Describe it.\n{with_image('')}", "plain")], images[:1])
    assert caption == [_processor_path(model, processor, "<image>\n", images[0], 48)]


def test_sampling_follows_the_seed(tiny_llava):
    model, processor = tiny_llava
    ids = prompt(processor, with_image("Is there a nodule?"))

    def sample(seed):
        torch.manual_seed(seed)
        return generate(model, processor, [ids], [_image(0)], max_new_tokens=8, temperature=1.5)

    assert sample(0) == sample(0)
    assert len({sample(seed)[0] for seed in range(4)}) > 1  # sampled, not greedy


def test_stage_one_captions_use_the_stage_s_template(tiny_llava, monkeypatch):
    """generate_captions used to write every prompt in the plain template; llava_med_v1 reads the system header
    and a request for a description before the image."""
    from llavamed_lite.train import samples

    model, processor = tiny_llava
    seen = []
    monkeypatch.setattr(samples, "generate", lambda m, p, prompts, images, n: seen.extend(prompts) or [""])
    monkeypatch.setattr(samples, "record_image", lambda path: _image(0))
    for template in ("plain", "llava_med_v1"):
        samples.generate_captions(model, processor, ["figure.png"], template=template)
    plain, v1 = (processor.tokenizer.decode(ids) for ids in seen)
    assert "### Human:" not in plain and plain.rstrip().endswith("<image>")
    assert "### Human: Describe the image briefly." in v1 and v1.endswith("### Assistant:")
