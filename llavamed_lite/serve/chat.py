"""Multi-turn chat about one image, streamed token by token: the work behind the web UI, usable from a notebook.

    model, processor = load_llava("runs/tiny/stage2/model")
    answer = chat(model, processor, "figure.png", [], "What does the image show?")
    history = add_turn([], "What does the image show?", answer)
    answer = chat(model, processor, "figure.png", history, "Is there a nodule?")

History is a list of messages `{"role": "user" | "assistant", "content": str}` (the format of gradio's Chatbot).
The conversation is formatted by the processor's chat template (mistral_instruct), with the image in the first
user turn only, as in LLaVA-Med's training data.
"""

import threading
import warnings
from pathlib import Path
from typing import Iterator

import torch
from PIL import Image, UnidentifiedImageError
from transformers import TextIteratorStreamer

from ..images import MAX_PIXELS
from ..images import load_image as read_image
from ..model.placement import model_device

RESEARCH_NOTICE = ("Research and teaching only, not for clinical use: this model's answers are not medical advice "
                   "and may be wrong.")
MAX_FILE_BYTES = 30 * 1024 * 1024  # a medical figure is a few MB at most


class ChatError(ValueError):
    """Bad input a user can fix (no image, not an image, too large, empty question): shown in the UI as is."""


def load_image(source: str | Path | Image.Image, max_pixels: int = MAX_PIXELS,
               max_bytes: int = MAX_FILE_BYTES) -> Image.Image:
    """An RGB image from a path (PNG, JPEG, DICOM: `llavamed_lite.images.load_image`) or a PIL image. Non-images,
    damaged files, huge files and decompression bombs (checked from the header, before decoding) raise a ChatError
    that names the file by its name only (uploads live under temporary paths)."""
    if source is None:
        raise ChatError("No image: upload an image or pick an example first.")
    if isinstance(source, Image.Image):
        _check_pixels(source, "the image", max_pixels)
        return source.convert("RGB")
    path = Path(source)
    if not path.is_file():
        raise ChatError(f"{path.name}: no such file.")
    size = path.stat().st_size
    if size > max_bytes:
        raise ChatError(f"{path.name}: the file is {size / 2**20:.0f} MB; the limit is {max_bytes / 2**20:.0f} MB.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's bomb warning (we check ourselves), DICOM preambles read as TIFF
            with Image.open(path) as header:  # reads the header only
                _check_pixels(header, path.name, max_pixels)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError):
        pass  # not a format PIL knows (e.g. DICOM), or a bomb: read_image below gives the message
    try:
        return read_image(path)
    except (ValueError, OSError) as e:
        raise ChatError(str(e).replace(str(path), path.name)) from None


def _check_pixels(image: Image.Image, name: str, max_pixels: int) -> None:
    width, height = image.size
    if width * height > max_pixels:
        raise ChatError(f"{name}: the image is {width} x {height} pixels; the limit is "
                        f"{max_pixels / 1e6:.0f} megapixels. Downscale it first.")
    if width == 0 or height == 0:
        raise ChatError(f"{name}: the image is empty ({width} x {height} pixels).")


def text_of(content) -> str:
    """A message's text, whether gradio hands it over as a string or as a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or content.get("content") or "")
    if isinstance(content, (list, tuple)):
        return "\n".join(t for t in (text_of(part) for part in content) if t)
    return "" if content is None else str(content)


def add_turn(history: list[dict], question: str, answer: str) -> list[dict]:
    """The history with one more question and answer (a new list)."""
    return [*history, {"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def conversation(history: list[dict], question: str) -> list[dict]:
    """Chat-template messages: the earlier turns, then the question; `<image>` in the first user turn only."""
    messages = []
    for message in history:
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise ChatError(f"history: each message needs role 'user' or 'assistant', got {message!r}")
        messages.append({"role": role, "content": text_of(message.get("content"))})
    messages.append({"role": "user", "content": question})
    if messages[0]["role"] != "user":
        raise ChatError("history: the conversation must start with a user message")
    messages[0] = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": messages[0]["content"]}]}
    return messages


def prepare_inputs(model, processor, image, history: list[dict], question: str, max_new_tokens: int) -> dict:
    """Tokenised prompt and pixel values on the model's device, after checking every input. When the conversation
    outgrows the model's context, the oldest turns after the first (which holds the image) are left out."""
    question = (question or "").strip()
    if not question:
        raise ChatError("Type a question first.")
    image = load_image(image)
    limit = getattr(model.config.text_config, "max_position_embeddings", None)
    history = list(history)
    while True:
        text = processor.apply_chat_template(conversation(history, question), add_generation_prompt=True)
        inputs = processor(images=image, text=text, return_tensors="pt")
        n_prompt = inputs["input_ids"].shape[1]
        if limit is None or n_prompt + max_new_tokens <= limit:
            break
        if len(history) <= 2:
            raise ChatError(f"The conversation is too long for this model ({n_prompt} prompt tokens + "
                            f"{max_new_tokens} new > {limit}): press Clear to start again, or lower max new tokens.")
        del history[2:4]  # the oldest question and answer after the first turn
    dtype = next(model.parameters()).dtype
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    return inputs.to(model_device(model))


def stream_chat(model, processor, image, history: list[dict], question: str, temperature: float = 0.0,
                max_new_tokens: int = 128, top_p: float = 1.0) -> Iterator[str]:
    """Yield the answer so far after each new piece of text. Generation runs in a thread that feeds a
    TextIteratorStreamer; an error in that thread is raised here, not lost."""
    if max_new_tokens < 1:
        raise ChatError(f"max new tokens must be at least 1, got {max_new_tokens}")
    if temperature < 0:
        raise ChatError(f"temperature must be >= 0, got {temperature}")
    inputs = prepare_inputs(model, processor, image, history, question, max_new_tokens)
    streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p) if temperature > 0 else dict(do_sample=False)
    failure = []

    def generate():
        try:
            with torch.no_grad():
                model.generate(**inputs, streamer=streamer, max_new_tokens=max_new_tokens,
                               pad_token_id=processor.tokenizer.pad_token_id, **sampling)
        except BaseException as e:  # handed to the caller below
            failure.append(e)
            streamer.end()

    thread = threading.Thread(target=generate, daemon=True)
    thread.start()
    answer = ""
    for piece in streamer:
        if piece:
            answer += piece
            yield answer.strip()
    thread.join()
    if failure:
        raise failure[0]


def chat(model, processor, image, history: list[dict], question: str, temperature: float = 0.0,
         max_new_tokens: int = 128, top_p: float = 1.0) -> str:
    """The model's whole answer to `question` about `image` (a path or a PIL image), given the earlier turns."""
    answer = ""
    for answer in stream_chat(model, processor, image, history, question, temperature, max_new_tokens, top_p):
        pass
    return answer
