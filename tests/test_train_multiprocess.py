"""The same CLI under a multi-process launcher: tiny stage 2 as 2 CPU processes (gloo, DDP) started by `launch_stage`,
the call a training notebook makes on several GPUs; its output streams line by line, and its loss falls.

torchrun, not `accelerate launch`: accelerate starts several CPU processes only through mpirun. The GPU configs in
configs/accelerate/ launch the same module."""

import json

import pytest
import torch

from llavamed_lite.config import load_config
from llavamed_lite.train.launch import launch_stage
from llavamed_lite.train.stages import train_stage


def launch(tmp_path, tiny_towers, tiny_train_data):
    folder, captions, chats = tiny_train_data
    run = tmp_path / "run"
    overrides = [f"model.vision={tiny_towers[0]}", f"model.lm={tiny_towers[1]}", "stage1.max_steps=2",
                 "stage1.batch_size=4"]
    train_stage(load_config("tiny", overrides), "1", run, records=captions, image_folder=folder, progress=False)
    overrides += ["stage2.max_steps=8", "stage2.batch_size=2", "stage2.logging_steps=1", "stage2.lr=1e-3"]
    seen = []
    lines = launch_stage("2", "tiny", run, overrides, processes=2, launcher="torchrun", records=chats,
                         image_folder=folder, progress=False, echo=seen.append)
    assert seen == lines  # every line echoed as it came, and returned
    return run, json.loads(lines[-1])


@pytest.mark.slow
def test_two_cpu_processes_train_stage2_and_the_loss_falls(tmp_path, tiny_towers, tiny_train_data):
    run, summary = launch(tmp_path, tiny_towers, tiny_train_data)
    assert summary["processes"] == 2 and summary["steps"] == 8
    assert json.loads((run / "stage2" / "summary.json").read_text())["processes"] == 2
    history = json.loads((run / "stage2" / "loss_history.json").read_text())
    assert len(history) == 8 and history[-1]["loss"] < history[0]["loss"] - 0.2
    assert (run / "stage2" / "model" / "config.json").exists()


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="FSDP needs 2 accelerators here: accelerate's FSDP plugin "
                    "refuses the CPU in this torch/accelerate ('no available devices found, must be one of XPU, "
                    "CUDA, ...'), so FSDP cannot be tested on this machine")
def test_fsdp_full_shard_two_processes(tmp_path, tiny_towers, tiny_train_data, monkeypatch):
    env = {"ACCELERATE_USE_FSDP": "true", "FSDP_SHARDING_STRATEGY": "FULL_SHARD",
           "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
           "FSDP_TRANSFORMER_CLS_TO_WRAP": "MistralDecoderLayer,CLIPEncoderLayer", "FSDP_USE_ORIG_PARAMS": "true",
           "FSDP_STATE_DICT_TYPE": "FULL_STATE_DICT"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # launch_stage hands the environment on
    run, summary = launch(tmp_path, tiny_towers, tiny_train_data)
    assert summary["processes"] == 2
