"""The run directory's contract: every artifact a pipeline run leaves, where it lives, who writes it and who reads it.

No other module spells a path inside a run directory: notebooks, `run`, `train`, `evaluate`, `chat`, `curate` and
`synthesize` ask a `RunDir` (a test checks it). A records file always travels with the folder its image paths are
relative to, as one `Records` value, so a stage can never read the right records against the wrong images.
`ARTIFACTS` is the table the README prints: what each notebook leaves behind, and who reads it.

Notebooks call `record_metrics(run_dir, name=value, ...)`; `llavamed-lite run` collects them into summary.json.
"""

import math
import numbers
from dataclasses import dataclass
from pathlib import Path

from .io import atomic_write_json, read_json

METRICS_FILE = "metrics.json"
STAGES = ("1", "2", "vqa")


class MissingInput(FileNotFoundError):
    """An input a stage needs is not there. The message names the file, what makes it and the parameter to set."""


@dataclass(frozen=True)
class Records:
    """A records file and the folder its `image` paths are relative to."""
    path: Path
    image_folder: Path

    def exists(self) -> bool:
        return self.path.is_file() and self.image_folder.is_dir()

    def require(self, made_by: str) -> "Records":
        """Self, or MissingInput naming what is missing and `made_by` (the notebook or command that makes it)."""
        for p in (self.path, self.image_folder):
            if not p.exists():
                raise MissingInput(f"{p} is missing: it is made by {made_by}")
        return self


@dataclass(frozen=True)
class Artifact:
    path: str  # relative to the run directory
    what: str
    written_by: str
    read_by: str


ARTIFACTS = {
    "world": Artifact("data/", "the tiny world: figures (images/), captions, VQA questions, alignment records",
                      "00 (and any tiny stage, on demand)", "02-07 and `train`/`evaluate` with data.source=tiny"),
    "pmc_synthetic": Artifact("data/pmc_synthetic/", "synthetic PMC packages (.tar.gz) and their manifest",
                              "00, 02", "02, `curate`"),
    "pmc_packages": Artifact("data/pmc_packages/", "PMC packages as downloaded, with the download ledger",
                             "02, `curate --manifest`", "02, `curate`"),
    "curated": Artifact("data/pmc/", "curated caption file, image manifest, alignment records, images/",
                        "02, `curate`", "03, and 04 with data.source=curated"),
    "release": Artifact("data/llava_med/", "LLaVA-Med's released files, PMC packages, images/{pair_id}.jpg and "
                        "the subsets trained on", "04-05 and `train` with data.source=llava-med", "04, 05, 06"),
    "instruct": Artifact("instruct/", "instruction conversations with their .stats.json: instruct_train.json (tiny "
                         "world), instruct_curated.json (from 02's captions)",
                         "03, `synthesize` (tiny: also 05 on demand)", "05 and `train --stage 2`"),
    "stage1": Artifact("stage1/", "model/, checkpoints/, loss_history.json, summary.json", "04, `train --stage 1`",
                       "05, 06, `train --stage 2`"),
    "stage2": Artifact("stage2/", "the same for stage 2, with heldout_curve.json (the held-out metric over steps); "
                     "eval_<benchmark>/ with answers and scores",
                       "05, `train --stage 2`", "06, 07, `chat`, `evaluate`"),
    "vqa": Artifact("vqa/, vqa_<benchmark>/", "VQA fine-tuned models (tiny world, or a benchmark), their "
                    "heldout_curve.json, and eval_<benchmark>/answers.jsonl, scores.json",
                    "06, `train --stage vqa`, `evaluate`", "06"),
    "metrics": Artifact("metrics.json", "every metric the notebooks recorded", "00-07", "`run` (summary.json)"),
    "summary": Artifact("summary.json, notebooks/", "the executed notebooks, their times and metrics", "`run`",
                        "you"),
}


