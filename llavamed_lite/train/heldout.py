"""A held-out metric over training steps (`TrainConfig.heldout_every`).

The training loss says how well the model fits its own records; whether it answers questions it has
never seen better is another matter. `HeldoutCurve` answers the first `heldout_questions` test
questions of the stage's benchmark at step 0 (the starting point), every `heldout_every` steps and
at the last step, with the batched greedy decoding and the paper's scoring that `evaluate` uses, and
writes the points to <stage folder>/heldout_curve.json as [{"step", "closed", "open", "seconds"}, ...].
"""

import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from ..config import Config
from ..eval.evaluate import VQA_MAX_NEW_TOKENS, score_answers
from ..eval.generate import answer_questions
from ..eval.vqa import VQAItem, load_benchmark
from ..io import atomic_write_json, read_json
from ..model.placement import model_device
from ..runs import RunDir

HELDOUT_FILE = "heldout_curve.json"


def heldout_items(cfg: Config, run_dir: str | Path, benchmark: str, n: int) -> list[VQAItem]:
    """The first `n` test questions of a benchmark, read as `evaluate` reads them: for "tiny" the
    tiny world's held-out questions (run_dir/data), otherwise the test split (data.benchmark_data)."""
    source = RunDir(run_dir, create=False).world if benchmark == "tiny" else cfg.data.benchmark_data
    if benchmark == "tiny" and not (source / "vqa_heldout.json").is_file():
        raise FileNotFoundError(f"{source / 'vqa_heldout.json'} is missing: heldout_every needs the tiny "
                                "world's held-out questions (notebook 00, or data.source=tiny builds them)")
    return load_benchmark(benchmark, "test", source)[:n]


class HeldoutCurve(TrainerCallback):
    """Measure the paper's closed accuracy and open recall on `items` at step 0, every `every` steps
    and at the last step; `curve` holds the points ({step, closed, open, seconds}: what the measurement
    cost, inside the stage's time), rewritten to `path` after each one. Only the main process measures
    (the other processes train on meanwhile)."""

    def __init__(self, items: list[VQAItem], processor, every: int, path: str | Path, batch_size: int = 16):
        self.items, self.processor, self.every, self.path = items, processor, every, Path(path)
        self.batch_size = batch_size
        self.curve: list[dict] = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == 0:
            self.measure(args, state, model)
        elif self.path.is_file():  # resumed: keep the points measured up to the checkpoint
            self.curve = [p for p in read_json(self.path) if p["step"] <= state.global_step]

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0 or state.global_step >= state.max_steps:
            self.measure(args, state, model)

    def measure(self, args, state, model) -> None:
        if not state.is_world_process_zero or any(p["step"] == state.global_step for p in self.curve):
            return
        start, was_training = time.perf_counter(), model.training
        model.eval()  # no dropout; transformers turns gradient checkpointing off outside training
        # bf16 runs keep float32 master weights beside frozen bfloat16 ones: autocast, as in training
        autocast = torch.autocast(model_device(model).type, torch.bfloat16, enabled=args.bf16)
        try:
            with torch.no_grad(), autocast:
                texts = answer_questions(model, self.processor, self.items, self.batch_size, VQA_MAX_NEW_TOKENS)
        finally:
            model.train(was_training)
        answers = [{"question_id": it.question_id, "text": text} for it, text in zip(self.items, texts)]
        scores = score_answers(self.items, answers)
        self.curve.append({"step": state.global_step, "closed": scores["closed_accuracy"],
                           "open": scores["open_recall"], "seconds": round(time.perf_counter() - start, 2)})
        atomic_write_json(self.path, self.curve)
