"""The main job: execute every notebook of the pipeline in order with papermill, then summarise.

`llavamed-lite run --scale tiny --run-dir runs/demo` writes the executed notebooks to
runs/demo/notebooks/, times each one, collects the metrics the notebooks recorded
(llavamed_lite.runs.record_metrics) and writes runs/demo/summary.json: {"scale", "notebooks":
[{"name", "seconds", "ok"}], "metrics": {name: number}}. A failing notebook stops the run with its
name, the failing cell and the error, and a non-zero exit.

`--set key=value` (any config field, repeatable) reaches every notebook as its `settings` parameter;
`--quick` runs the smoke-test sizes of llavamed_lite.config.apply_quick at any scale.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .cli import count
from .config import QUICK_ENV, SCALES, load_config
from .io import atomic_write_json, atomic_write_text, read_json
from .paths import REPO_ROOT
from .runs import RunDir, read_metrics

NOTEBOOKS = REPO_ROOT / "notebooks"


class NotebookFailed(RuntimeError):
    pass


def pipeline_notebooks(folder: str | Path = NOTEBOOKS, only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks (00_..., 01_...) in order; `only` keeps those whose name starts with
    one of the given prefixes (e.g. ["00", "04"])."""
    found = sorted(p for p in Path(folder).glob("[0-9][0-9]_*.ipynb"))
    if only:
        found = [p for p in found if any(p.name.startswith(o) for o in only)]
    if not found:
        raise FileNotFoundError(f"no notebooks to run in {folder}"
                                + (f" matching {only}" if only else ""))
    return found


