"""--resume: a finished stage is left alone; a 4-bit (QLoRA) stage continues from its checkpoint, its adapter,
projector, optimiser and scheduler restored, and ends like an uninterrupted run."""

import json
import shutil

import pytest
import torch
from towers import StopAt

from llavamed_lite.config import load_config
from llavamed_lite.train.stages import train_stage



def cfg_for(tiny_towers, **overrides):
    values = {"model.vision": tiny_towers[0], "model.lm": tiny_towers[1]}
    for stage in ("stage1", "stage2"):
        values.update({f"{stage}.max_steps": 4, f"{stage}.batch_size": 4, f"{stage}.logging_steps": 1,
                       f"{stage}.save_steps": 2, f"{stage}.warmup_ratio": 0})
    values.update({"stage1.template": "mistral_instruct", **overrides})
    return load_config("tiny", values)


def files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_resume_of_a_finished_stage_does_nothing(tiny_towers, tiny_train_data, tmp_path, capsys):
    folder, _, chats = tiny_train_data
    cfg = cfg_for(tiny_towers, **{"stage1.max_steps": 2})
    first = train_stage(cfg, "1", tmp_path, records=chats, image_folder=folder, progress=False)
    stage = tmp_path / "stage1"
    before = files(stage)
    again = train_stage(cfg, "1", tmp_path, records=chats, image_folder=folder, progress=False, resume=True)
    assert "has finished (2 steps): --resume has nothing to do" in capsys.readouterr().out
    assert files(stage) == before  # the model, checkpoints and summary untouched
    assert again.steps == first.steps == 2 and again.final_loss == first.final_loss
    assert again.history == first.history and again.model_dir == first.model_dir
    longer = cfg_for(tiny_towers, **{"stage1.max_steps": 3})  # a longer plan continues from the checkpoint
    continued = train_stage(longer, "1", tmp_path, records=chats, image_folder=folder, progress=False, resume=True)
    assert continued.steps == 3


def projector(model_dir):
    from safetensors.torch import load_file

    weights = {}
    for f in model_dir.glob("*.safetensors"):
        weights.update({k: v for k, v in load_file(f).items() if "multi_modal_projector" in k})
    return weights


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["1", "2"])
def test_4bit_resume_ends_like_an_uninterrupted_run(stage, tiny_towers, tiny_train_data, tmp_path):
    """Stage 1 in 4-bit (the projector trains) and QLoRA stage 2 (adapter + projector), cut at step 2 of 4."""
    folder, _, chats = tiny_train_data
    cfg = cfg_for(tiny_towers, **{"model.load_in_4bit": True, "stage2.lora": True, "stage2.lora_r": 4,
                                  "stage2.lora_alpha": 8, "stage2.lora_dropout": 0.0})
    runs = {name: tmp_path / name for name in ("whole", "cut")}
    if stage == "2":  # both start from the same plain stage-1 model
        plain = cfg_for(tiny_towers, **{"stage1.max_steps": 1})
        train_stage(plain, "1", tmp_path / "base", records=chats, image_folder=folder, progress=False)
        for run in runs.values():
            shutil.copytree(tmp_path / "base" / "stage1", run / "stage1")
    whole = train_stage(cfg, stage, runs["whole"], records=chats, image_folder=folder, progress=False)
    cut = train_stage(cfg, stage, runs["cut"], records=chats, image_folder=folder, progress=False,
                      callbacks=[StopAt(2)])
    assert cut.steps == 2
    resumed = train_stage(cfg, stage, runs["cut"], records=chats, image_folder=folder, progress=False, resume=True)
    assert resumed.steps == 4 and json.loads((resumed.model_dir.parent / "summary.json").read_text())["four_bit"]
    assert [h["lr"] for h in resumed.history] == [h["lr"] for h in whole.history]  # the scheduler went on
    assert resumed.final_loss == pytest.approx(whole.final_loss, rel=1e-4)
    a, b = projector(whole.model_dir), projector(resumed.model_dir)
    assert a.keys() == b.keys() and a
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    if stage == "2":  # the merged LM carries the adapter
        from transformers import AutoModelForImageTextToText

        wa = AutoModelForImageTextToText.from_pretrained(whole.model_dir).state_dict()
        wb = AutoModelForImageTextToText.from_pretrained(resumed.model_dir).state_dict()
        for key in wa:
            torch.testing.assert_close(wa[key], wb[key], rtol=1e-4, atol=1e-4)
