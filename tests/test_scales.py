"""The GPU presets at their shape on the CPU, with miniature stand-ins for CLIP ViT-L/14-336 and Mistral-7B
(`llavamed-lite make-mini`): stage 2 of `full` as two processes under torchrun, as a multi-GPU node runs it.
The whole pipeline at `lora` and `full` runs in `make test-scales` (`llavamed-lite run --quick`)."""

import json

import pytest
from transformers import AutoModelForImageTextToText

from llavamed_lite.config import load_config
from llavamed_lite.model.mini import make_mini
from llavamed_lite.train.launch import launch_stage
from llavamed_lite.train.stages import train_stage


@pytest.mark.slow
def test_full_stage2_in_two_processes_at_its_shape(tmp_path, tiny_train_data):
    folder, captions, chats = tiny_train_data
    vision, lm = make_mini(tmp_path / "mini")
    run = tmp_path / "run"
    small = [f"model.vision={vision}", f"model.lm={lm}", "stage1.max_steps=1", "stage2.max_steps=2",
             "stage1.batch_size=2", "stage2.batch_size=1", "stage1.grad_accum=1", "stage2.grad_accum=1",
             "stage1.num_workers=0", "stage2.num_workers=0", "stage2.logging_steps=1"]
    one = train_stage(load_config("full", small), "1", run, records=captions, image_folder=folder, progress=False)
    assert one.steps == 1
    lines = launch_stage("2", "full", run, small, processes=2, launcher="torchrun", records=chats, image_folder=folder,
                         progress=False, echo=lambda line: None)
    summary = json.loads(lines[-1])
    assert (summary["processes"], summary["steps"]) == (2, 2)
    saved = json.loads((run / "stage2" / "summary.json").read_text())
    assert saved["scale"] == "full" and saved["config"]["bf16"] and saved["config"]["gradient_checkpointing"]
    model = AutoModelForImageTextToText.from_pretrained(run / "stage2" / "model")
    assert model.config.image_seq_length == 576 and model.config.text_config.model_type == "mistral"