class RunDir:
    """Paths of one run directory. Folders are created when asked for (unless create=False: readers that only look),
    files are not."""

    def __init__(self, root: str | Path, create: bool = True):
        self.root = Path(root)
        self.create = create

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    def _dir(self, *parts: str) -> Path:
        path = self.root.joinpath(*parts)
        if self.create:
            path.mkdir(parents=True, exist_ok=True)
        return path

    # ---- data ----
    @property
    def world(self) -> Path:
        return self._dir("data")

    @property
    def foundation(self) -> Path:
        """Towers pretrained by notebook 00 with `train_towers=True` (the committed ones live in data_samples/)."""
        return self._dir("foundation")

    @property
    def pmc_synthetic(self) -> Path:
        return self._dir("data", "pmc_synthetic")

    @property
    def pmc_packages(self) -> Path:
        return self._dir("data", "pmc_packages")

    def curated(self) -> dict[str, Path]:
        """Where curation writes. "root" is the image root of captions.json and alignment.json."""
        d = self.root / "data" / "pmc"
        return {"root": d, "captions": d / "captions.json", "image_manifest": d / "image_manifest.jsonl",
                "alignment": d / "alignment.json", "images": d / "images", "hf_dataset": d / "hf_dataset",
                "report": d / "report.json", "rejects": d / "rejects.jsonl", "ledger": d / "curation_ledger.jsonl",
                "manifest_images": d / "manifest_images", "manifest_images_report": d / "manifest_images_report.json",
                "work": d / "tmp"}

    def curated_alignment(self) -> Records:
        paths = self.curated()
        return Records(paths["alignment"], paths["root"])

    @property
    def release(self) -> Path:
        """LLaVA-Med's release: fetched files under files/, packages/, images/{pair_id}.jpg, subsets trained on."""
        return self._dir("data", "llava_med")

    def world_records(self, name: str) -> Records:
        """A records file of the tiny world (alignment_train.json, vqa_train.json): images relative to data/."""
        return Records(self.world / name, self.world)

    def benchmark_train(self, benchmark: str, limit: int | None = None) -> Records:
        """A benchmark's training split (or its first `limit` questions) in LLaVA's VQA format, with its images
        shrunk into their own folder."""
        name = benchmark.replace("-", "_")
        first = f"_first{limit}" if limit else ""
        return Records(self.world / f"{name}_train{first}.json", self.world / f"{name}_images")

    def instruct(self, source: str) -> Records:
        """Instruction conversations made from a source's captions (03 / `synthesize`); image paths are relative to
        the captions' folder: the tiny world's data/ or the curated data/pmc/."""
        folder = self.root / "data" / "pmc" if source == "curated" else self.root / "data"
        name = "instruct_train.json" if source == "tiny" else f"instruct_{source.replace('-', '_')}.json"
        return Records(self.instruct_dir / name, folder)

    @property
    def instruct_dir(self) -> Path:
        """Instruction files, with the answer caches of LLM backends beside them."""
        return self._dir("instruct")

    # ---- stages ----
    def stage(self, stage: str, benchmark: str = "tiny") -> Path:
        """A training stage's folder; VQA fine-tuning on a benchmark gets its own (vqa-rad -> vqa_rad/), so it does
        not overwrite the tiny world's (vqa/)."""
        stage = str(stage)
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}: choose one of {', '.join(STAGES)}")
        if stage != "vqa":
            return self._dir(f"stage{stage}")
        if benchmark == "tiny":
            return self._dir("vqa")
        name = benchmark.replace("-", "_")
        return self._dir(name if name.startswith("vqa") else f"vqa_{name}")

    def model(self, stage: str, benchmark: str = "tiny") -> Path:
        """The saved model of a stage (plain transformers folder; it may not exist yet)."""
        return self.stage(stage, benchmark) / "model"

    def eval_dir(self, stage: str, benchmark: str, stage_benchmark: str = "tiny") -> Path:
        """Answers and scores of a stage's model on a benchmark: <stage folder>/eval_<benchmark>/."""
        return self.stage(stage, stage_benchmark) / f"eval_{benchmark.replace('-', '_')}"

    def sibling(self, name: str) -> "RunDir":
        """A run directory nested in this one, for side experiments (e.g. 05's LoRA comparison)."""
        return RunDir(self._dir(name), self.create)

    @classmethod
    def of_model(cls, model_dir: str | Path) -> "RunDir":
        """The run directory a saved stage model lives in (run_dir/<stage>/model), for readers only."""
        return cls(Path(model_dir).resolve().parents[1], create=False)

    # ---- records of the run ----
    @property
    def metrics(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def notebooks(self) -> Path:
        return self._dir("notebooks")


def artifacts_table() -> str:
    """The README's table: what each artifact is, who writes it and who reads it (markdown)."""
    rows = ["| in `run_dir` | what | written by | read by |", "| --- | --- | --- | --- |"]
    rows += [f"| `{a.path}` | {a.what} | {a.written_by} | {a.read_by} |" for a in ARTIFACTS.values()]
    return "\n".join(rows)


def record_metrics(run_dir: str | Path, **metrics: float) -> dict:
    """Merge numeric metrics into run_dir/metrics.json (atomically) and return everything recorded so far."""
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            raise ValueError(f"metric {name!r} must be a finite number, got {value!r}")
    merged = read_metrics(run_dir)
    merged.update({k: float(v) if isinstance(v, float) else v for k, v in metrics.items()})
    atomic_write_json(RunDir(run_dir).metrics, merged)
    return merged


def read_metrics(run_dir: str | Path) -> dict:
    path = RunDir(run_dir).metrics
    if not path.exists():
        return {}
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of metric name -> number")
    return data

