"""The run directory: where a pipeline run keeps its artifacts and the metrics its notebooks record.

Layout (design.md): run_dir/{foundation,data,instruct,stage1,stage2,vqa}/ and run_dir/metrics.json.
Notebooks call `record_metrics(run_dir, name=value, ...)`; `llavamed-lite run` collects them into summary.json.
"""

import math
import numbers
from pathlib import Path

from .io import atomic_write_json, read_json

METRICS_FILE = "metrics.json"


def record_metrics(run_dir: str | Path, **metrics: float) -> dict:
    """Merge numeric metrics into run_dir/metrics.json (atomically) and return everything recorded so far."""
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            raise ValueError(f"metric {name!r} must be a finite number, got {value!r}")
    path = Path(run_dir) / METRICS_FILE
    merged = read_metrics(run_dir)
    merged.update({k: float(v) if isinstance(v, float) else v for k, v in metrics.items()})
    atomic_write_json(path, merged)
    return merged


def read_metrics(run_dir: str | Path) -> dict:
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return {}
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of metric name -> number")
    return data


def stage_dir(run_dir: str | Path, stage: str) -> Path:
    """run_dir/<stage>/, created on demand (stage: foundation, data, instruct, stage1, stage2, vqa)."""
    path = Path(run_dir) / stage
    path.mkdir(parents=True, exist_ok=True)
    return path
