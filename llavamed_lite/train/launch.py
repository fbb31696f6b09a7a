"""Training on several GPUs from a notebook: the stage runs as `accelerate launch ... -m
llavamed_lite.cli train` in a subprocess whose output streams into the notebook line by line, and a
failure fails the cell with its last lines.

Where each stage runs (train_or_launch):
    full, one or more GPUs   accelerate launch, configs/accelerate/fsdp_8gpu.yaml (FSDP), one process per GPU
    lora, two or more GPUs   accelerate launch, configs/accelerate/multi_gpu.yaml (DDP), one process per GPU
    otherwise                in the notebook's own process (tiny; lora on one GPU; any scale on the CPU)
A notebook is one process: without a launcher the Trainer would fall back to DataParallel on many
GPUs, which neither shards the model (FSDP) nor runs a process per GPU.
"""

import dataclasses
import os
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Callable

import torch

from ..config import Config, load_config
from ..runs import RunDir
from .stages import TrainResult, check_stage, result_from_summary, train_stage

ACCELERATE_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "accelerate"
LAUNCH_CONFIG = {"full": "fsdp_8gpu.yaml", "lora": "multi_gpu.yaml"}


def launch_processes(cfg: Config) -> int:
    """How many processes to launch for this config (one per GPU), or 0 to train in this process."""
    gpus = torch.cuda.device_count()
    if cfg.scale == "full" and gpus >= 1 or cfg.scale == "lora" and gpus >= 2:
        return gpus
    return 0


def config_overrides(cfg: Config) -> list[str]:
    """`key=value` strings that turn the scale's preset into `cfg`, so a launched
    process rebuilds the same config."""
    def flat(obj, prefix=""):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                yield from flat(value, f"{prefix}{f.name}.")
            else:
                yield prefix + f.name, value

    preset = dict(flat(load_config(cfg.scale)))
    text = {True: "true", False: "false", None: "none"}
    return [f"{key}={text.get(value, value) if isinstance(value, (bool, type(None))) else value}"
            for key, value in flat(cfg) if key != "scale" and value != preset[key]]


def launch_stage(stage: str, scale: str, run_dir: str | Path, overrides: list[str] = (),
                 processes: int = 2, launcher: str = "accelerate",
                 accelerate_config: str | Path | None = None, resume: bool = False,
                 records: str | Path | None = None, image_folder: str | Path | None = None,
                 benchmark: str | None = None, progress: bool = True,
                 echo: Callable[[str], None] = print) -> list[str]:
    """Run `llavamed-lite train` for one stage under `accelerate launch` (or `torchrun`, which
    starts CPU processes too) with `processes` processes, echoing every output line as it comes.
    Returns the lines; raises RuntimeError with the last 40 when the launch fails."""
    stage = check_stage(stage)
    if launcher == "accelerate":
        config_file = Path(accelerate_config
                           or ACCELERATE_CONFIGS / LAUNCH_CONFIG.get(scale, "single_gpu.yaml"))
        if not config_file.is_file():
            raise FileNotFoundError(f"{config_file}: no such accelerate config")
        cmd = [sys.executable, "-m", "accelerate.commands.launch",
               "--config_file", str(config_file), "--num_processes", str(processes), "-m"]
    elif launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", str(processes), "-m"]
    else:
        raise ValueError(f"unknown launcher {launcher!r}: choose accelerate or torchrun")
    cmd += ["llavamed_lite.cli", "train", "--stage", stage, "--scale", scale,
            "--run-dir", str(run_dir)]
    for flag, value in (("--records", records), ("--image-folder", image_folder),
                        ("--benchmark", benchmark)):
        cmd += [flag, str(value)] if value is not None else []
    cmd += (["--resume"] if resume else []) + ([] if progress else ["--no-progress"])
    for override in overrides:
        cmd += ["--set", override]
    env = {"TQDM_MININTERVAL": "10", **os.environ, "TOKENIZERS_PARALLELISM": "false",
           "PYTHONUNBUFFERED": "1"}
    lines, tail = [], deque(maxlen=40)
    # Text mode reads "\r" as a line end too, so each refresh of a progress bar arrives as a line.
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env) as proc:
        for line in proc.stdout:
            line = line.rstrip("\n")
            echo(line)
            lines.append(line)
            tail.append(line)
    if proc.returncode != 0:
        raise RuntimeError(f"stage {stage} ({launcher}, {processes} processes) failed with exit "
                           f"status {proc.returncode}; its last lines:\n" + "\n".join(tail))
    return lines


def train_or_launch(cfg: Config, stage: str | int, run_dir: str | Path, resume: bool = False,
                    records: str | Path | None = None, image_folder: str | Path | None = None,
                    benchmark: str | None = None, progress: bool = True,
                    echo: Callable[[str], None] = print) -> TrainResult:
    """What the training notebooks call: train_stage in this process, or, on several
    GPUs (see launch_processes), the same stage launched as one process per GPU; either
    way the stage's TrainResult."""
    processes = launch_processes(cfg)
    if not processes:
        return train_stage(cfg, stage, run_dir, resume=resume, records=records,
                           image_folder=image_folder, benchmark=benchmark, progress=progress)
    stage = check_stage(stage)
    launch_stage(stage, cfg.scale, run_dir, config_overrides(cfg), processes, resume=resume,
                 records=records, image_folder=image_folder, benchmark=benchmark, progress=progress,
                 echo=echo)
    return result_from_summary(RunDir(run_dir).stage(stage, benchmark or cfg.data.benchmark))
