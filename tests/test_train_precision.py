"""Mixed precision: with bf16 on, trainable weights are float32 master weights under bf16 autocast (on the CPU too),
so one AdamW step at the paper's lr moves every weight that has a gradient; frozen weights stay in bf16."""

import shutil

import torch
from transformers import TrainerCallback

from llavamed_lite.config import load_config
from llavamed_lite.train.stages import train_stage


class FirstStep(TrainerCallback):
    """The trainable weights before and after the first optimiser step, and the dtypes of all weights."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        self.dtypes = {n: p.dtype for n, p in model.named_parameters()}
        self.autocast = []
        inner = next(m for n, m in model.named_modules()  # the LM's: it runs inside the autocast region at every
                     if n.endswith("q_proj") and "language_model" in n)  # step (the tower may read cached features)
        inner.register_forward_hook(lambda *_: self.autocast.append(torch.is_autocast_enabled("cpu")))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == 1:
            self.after = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_one_bf16_step_moves_every_trainable_weight(tiny_towers, tiny_llava_dir, tiny_train_data, tmp_path):
    folder, _, chats = tiny_train_data
    shutil.copytree(tiny_llava_dir, tmp_path / "run" / "stage1" / "model")
    cfg = load_config("tiny", {"model.vision": tiny_towers[0], "model.lm": tiny_towers[1], "model.dtype": "bfloat16",
                               "stage2.bf16": True, "stage2.max_steps": 1, "stage2.lr": 2e-5, "stage2.warmup_ratio": 0,
                               "stage2.projector_lr": None, "stage2.batch_size": 4})
    step = FirstStep()
    train_stage(cfg, "2", tmp_path / "run", records=chats, image_folder=folder, progress=False, callbacks=[step])
    assert step.autocast and all(step.autocast)  # bf16=True reaches autocast on the CPU
    assert step.before and all(step.dtypes[n] == torch.float32 for n in step.before)
    assert all(step.dtypes[n] == torch.bfloat16 for n in step.dtypes if "vision_tower" in n)  # frozen: left in bf16
    for name, before in step.before.items():
        moved = (step.after[name] != before).float().mean().item()
        assert moved > 0, name
        if name.endswith("proj.weight") or "multi_modal_projector" in name:  # every element has a gradient
            assert moved > 0.99, (name, moved)
