"""Images are checked (and shrunk) before training starts: hostile files stop the run at once with the list of
them, or are skipped with skip_bad; with the image cache, training reads copies at the model's input size."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

import llavamed_lite.train.collator as collator
from llavamed_lite.data.formats import RecordError
from llavamed_lite.train.collator import ConversationDataset, LlavaCollator, image_input_size


def hostile_folder(tiny_train_data, tmp_path, png_header_only):
    """records (12, ids c0..c11) in a copy of the train folder where c1..c5 point at hostile files."""
    folder, _, chats = tiny_train_data
    shutil.copytree(folder / "images", tmp_path / "images")
    good = (tmp_path / "images" / "0.png").read_bytes()
    files = {
        "truncated.png": good[: len(good) // 2],
        "empty.png": b"",
        "bomb.png": png_header_only(30000, 30000),  # 900M pixels claimed by a 100-byte file
        "bad_crc.png": good[:29] + bytes([good[29] ^ 0xFF]) + good[30:],  # the IHDR chunk's checksum
    }
    for name, data in files.items():
        (tmp_path / "images" / name).write_bytes(data)
    records = json.loads(chats.read_text())
    for i, name in enumerate([*files, "missing.png"], start=1):
        records[i]["image"] = f"images/{name}"
    return records


def test_hostile_images_stop_before_training_with_the_list_of_them(tiny_llava, tiny_train_data, tmp_path,
                                                                    png_header_only):
    records = hostile_folder(tiny_train_data, tmp_path, png_header_only)
    with pytest.raises(RecordError) as caught:
        ConversationDataset(records, tiny_llava[1], "mistral_instruct", 128, tmp_path, source="chats.json")
    message = str(caught.value)
    assert message.startswith("chats.json: 5 bad training records") and "skip_bad" in message
    lines = message.splitlines()[1:]
    assert [line.split("(id ")[1][:4] for line in lines] == ["'c1'", "'c2'", "'c3'", "'c4'", "'c5'"]
    assert "too large" in lines[2] and "not a readable" not in lines[2]  # the bomb
    assert "truncated.png" in lines[0] and "empty.png" in lines[1] and "bad_crc.png" in lines[3]
    assert "does not exist" in lines[4]


def test_hostile_images_are_skipped_and_reported_with_skip_bad(tiny_llava, tiny_train_data, tmp_path,
                                                                png_header_only, capsys):
    records = hostile_folder(tiny_train_data, tmp_path, png_header_only)
    dataset = ConversationDataset(records, tiny_llava[1], "mistral_instruct", 128, tmp_path, skip_bad=True)
    assert [item["id"] for item in dataset.items] == ["c0", *[f"c{i}" for i in range(6, 12)]]
    assert len(dataset.errors) == 5 and "skipped 5 bad records" in capsys.readouterr().err
    batch = LlavaCollator(tiny_llava[1])([dataset[i] for i in range(len(dataset))])  # every kept image reads
    assert batch["pixel_values"].shape[0] == 7


def test_training_stops_on_a_bad_image_before_the_first_step(tiny_towers, tiny_train_data, tmp_path, png_header_only):
    from llavamed_lite.config import load_config
    from llavamed_lite.train.stages import train_stage

    records = hostile_folder(tiny_train_data, tmp_path / "data", png_header_only)
    (tmp_path / "records.json").write_text(json.dumps(records))
    cfg = load_config("tiny", {"model.vision": tiny_towers[0], "model.lm": tiny_towers[1], "stage1.max_steps": 2,
                               "stage1.template": "mistral_instruct"})  # the records are conversations
    with pytest.raises(RecordError, match="5 bad training records"):
        train_stage(cfg, "1", tmp_path / "run", records=tmp_path / "records.json", image_folder=tmp_path / "data",
                    progress=False)
    assert not (tmp_path / "run" / "stage1" / "checkpoints").exists()


def test_image_cache_shrinks_once_to_the_input_size(tiny_llava, tmp_path, monkeypatch):
    processor = tiny_llava[1]
    side, pad = image_input_size(processor)
    assert (side, pad) == (32, True)
    (tmp_path / "images").mkdir()
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.random((3, 5, 3)), np.ones((40, 40, 1)))  # 120 x 200 px of 40 px blocks
    Image.fromarray((smooth * 255).astype("uint8")).save(tmp_path / "images" / "big.png")
    Image.fromarray((smooth[::-1] * 255).astype("uint8")).save(tmp_path / "flipped.png")
    Image.fromarray((rng.random((20, 30, 3)) * 255).astype("uint8")).save(tmp_path / "images" / "small.png")
    turns = [{"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": "A figure."}]
    records = [{"id": name, "image": f"images/{name}.png", "conversations": turns} for name in ("big", "small")]
    cache = tmp_path / "cache"
    plain = ConversationDataset(records, processor, "plain", 128, tmp_path)
    cached = ConversationDataset(records, processor, "plain", 128, tmp_path, image_cache=cache, image_size=(side, pad))
    shrunk = Image.open(cached[0]["image"])
    assert cached[0]["image"].startswith(str(cache)) and shrunk.size == (32, 19)  # the longer side to 32 (padded)
    assert cached[1]["image"] == str(tmp_path / "images" / "small.png")  # small enough: read as it is
    collate = LlavaCollator(processor)
    before, after = collate([plain[0]])["pixel_values"], collate([cached[0]])["pixel_values"]
    flipped = collate([{**plain[0], "image": str(tmp_path / "flipped.png")}])["pixel_values"]
    assert (before - after).abs().mean() < 0.2 * (before - flipped).abs().mean()  # what the model sees barely changes

    opened = []
    monkeypatch.setattr(collator, "load_image", lambda path: opened.append(path))
    again = ConversationDataset(records[:1], processor, "plain", 128, tmp_path, image_cache=cache,
                                image_size=(side, pad))
    assert again[0]["image"] == cached[0]["image"] and opened == []  # shrunk once, not at the next run
