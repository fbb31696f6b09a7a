"""Shared fixtures: tiny random-init towers saved to disk, composed through the same from_pretrained calls as at
full scale (no hub, no network)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

from towers import make_tiny_towers


@pytest.fixture(scope="session")
def tiny_towers(tmp_path_factory):
    """(vision_dir, lm_dir): a random CLIPModel with its image processor, a random MistralForCausalLM with a BPE
    tokenizer that lacks `<image>` and a pad token (as Mistral's does); tests/towers.py."""
    return make_tiny_towers(tmp_path_factory.mktemp("towers"))


@pytest.fixture(scope="session")
def tiny_llava(tiny_towers):
    from llavamed_lite.model.compose import compose_llava

    torch.manual_seed(0)
    return compose_llava(*tiny_towers)


@pytest.fixture(scope="session")
def tiny_llava_dir(tiny_llava, tmp_path_factory):
    """A composed tiny model saved with save_pretrained: what a training stage leaves behind."""
    model, processor = tiny_llava
    path = tmp_path_factory.mktemp("tiny_llava")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tree_digest():
    """digest(folder) -> (the first 16 hex digits of a sha256 over every file's path and bytes, the file count): pins
    generated files (the tiny world, the PMC mirror) to the bytes they had."""
    import hashlib

    def digest(folder):
        h = hashlib.sha256()
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        for p in files:
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
        return h.hexdigest()[:16], len(files)

    return digest


@pytest.fixture(scope="session")
def png_header_only():
    """make(width, height) -> bytes of a PNG that claims width x height pixels but holds almost no data: what a
    decompression bomb looks like to a reader that trusts the header (serve tests)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    def make(width: int, height: int) -> bytes:
        header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                + chunk(b"IEND", b""))

    return make


@pytest.fixture(scope="session")
def tiny_train_data(tmp_path_factory):
    """(folder, caption_records_file, chat_records_file): 12 random 32 px images with alignment-style (one pair) and
    multi-turn records, image paths relative to folder; for the training tests."""
    import json

    import numpy as np
    from PIL import Image

    folder = tmp_path_factory.mktemp("train_data")
    (folder / "images").mkdir()
    rng = np.random.default_rng(0)
    captions, chats = [], []
    for i in range(12):
        Image.fromarray((rng.random((32, 32, 3)) * 255).astype("uint8")).save(folder / f"images/{i}.png")
        answer = "Chest radiograph showing a nodule." if i % 2 else "Axial CT of the abdomen."
        first = [{"from": "human", "value": "<image>\nDescribe the image briefly."}, {"from": "gpt", "value": answer}]
        captions.append({"id": f"a{i}", "image": f"images/{i}.png", "conversations": first})
        chats.append({"id": f"c{i}", "image": f"images/{i}.png", "conversations": first + [
            {"from": "human", "value": "Is there a nodule?"}, {"from": "gpt", "value": "Yes." if i % 2 else "No."}]})
    (folder / "captions.json").write_text(json.dumps(captions))
    (folder / "chats.json").write_text(json.dumps(chats))
    return folder, folder / "captions.json", folder / "chats.json"
