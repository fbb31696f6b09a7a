"""The committed notebooks read cleanly: no warnings or tracebacks in their outputs, nothing that points outside the
repository, and every notebook frames itself with "What you should see" and "Exercises"."""

import json
import re
import subprocess
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
REPO = Path(__file__).resolve().parents[1]
RELATIVE = re.compile(r"\.\./([\w.-]+)")  # notebooks run in notebooks/: ../X is the repository's X
MARKDOWN_FILE = re.compile(r"\b[\w-]+\.md\b")
NOISE = re.compile(r"Warning|Traceback|Error\b|Failed to load|warn\(")
# 05 and 06 are being rewritten with their own framing; drop this once they carry both headings
FRAMING_PENDING: set[str] = set()


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def output_texts(cell: dict):
    """(kind, text) of every output of a code cell: stream name, 'error', or the mime type of rich data."""
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            yield out["name"], "".join(out["text"])
        elif out["output_type"] == "error":
            yield "error", "\n".join([out["ename"], out["evalue"], *out.get("traceback", [])])
        else:
            for mime, data in out.get("data", {}).items():
                if mime.startswith("text/"):
                    yield mime, "".join(data) if isinstance(data, list) else data


def test_all_eight_notebooks_are_checked():
    assert [p.name[:2] for p in NOTEBOOKS] == ["00", "01", "02", "03", "04", "05", "06", "07"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_warnings_or_tracebacks_in_outputs(path):
    found = [f"cell {i} ({kind}): {line.strip()[:160]}" for i, cell in enumerate(cells(path))
             for kind, text in output_texts(cell) if kind in ("stderr", "error")
             for line in text.splitlines() if NOISE.search(line)]
    found += [f"cell {i}: an error output" for i, cell in enumerate(cells(path))
              if any(out["output_type"] == "error" for out in cell.get("outputs", []))]
    assert not found, f"{path.name}: warnings or tracebacks in the outputs:\n" + "\n".join(found)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_trainer_tables_and_one_line_per_progress_bar(path):
    """Training shows one text progress bar (train/stages.StepProgress), not the Trainer's HTML table of logged
    losses; a bar's settled line is kept, not every redraw."""
    tables = [i for i, cell in enumerate(cells(path)) for kind, text in output_texts(cell)
              if kind == "text/html" and "<progress" in text or kind == "text/html" and "Training Loss" in text]
    assert not tables, f"{path.name}: Trainer HTML tables in cells {tables}"
    redraws = [i for i, cell in enumerate(cells(path)) for kind, text in output_texts(cell)
               if kind == "stderr" and text.count("\r") > 200]
    assert not redraws, f"{path.name}: progress-bar fragments piled up in cells {redraws}"


def outside(text: str, markdown_files: set[str]) -> list[str]:
    """What a reader of a clone cannot follow: ../X where the repository has no X, or a Markdown file it lacks."""
    bad = [m.group(0) for m in RELATIVE.finditer(text) if not (REPO / m.group(1)).exists()]
    return bad + [m.group(0) for m in MARKDOWN_FILE.finditer(text) if m.group(0) not in markdown_files]


@pytest.fixture(scope="module")
def markdown_files() -> set[str]:
    listed = subprocess.run(["git", "ls-files", "*.md"], cwd=REPO, capture_output=True, text=True).stdout
    return {Path(line).name for line in listed.split()}


def test_outside_finds_paths_a_clone_lacks():
    assert outside("see ../README.md and ../docs", {"README.md"}) == []
    assert outside("see ../nowhere/notes.md and plan.md", {"README.md"}) == ["../nowhere", "notes.md", "plan.md"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_nothing_points_outside_the_repository(path, markdown_files):
    found = [f"cell {i} (source): {hit}" for i, cell in enumerate(cells(path))
             for hit in outside("".join(cell["source"]), markdown_files)]
    found += [f"cell {i} ({kind}): {hit}" for i, cell in enumerate(cells(path))
              for kind, text in output_texts(cell) for hit in outside(text, markdown_files)]
    assert not found, f"{path.name} points outside the repository:\n" + "\n".join(found)


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.xfail(reason="framing pending"))
                                  if p.name in FRAMING_PENDING else p for p in NOTEBOOKS],
                         ids=lambda p: p.stem)
def test_every_notebook_says_what_you_should_see_and_has_exercises(path):
    headings = [line.lstrip("#").strip().lower() for cell in cells(path) if cell["cell_type"] == "markdown"
                for line in "".join(cell["source"]).splitlines() if line.startswith("#")]
    assert any(h.startswith("what you should see") for h in headings), f"{path.name}: no 'What you should see' heading"
    assert any(h.startswith("exercises") for h in headings), f"{path.name}: no 'Exercises' heading"
    exercises = next(i for i, c in enumerate(cells(path)) if c["cell_type"] == "markdown"
                     and re.search(r"^#+ Exercises", "".join(c["source"]), re.M))
    numbered = re.findall(r"^\d\. ", "".join(cells(path)[exercises]["source"]), re.M)
    assert 2 <= len(numbered) <= 4, f"{path.name}: {len(numbered)} exercises (2-3 expected)"
