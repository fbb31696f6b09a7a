"""The GPU preset trained on LLaVA-Med's release, at its shape with miniature stand-in models (576 image tokens, a
SentencePiece-style tokenizer, the LM in 4-bit): the release served from 127.0.0.1 goes through the real downloader,
the figures come out of PMC-style packages as {pair_id}.jpg, and the saved model loads with plain transformers."""

import json

import pytest
from transformers import AutoModelForImageTextToText

from fake_release import write_fake_release
from llavamed_lite.cli import main
from llavamed_lite.teaching_servers import FaultyServer
from llavamed_lite.model.mini import make_mini


@pytest.mark.slow
def test_train_stage1_at_lora_on_a_served_release(tmp_path, capsys):
    vision, lm = make_mini(tmp_path / "mini")
    run = tmp_path / "R"
    with FaultyServer(tmp_path / "release") as server:
        write_fake_release(tmp_path / "release", server.url())
        rc = main(["train", "--stage", "1", "--scale", "lora", "--run-dir", str(run), "--set", f"model.vision={vision}",
                   "--set", f"model.lm={lm}", "--set", "data.source=llava-med", "--set", f"data.release={server.url()}",
                   "--set", "stage1.max_steps=2", "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "CC BY-NC 4.0" in out
    images = sorted(p.name for p in (run / "data" / "llava_med" / "images").glob("*.jpg"))
    assert images == ["p1.jpg", "p2.jpg", "p3.jpg", "p6.jpg"]  # p4 is not in its package, p5's package 404s
    summary = json.loads((run / "stage1" / "summary.json").read_text())
    assert (summary["steps"], summary["records"], summary["four_bit"]) == (2, 4, True)
    model = AutoModelForImageTextToText.from_pretrained(run / "stage1" / "model")
    assert model.config.image_seq_length == 576
