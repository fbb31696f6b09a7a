"""The committed notebooks read cleanly: no warnings or tracebacks in their outputs, nothing that points outside the
repository, and every notebook frames itself with "What you should see" and "Exercises"."""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
OUTSIDE = re.compile(r"\.\./shared|design\.md|reference\.md|tiny-mode-notes\.md")
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
def test_nothing_points_outside_the_repository(path):
    found = [f"cell {i} (source): {m.group(0)}" for i, cell in enumerate(cells(path))
             for m in OUTSIDE.finditer("".join(cell["source"]))]
    found += [f"cell {i} ({kind}): {m.group(0)}" for i, cell in enumerate(cells(path))
              for kind, text in output_texts(cell) for m in OUTSIDE.finditer(text)]
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
