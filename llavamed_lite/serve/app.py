"""The Gradio chat UI: pick or upload an image, ask questions, watch the answer stream in.

`build_app(model_dir)` returns the Blocks (call `.launch()` on it, or show it inline in a notebook);
`launch()` serves it on 127.0.0.1 unless told otherwise. Every handler turns bad input into a
message in the status line instead of an exception, so a wrong file never takes the app down. The
image handler opens only files uploaded to this app and its own examples: its API (`/use_image`)
takes a path, and must not open, or say whether there is, any other file on the server.
"""

import logging
import tempfile
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder
from PIL import Image

from ..model.compose import load_llava
from ..paths import DATA_SAMPLES
from ..synth.world import figure
from .chat import MAX_FILE_BYTES, RESEARCH_NOTICE, ChatError, read_upload, stream_chat

log = logging.getLogger(__name__)

WELCOME = "Pick an example or upload an image, then ask a question about it."


def example_images(world_dir: str | Path | None = None, n_world: int = 4) -> list[str]:
    """A few held-out tiny-world figures and real images from data_samples/ (two NIH chest X-rays,
    two VQA-RAD and two SLAKE images). The figures come from `world_dir` (run_dir/data) when it
    holds them, else are drawn afresh (deterministic, milliseconds) into a temporary folder."""
    paths: list[Path] = []
    if world_dir is not None:
        paths += sorted((Path(world_dir) / "images").glob("tw-heldout-*.png"))[:n_world]
    if not paths and n_world:
        paths += _drawn_figures(n_world)
    paths += sorted((DATA_SAMPLES / "xray").glob("*.png"))[:2]
    paths += sorted((DATA_SAMPLES / "vqa_rad" / "data_RAD" / "images").glob("*.jpg"))[:2]
    paths += sorted((DATA_SAMPLES / "slake" / "Slake1.0" / "imgs").glob("*/source.jpg"))[:2]
    return [str(p) for p in paths if p.is_file()]


def _drawn_figures(n: int, seed: int = 0, image_size: int = 64) -> list[Path]:
    folder = Path(tempfile.gettempdir()) / f"llavamed-lite-examples-{seed}-{image_size}"
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(n):
        record, image, _ = figure("heldout", i, seed, image_size)
        path = folder / f"{record['pair_id']}.png"
        if not path.exists():
            image.save(path)
        paths.append(path)
    return paths


def _caption(path: str) -> str:
    path = Path(path)
    return path.parent.name if path.name == "source.jpg" else path.stem  # SLAKE names every image source.jpg


def _for_display(image: Image.Image, side: int = 256) -> Image.Image:
    """Tiny-world figures are 64 px: shown enlarged (pixels kept sharp); the model gets the
    original."""
    scale = side // max(image.size)
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST) if scale > 1 else image


def _describe(image: Image.Image, name: str) -> str:
    return f"Image **{name}** ({image.width} x {image.height}) loaded. Ask a question about it."


def build_app(model_dir: str | Path | None = None, *, model=None, processor=None, examples: list[str] | None = None,
              device: str = "cpu", title: str = "llavamed-lite chat") -> gr.Blocks:
    """The chat app over a saved checkpoint (`model_dir`) or an already loaded `model` and
    `processor`."""
    if model is None or processor is None:
        if model_dir is None:
            raise ValueError("build_app needs model_dir, or both model and processor")
        model, processor = load_llava(model_dir, device=device)
    model.eval()
    examples = example_images() if examples is None else list(examples)
    use_image, pick_example, respond = _handlers(model, processor, examples)
    return _layout(title, examples, use_image, pick_example, respond)


