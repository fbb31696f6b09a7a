"""Zero-shot CLIP classification, the one implementation: the stage-0 CLIP's domain accuracy
(synth/towers.py, notebook 00) and curation's image classifier (data/domains.py, notebook 02) both
use `ZeroShotClassifier`.

Every prompt is a class of CLIP's softmax; a label's probability is the sum over its prompts, so a
label described by many varied prompts is a mixture, not one averaged point.
"""

import torch
import torch.nn.functional as F

from .padding import pad_rows


def clip_text_inputs(tokenizer, texts: list[str], max_length: int | None = None) -> dict:
    """Token ids ending in the end-of-text token CLIP pools at (added when the tokenizer does not
    add it), cut to `max_length`, right-padded, with their attention mask."""
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    rows = []
    for ids in tokenizer(texts)["input_ids"]:
        ids = ids[:-1] if ids and ids[-1] == eos else ids
        rows.append((ids if max_length is None else ids[:max_length - 1]) + [eos])
    input_ids, attention_mask = pad_rows(rows, pad, side="right")  # (N, T) each
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def _features(out) -> torch.Tensor:
    return F.normalize(getattr(out, "pooler_output", out), dim=-1)  # (N, projection_dim)


@torch.no_grad()
def embed_images(model, pixels: torch.Tensor) -> torch.Tensor:
    """Unit-length image embeddings of pixel values (N, 3, S, S)."""
    return _features(model.get_image_features(pixel_values=pixels.to(model.device)))


@torch.no_grad()
def embed_texts(model, tokenizer, texts: list[str], max_length: int | None = None,
                batch_size: int = 64) -> torch.Tensor:
    """Unit-length text embeddings, `batch_size` texts per pass."""
    out = []
    for start in range(0, len(texts), batch_size):
        inputs = clip_text_inputs(tokenizer, texts[start:start + batch_size], max_length)
        inputs = {k: v.to(model.device) for k, v in inputs.items()}
        out.append(_features(model.get_text_features(**inputs)))
    return torch.cat(out)


class ZeroShotClassifier:
    """A CLIP model with a set of prompts per label; `probabilities` of images over the labels."""

    def __init__(self, model, tokenizer, prompts: dict[str, list[str]],
                 max_length: int | None = None):
        self.model, self.labels = model.eval(), list(prompts)
        texts = [t for label in self.labels for t in prompts[label]]
        self.text = embed_texts(model, tokenizer, texts, max_length)  # (n_prompts, dim)
        owner = torch.tensor([k for k, label in enumerate(self.labels) for _ in prompts[label]])
        self.prompt_to_label = F.one_hot(owner, len(self.labels)).to(self.text)  # (prompts, labels)

    @torch.no_grad()
    def probabilities(self, pixels: torch.Tensor) -> torch.Tensor:
        """(n_images, n_labels) softmax over the labels, in the order of `self.labels`, on CPU."""
        images = embed_images(self.model, pixels)  # (n_images, dim)
        logits = self.model.logit_scale.exp() * images @ self.text.T  # (n_images, n_prompts)
        return (logits.softmax(-1) @ self.prompt_to_label).cpu()

    def predict(self, pixels: torch.Tensor) -> list[int]:
        """The most probable label's index for each image."""
        return self.probabilities(pixels).argmax(1).tolist()
