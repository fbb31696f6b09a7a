"""What a stage's model writes, to look at before and after training: captions (stage 1's
template) and multi-turn chats (stage 2's mistral_instruct format), greedy, through
`llavamed_lite.generation`.
"""

from pathlib import Path

from tqdm.auto import tqdm

from ..data.alignment import BRIEF_INSTRUCTIONS
from ..data.domains import classify_caption
from ..data.formats import IMAGE_TOKEN
from ..generation import generate, prompt, with_image
from .collator import record_image


def generate_captions(model, processor, image_paths: list[str | Path], batch_size: int = 64,
                      max_new_tokens: int = 40, template: str = "plain", progress: bool = True) -> list[str]:
    """Captions in the stage's template: the image (with llava_med_v1, after the first of stage 1's
    requests for a description; plain drops the request), then whatever the model writes."""
    ids = prompt(processor, f"{BRIEF_INSTRUCTIONS[0]}\n{IMAGE_TOKEN}", template)
    captions = []
    with tqdm(total=len(image_paths), desc="captions", unit="fig", disable=not progress) as bar:
        for start in range(0, len(image_paths), batch_size):
            images = [record_image(p) for p in image_paths[start:start + batch_size]]
            captions += generate(model, processor, [ids] * len(images), images, max_new_tokens)
            bar.update(len(images))
    return captions


def sample_chat(model, processor, image_path: str | Path, questions: list[str],
                max_new_tokens: int = 48) -> list[tuple[str, str]]:
    """A multi-turn conversation about one image in the mistral_instruct format: each answer joins
    the history of the next question. The first question carries the image."""
    history, image = [], record_image(image_path)
    for k, question in enumerate(questions):
        turns = [(with_image(q) if i == 0 else q, a) for i, (q, a) in enumerate(history)]
        ids = prompt(processor, question if k else with_image(question), "mistral_instruct", turns)
        history.append((question, generate(model, processor, [ids], [image], max_new_tokens)[0]))
    return history


def caption_domain_accuracy(captions: list[str], domains: list[str]) -> float:
    """Share of generated captions whose named modality (curation's caption vocabulary,
    data/domains.py) is the figure's true domain."""
    if len(captions) != len(domains) or not captions:
        raise ValueError(f"need as many captions as domains, and at least one "
                         f"(got {len(captions)} and {len(domains)})")
    return sum(classify_caption(c) == d for c, d in zip(captions, domains)) / len(captions)
