"""Multi-turn chat about one image, streamed token by token: the work behind the web UI, usable from
a notebook.

    model, processor = load_llava("runs/tiny/stage2/model")
    answer = chat(model, processor, "figure.png", [], "What does the image show?")
    history = add_turn([], "What does the image show?", answer)
    answer = chat(model, processor, "figure.png", history, "Is there a nodule?")

History is a list of messages `{"role": "user" | "assistant", "content": str}` (the format of
gradio's Chatbot). The conversation is written in stage 2's mistral_instruct template
(`llavamed_lite.generation`: the text the model was trained on, which the processor's chat template
renders too), with the image in the first user turn only, as in LLaVA-Med's training data.
"""

import threading
import warnings
from pathlib import Path
from typing import Iterator

from PIL import Image, UnidentifiedImageError
from transformers import TextIteratorStreamer

from ..generation import generate, prompt, with_image
from ..images import MAX_PIXELS, load_image

RESEARCH_NOTICE = ("Research and teaching only, not for clinical use: this model's answers are not "
                   "medical advice and may be wrong.")
MAX_FILE_BYTES = 30 * 1024 * 1024  # a medical figure is a few MB at most


class ChatError(ValueError):
    """Bad input a user can fix (no image, not an image, too large, empty question): shown in the UI
    as is."""


def read_upload(source: str | Path | Image.Image, max_pixels: int = MAX_PIXELS,
                max_bytes: int = MAX_FILE_BYTES) -> Image.Image:
    """An RGB image from a path (PNG, JPEG, DICOM: `llavamed_lite.images.load_image`) or a PIL
    image. Non-images, damaged files, huge files and decompression bombs (checked from the header,
    before decoding) raise a ChatError that names the file by its name only (uploads live under
    temporary paths)."""
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
        raise ChatError(f"{path.name}: the file is {size / 2**20:.0f} MB; "
                        f"the limit is {max_bytes / 2**20:.0f} MB.")
    try:
        with warnings.catch_warnings():
            # PIL's bomb warning (we check ourselves), DICOM preambles read as TIFF
            warnings.simplefilter("ignore")
            with Image.open(path) as header:  # reads the header only
                _check_pixels(header, path.name, max_pixels)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError):
        pass  # not a format PIL knows (e.g. DICOM), or a bomb: load_image below gives the message
    try:
        return load_image(path)
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
    return [*history, {"role": "user", "content": question},
            {"role": "assistant", "content": answer}]


def history_turns(history: list[dict]) -> list[tuple[str, str]]:
    """The earlier (question, answer) turns of a history of messages, `<image>` before the first
    question only."""
    pairs = []
    for k, message in enumerate(history):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise ChatError(f"history: each message needs role 'user' or 'assistant', "
                            f"got {message!r}")
        if k == 0 and role != "user":
            raise ChatError("history: the conversation must start with a user message")
        if role != ("user", "assistant")[k % 2]:
            raise ChatError(f"history: user and assistant messages must alternate; message {k} is "
                            f"a second {role}")
        if role == "user":
            pairs.append((text_of(message.get("content")), ""))
        else:
            pairs[-1] = (pairs[-1][0], text_of(message.get("content")))
    return [(with_image(q) if i == 0 else q, a) for i, (q, a) in enumerate(pairs)]


def prepare_inputs(model, processor, image, history: list[dict], question: str,
                   max_new_tokens: int) -> tuple[list[int], Image.Image]:
    """The prompt's token ids and the RGB image, after checking every input. When the conversation
    outgrows the model's context, the oldest turns after the first (which holds the image) are left
    out."""
    question = (question or "").strip()
    if not question:
        raise ChatError("Type a question first.")
    image = read_upload(image)
    limit = getattr(model.config.text_config, "max_position_embeddings", None)
    earlier = history_turns(history)
    while True:
        text = question if earlier else with_image(question)
        ids = prompt(processor, text, "mistral_instruct", earlier)
        if limit is None or len(ids) + max_new_tokens <= limit:
            return ids, image
        if len(earlier) <= 1:
            raise ChatError(f"The conversation is too long for this model ({len(ids)} prompt "
                            f"tokens + {max_new_tokens} new > {limit}): press Clear to start "
                            "again, or lower max new tokens.")
        del earlier[1]  # the oldest question and answer after the first turn


def stream_chat(model, processor, image, history: list[dict], question: str,
                temperature: float = 0.0, max_new_tokens: int = 128,
                top_p: float = 1.0) -> Iterator[str]:
    """Yield the answer so far after each new piece of text. Generation runs in a thread that
    feeds a TextIteratorStreamer; an error in that thread is raised here, not lost."""
    if max_new_tokens < 1:
        raise ChatError(f"max new tokens must be at least 1, got {max_new_tokens}")
    if temperature < 0:
        raise ChatError(f"temperature must be >= 0, got {temperature}")
    ids, image = prepare_inputs(model, processor, image, history, question, max_new_tokens)
    streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    failure = []

    def write():
        try:
            generate(model, processor, [ids], [image], max_new_tokens, temperature, top_p, streamer)
        except BaseException as e:  # handed to the caller below
            failure.append(e)
            streamer.end()

    thread = threading.Thread(target=write, daemon=True)
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
    """The model's whole answer to `question` about `image` (a path or a PIL image), given the
    earlier turns."""
    answer = ""
    for answer in stream_chat(model, processor, image, history, question, temperature,
                              max_new_tokens, top_p):
        pass
    return answer
