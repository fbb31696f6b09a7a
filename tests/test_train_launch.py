"""Multi-GPU training from a notebook: when a stage is launched, with which arguments, what a failed launch reports
(a 2-process launch itself: tests/test_train_multiprocess.py); and the FSDP wrapping of
configs/accelerate/fsdp_8gpu.yaml built with torch's FSDP on the CPU (accelerate refuses the CPU for FSDP)."""

from pathlib import Path

import pytest
import torch
import yaml

import llavamed_lite.train.launch as launch
from llavamed_lite.config import load_config
from llavamed_lite.train.launch import config_overrides, launch_processes, launch_stage, train_or_launch


@pytest.mark.parametrize("scale, gpus, processes", [("tiny", 4, 0), ("lora", 0, 0), ("lora", 1, 0), ("lora", 2, 2),
                                                     ("full", 0, 0), ("full", 1, 1), ("full", 8, 8)])
def test_when_a_stage_is_launched(scale, gpus, processes, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    assert launch_processes(load_config(scale)) == processes


def test_a_launched_process_rebuilds_the_same_config():
    cfg = load_config("lora", {"stage2.lr": 1e-4, "stage2.projector_lr": "none", "stage1.bf16": False, "seed": 3,
                               "model.lm": "some/lm"})
    overrides = config_overrides(cfg)
    assert sorted(overrides) == ["model.lm=some/lm", "seed=3", "stage1.bf16=false", "stage2.lr=0.0001",
                                 "stage2.projector_lr=none"]
    assert load_config("lora", overrides) == cfg


def test_train_or_launch_launches_on_many_gpus(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(launch, "launch_stage", lambda *args, **kwargs: calls.append((args, kwargs)))
    monkeypatch.setattr(launch, "result_from_summary", lambda folder: folder)
    cfg = load_config("full", {"stage2.lr": 1e-4})
    assert train_or_launch(cfg, 2, tmp_path, progress=False) == tmp_path / "stage2"
    (stage, scale, run_dir, overrides, processes), kwargs = calls[0]
    assert (stage, scale, run_dir, overrides, processes) == ("2", "full", tmp_path, ["stage2.lr=0.0001"], 2)
    assert kwargs["progress"] is False


@pytest.mark.slow
def test_a_failed_launch_raises_with_its_last_lines(tmp_path):
    """accelerate launch (one process, the single-GPU config, which runs on the CPU too) hands the module and its
    arguments on: the override reaches the CLI, which refuses it."""
    with pytest.raises(RuntimeError, match=r"(?s)stage 1 \(accelerate, 1 processes\) failed.*unknown config key"):
        launch_stage("1", "tiny", tmp_path, ["stage1.bogus=1"], processes=1,
                     accelerate_config=launch.ACCELERATE_CONFIGS / "single_gpu.yaml", echo=lambda _: None)
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        launch_stage("1", "full", tmp_path, accelerate_config=tmp_path / "nowhere.yaml")


def test_fsdp_wrapping_of_the_8gpu_config_builds_on_the_cpu(tiny_llava_dir, tmp_path):
    """The wrap classes the config names exist in the composed model, each becomes an FSDP unit, and with
    use_orig_params the frozen vision tower and the trainable LM keep their own parameters (names, requires_grad)
    after a bf16 model's trainable weights are made float32 masters for FSDP."""
    import functools

    import torch.distributed as dist
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp import ShardingStrategy
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy
    from transformers import AutoModelForImageTextToText

    from llavamed_lite.model.freeze import fp32_master_weights, freeze_for_stage

    config = yaml.safe_load((Path(launch.ACCELERATE_CONFIGS) / "fsdp_8gpu.yaml").read_text())["fsdp_config"]
    model = AutoModelForImageTextToText.from_pretrained(tiny_llava_dir, dtype=torch.bfloat16)
    freeze_for_stage(model, "2")
    fp32_master_weights(model, everything=True)  # what train_stage does under FSDP: one dtype per flat unit
    names = config["fsdp_transformer_layer_cls_to_wrap"].split(",")
    classes = {type(m) for m in model.modules() if type(m).__name__ in names}
    assert {c.__name__ for c in classes} == set(names)
    counts = {c: sum(isinstance(m, c) for m in model.modules()) for c in classes}
    grads = {n: p.requires_grad for n, p in model.named_parameters()}

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        wrapped = FSDP(model, auto_wrap_policy=functools.partial(transformer_auto_wrap_policy,
                                                                 transformer_layer_cls=classes),
                       sharding_strategy=ShardingStrategy[config["fsdp_sharding_strategy"]],
                       use_orig_params=config["fsdp_use_orig_params"], device_id=torch.device("cpu"))
        units = [m.module for m in wrapped.modules() if isinstance(m, FSDP)]
        for cls, n in counts.items():
            assert sum(isinstance(u, cls) for u in units) == n > 0
        assert config["fsdp_use_orig_params"] is True
        kept = {n.replace("_fsdp_wrapped_module.", ""): p.requires_grad for n, p in wrapped.named_parameters()}
        assert kept == grads  # original parameters, frozen and trainable side by side
        batch = {"input_ids": torch.tensor([[1] + [model.config.image_token_id] * 16 + [5, 6, 7]]),
                 "pixel_values": torch.randn(1, 3, 32, 32)}
        loss = wrapped(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        assert torch.isfinite(loss)
    finally:
        dist.destroy_process_group()