def _handlers(model, processor, examples: list[str]):
    """The UI's event handlers: a new image (uploaded, or an example picked), and a question to
    answer."""
    known = {Path(p).resolve() for p in examples}

    def servable(path) -> bool:
        """An example, or a file in Gradio's upload folder (where every upload lands), links
        resolved."""
        try:
            path = Path(path).resolve()
        except (OSError, ValueError):  # e.g. a NUL byte in the name
            return False
        return path in known or path.is_relative_to(Path(get_upload_folder()).resolve())

    def use_image(path):
        """A new image starts a new conversation (the image belongs to the first turn)."""
        if path is None:
            return None, None, [], WELCOME
        if not isinstance(path, (str, Path)) or not servable(path):  # the same answer whether it exists or not
            return None, None, [], "⚠️ Only an uploaded image or one of the examples can be used."
        try:
            image = read_upload(path)
        except ChatError as e:
            return None, None, [], f"⚠️ {e}"
        return image, _for_display(image), [], _describe(image, Path(path).name)

    def pick_example(evt: gr.SelectData):
        return use_image(examples[evt.index])

    def respond(image, history, question, temperature, max_new_tokens):
        history = list(history or [])
        if image is None:
            yield history, question, "⚠️ No image: upload an image or pick an example first."
            return
        turn = [{"role": "user", "content": question}, {"role": "assistant", "content": ""}]
        try:
            for answer in stream_chat(model, processor, image, history, question, float(temperature),
                                      int(max_new_tokens)):
                turn[1]["content"] = answer
                yield history + turn, "", "Answering..."
        except ChatError as e:
            yield history, question, f"⚠️ {e}"
            return
        except Exception as e:  # a failure inside the model: report it, keep the app alive
            log.exception("generation failed")
            yield history, question, f"⚠️ Generation failed ({type(e).__name__}: {e})."
            return
        if not turn[1]["content"]:
            turn[1]["content"] = "(no answer: the model stopped at once)"
        yield history + turn, "", "Done. Ask a follow-up question, or pick another image."

    return use_image, pick_example, respond


def _layout(title: str, examples: list[str], use_image, pick_example, respond) -> gr.Blocks:
    """The page: image picker and preview on the left, the conversation and its settings on the
    right."""
    with gr.Blocks(title=title, analytics_enabled=False) as app:
        gr.Markdown(f"# {title}\n**{RESEARCH_NOTICE}**", elem_id="notice")
        image_state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=2):
                upload = gr.File(label="Upload an image (PNG, JPEG or DICOM)", file_types=["image", ".dcm"],
                                 type="filepath", elem_id="upload")
                preview = gr.Image(label="Image", type="pil", interactive=False, height=260, elem_id="preview")
                gallery = gr.Gallery(value=[(p, _caption(p)) for p in examples], label="Examples (click one)",
                                     columns=4, height=220, allow_preview=False, buttons=[], fit_columns=False,
                                     elem_id="examples")
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="Conversation", height=420, elem_id="chatbot")
                status = gr.Markdown(WELCOME, elem_id="status")
                question = gr.Textbox(label="Question", placeholder="What does the image show?", lines=1,
                                      elem_id="question")
                with gr.Row():
                    send = gr.Button("Send", variant="primary", elem_id="send")
                    clear = gr.Button("Clear conversation", elem_id="clear")
                with gr.Accordion("Generation settings", open=False):
                    temperature = gr.Slider(0.0, 1.5, value=0.0, step=0.05, label="Temperature (0 = greedy)")
                    max_new_tokens = gr.Slider(1, 512, value=128, step=1, label="Max new tokens")

        chosen = [image_state, preview, chatbot, status]
        upload.change(use_image, inputs=upload, outputs=chosen)
        gallery.select(pick_example, inputs=None, outputs=chosen)
        ask = dict(fn=respond, inputs=[image_state, chatbot, question, temperature, max_new_tokens],
                   outputs=[chatbot, question, status], concurrency_id="generate", concurrency_limit=1)
        send.click(**ask)
        question.submit(**ask)
        clear.click(lambda: ([], "Conversation cleared."), inputs=None, outputs=[chatbot, status])
    return app


def launch(app: gr.Blocks, host: str = "127.0.0.1", port: int | None = None, block: bool = True):
    """Serve the app; local only unless `host` says otherwise. Fonts are the system's (no request
    leaves the machine), uploads above the file-size limit are refused by the server."""
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    return app.queue().launch(server_name=host, server_port=port, prevent_thread_lock=not block, quiet=not block,
                              max_file_size=MAX_FILE_BYTES, theme=theme, ssr_mode=False, footer_links=[])