def committed_seconds(path: Path) -> float | None:
    """How long this notebook took in the run whose outputs are committed (papermill's record in its metadata), so
    that a reader of `make demo` knows what to expect; None for a notebook never executed or unreadable (papermill
    says what is wrong with it when it runs)."""
    try:
        seconds = json.loads(Path(path).read_text(encoding="utf-8"))["metadata"]["papermill"]["duration"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(seconds) if isinstance(seconds, (int, float)) and seconds > 0 else None


def about(seconds: float) -> str:
    return f"about {seconds:.0f} s" if seconds < 90 else f"about {seconds / 60:.0f} min"


def execute_notebook(path: Path, output: Path, parameters: dict, cwd: Path,
                     progress: bool = True) -> float:
    """Run one notebook with papermill; return its wall time. Raises NotebookFailed
    naming the cell and the error."""
    # a second or more to import (nbclient, jupyter): not at `--help` or on a usage error
    import papermill
    from papermill.exceptions import PapermillExecutionError

    start = time.perf_counter()
    try:
        papermill.execute_notebook(str(path), str(output), parameters=parameters, cwd=str(cwd),
                                   kernel_name="python3", progress_bar=progress, log_output=False)
    except PapermillExecutionError as e:
        first_line = next((line for line in (e.source or "").splitlines() if line.strip()), "")
        raise NotebookFailed(f"{path.name} failed in cell [{e.exec_count}] `{first_line[:80]}`: "
                             f"{e.ename}: {e.evalue}\n"
                             f"executed notebook with the traceback: {output}") from None
    return time.perf_counter() - start


def absolute_paths(setting: str) -> str:
    """A "key=value" setting whose value is a relative path that exists here, made absolute: the
    notebooks run in notebooks/, where `--set model.lm=build/mini/lm` would point elsewhere."""
    key, sep, value = setting.partition("=")
    if sep and value and not Path(value).is_absolute() and Path(value).exists():
        return f"{key}={Path(value).resolve()}"
    return setting


def settle(text: str) -> str:
    """What a terminal shows of text with carriage returns: each line keeps what was
    written after its last one."""
    return "\n".join(next((s for s in reversed(line.split("\r")) if s), "")
                     for line in text.split("\n"))


def tidy_streams(path: Path) -> None:
    """Merge each cell's consecutive stream outputs of one kind and settle their progress bars, so
    an executed notebook shows each bar once, as it ended, instead of one output per refresh."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        merged = []
        for out in cell.get("outputs", []):
            if (out.get("output_type") == "stream" and merged
                    and merged[-1].get("output_type") == "stream"
                    and merged[-1]["name"] == out["name"]):
                merged[-1]["text"] = "".join(merged[-1]["text"]) + "".join(out["text"])
            else:
                merged.append(out)
        for out in merged:
            if out.get("output_type") == "stream":
                out["text"] = settle("".join(out["text"])).splitlines(keepends=True)
        if "outputs" in cell:
            cell["outputs"] = merged
    atomic_write_text(path, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def run_pipeline(scale: str = "tiny", run_dir: str | Path = "runs/demo",
                 only: list[str] | None = None, in_place: bool = False, seed: int | None = None,
                 notebooks_dir: str | Path = NOTEBOOKS, progress: bool = True,
                 settings: list[str] | None = None, quick: bool = False) -> dict:
    """Execute the notebooks in order and return the summary (also written to run_dir/summary.json).

    in_place re-executes the committed notebooks with their own default parameters (the tiny
    run), so the outputs readers see on GitHub are those of the tiny run. `settings` ("key=value"
    config overrides) are checked here, then handed to every notebook; `quick` sets quick mode
    for the notebooks' kernels."""
    settings = [absolute_paths(s) for s in settings or []]
    load_config(scale, settings)  # a bad key or value fails here, before any notebook runs
    if quick:
        os.environ[QUICK_ENV] = "1"  # the kernels papermill starts inherit it
    run = RunDir(Path(run_dir).resolve())
    notebooks = pipeline_notebooks(notebooks_dir, only)
    out_dir = run.notebooks
    parameters = ({} if in_place
                  else {"scale": scale, "run_dir": str(run.root), "settings": settings})
    if seed is not None and not in_place:
        parameters["seed"] = seed
    summary = {"scale": scale, "notebooks": [], "metrics": {}}
    # the committed notebooks hold the tiny recipe's run: their times say what to expect of the same run
    expected = ({path: committed_seconds(path) for path in notebooks}
                if scale == "tiny" and not quick and not settings else {})
    if len(expected) > 1 and None not in expected.values():
        print(f"The run recorded in these notebooks took {about(sum(expected.values()))}; yours depends on your CPU.",
              flush=True)
    for i, path in enumerate(notebooks, 1):
        took = expected.get(path)
        print(f"[{i}/{len(notebooks)}] {path.name}" + (f" ({about(took)} in the recorded run)" if took else ""),
              flush=True)
        output = path if in_place else out_dir / path.name
        entry = {"name": path.stem, "seconds": 0.0, "ok": False}
        summary["notebooks"].append(entry)
        start = time.perf_counter()
        try:
            seconds = execute_notebook(path, output, parameters, path.parent, progress)
            entry["seconds"] = round(seconds, 2)
            tidy_streams(output)
            entry["ok"] = True
        except NotebookFailed:
            entry["seconds"] = round(time.perf_counter() - start, 2)
            raise
        finally:
            metrics_dir = path.parent / "runs" / "tiny" if in_place else run.root
            summary["metrics"] = read_metrics(metrics_dir)
            atomic_write_json(run.summary, summary)
    return summary


def format_summary(summary: dict) -> str:
    lines = [f"pipeline at scale {summary['scale']!r}", f"{'notebook':<36}{'seconds':>10}  ok"]
    for nb in summary["notebooks"]:
        lines.append(f"{nb['name']:<36}{nb['seconds']:>10.1f}  {'yes' if nb['ok'] else 'FAILED'}")
    lines.append(f"{'total':<36}{sum(nb['seconds'] for nb in summary['notebooks']):>10.1f}")
    if summary["metrics"]:
        lines.append("")
        lines.append(f"{'metric':<44}{'value':>12}")
        for name, value in sorted(summary["metrics"].items()):
            lines.append(f"{name:<44}{value:>12.4g}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", default="tiny", choices=SCALES)
    parser.add_argument("--run-dir", default="runs/demo",
                        help="where artifacts, executed notebooks and summary.json go")
    parser.add_argument("--seed", type=count(0), default=None)
    parser.add_argument("--only", nargs="*", default=None,
                        help="notebook name prefixes to run, e.g. 00 04")
    parser.add_argument("--in-place", action="store_true",
                        help="re-execute the committed notebooks in place with their defaults "
                             "(make notebooks)")
    parser.add_argument("--no-progress", action="store_true", help="no per-cell progress bars")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field in every notebook, e.g. --set model.lm=DIR "
                             "(repeatable)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke-test sizes at any scale: few steps; at lora/full small batches "
                             "and offline inputs")


def main(args: argparse.Namespace) -> int:
    summary = None
    try:
        summary = run_pipeline(args.scale, args.run_dir, args.only, args.in_place, args.seed,
                               progress=not args.no_progress, settings=args.settings,
                               quick=args.quick)
    except NotebookFailed as e:
        print(f"\nFAILED: {e}", file=sys.stderr)
        return 1
    except (KeyError, ValueError) as e:  # a bad --set: nothing has run
        print(f"llavamed-lite run: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    finally:
        path = RunDir(args.run_dir).summary
        if path.exists():
            summary = summary or read_json(path)
            print("\n" + format_summary(summary))
            print(f"\nsummary: {path}")
    return 0
