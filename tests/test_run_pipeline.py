"""The main job: notebooks executed in order with papermill, timed, their metrics collected, failures reported."""

import json
from pathlib import Path

import nbformat
import pytest

from llavamed_lite.run import (NotebookFailed, about, absolute_paths, committed_seconds, format_summary,
                               pipeline_notebooks, run_pipeline, settle, tidy_streams)


def _notebook(path: Path, *sources: str, seconds: float | None = None) -> None:
    cells = [nbformat.v4.new_code_cell('scale = "tiny"\nrun_dir = "runs/tiny"\nseed = 0')]
    cells[0].metadata["tags"] = ["parameters"]
    cells += [nbformat.v4.new_code_cell(s) for s in sources]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if seconds is not None:  # as papermill records a run
        nb.metadata["papermill"] = {"duration": seconds}
    nbformat.write(nb, path)


@pytest.mark.slow
def test_runs_in_order_collects_metrics_and_writes_summary(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    record = "from llavamed_lite.runs import record_metrics\n"
    _notebook(nbs / "01_second.ipynb", record + "record_metrics(run_dir, second=2.5)")
    _notebook(nbs / "00_first.ipynb", record + "record_metrics(run_dir, first=1)\nassert scale == 'lora'")
    (nbs / "README.ipynb").write_text("{}")  # not numbered: not part of the pipeline
    summary = run_pipeline("lora", tmp_path / "run", notebooks_dir=nbs, progress=False)
    assert [nb["name"] for nb in summary["notebooks"]] == ["00_first", "01_second"]
    assert all(nb["ok"] and nb["seconds"] > 0 for nb in summary["notebooks"])
    assert summary["metrics"] == {"first": 1, "second": 2.5}
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk == summary and on_disk["scale"] == "lora"
    assert (tmp_path / "run" / "notebooks" / "00_first.ipynb").exists()
    assert "second" in format_summary(summary)


@pytest.mark.slow
def test_failure_names_notebook_cell_and_error_and_stops(tmp_path, capsys):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _notebook(nbs / "00_ok.ipynb", "x = 1", seconds=40.2)
    _notebook(nbs / "01_bad.ipynb", "y = 2", "raise ValueError('the tiny world is missing')", seconds=1095.7)
    _notebook(nbs / "02_never.ipynb", "z = 3", seconds=20.0)
    with pytest.raises(NotebookFailed, match=r"01_bad.ipynb failed in cell \[4\] `raise ValueError.*`: ValueError: the tiny world is missing"):
        run_pipeline("tiny", tmp_path / "run", notebooks_dir=nbs, progress=False)
    # what each notebook took in the run they record, before it runs: the reader knows what to expect
    printed = capsys.readouterr().out.splitlines()
    assert printed == ["The run recorded in these notebooks took about 19 min; yours depends on your CPU.",
                       "[1/3] 00_ok.ipynb (about 40 s in the recorded run)",
                       "[2/3] 01_bad.ipynb (about 18 min in the recorded run)"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert [(nb["name"], nb["ok"]) for nb in summary["notebooks"]] == [("00_ok", True), ("01_bad", False)]


def test_cli_exit_code_on_failure(tmp_path, monkeypatch):
    from llavamed_lite import cli, run

    def fail(*args, **kwargs):
        raise NotebookFailed("03_x.ipynb failed in cell 2: KeyError: 'k'")

    monkeypatch.setattr(run, "run_pipeline", fail)
    assert cli.main(["run", "--run-dir", str(tmp_path)]) == 1


def test_no_notebooks_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no notebooks to run"):
        pipeline_notebooks(tmp_path)


def test_progress_bars_are_kept_as_they_ended(tmp_path):
    """An executed notebook keeps one output per stream and each bar's last state, not one output per refresh."""
    assert settle("\rbar 0%\rbar 50%\rbar 100%\nnext line\n") == "bar 100%\nnext line\n"
    assert settle("done\r\n") == "done\n"
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text="\rwork: 1/3"),
                    nbformat.v4.new_output("stream", name="stderr", text="\rwork: 3/3\n"),
                    nbformat.v4.new_output("stream", name="stdout", text="result 7\n"),
                    nbformat.v4.new_output("execute_result", data={"text/plain": "7"}, execution_count=1)]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), path)
    tidy_streams(path)
    outputs = nbformat.read(path, as_version=4).cells[0].outputs
    assert [(o.output_type, o.get("text")) for o in outputs] == [
        ("stream", "work: 3/3\n"), ("stream", "result 7\n"), ("execute_result", None)]


def test_settings_with_relative_paths_reach_the_notebooks_absolute(tmp_path, monkeypatch):
    (tmp_path / "mini" / "lm").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert absolute_paths("model.lm=mini/lm") == f"model.lm={tmp_path.resolve() / 'mini' / 'lm'}"
    assert absolute_paths("stage2.lr=1e-4") == "stage2.lr=1e-4"  # not a path here
    assert absolute_paths("model.lm=/abs/lm") == "model.lm=/abs/lm"



def test_the_expected_time_comes_from_papermills_record_or_is_left_out(tmp_path):
    path = tmp_path / "00_x.ipynb"
    _notebook(path, "x = 1", seconds=75.5)
    assert committed_seconds(path) == 75.5
    for text in ("", "{not json", "[]", '{"metadata": {}}', '{"metadata": {"papermill": {"duration": null}}}',
                 '{"metadata": {"papermill": {"duration": "long"}}}', '{"metadata": {"papermill": {"duration": -3}}}'):
        path.write_text(text)
        assert committed_seconds(path) is None, text
    path.write_bytes(b"\xff\xfe")
    assert committed_seconds(path) is None
    assert committed_seconds(tmp_path / "missing.ipynb") is None
    assert [about(s) for s in (12.4, 89, 90, 1874)] == ["about 12 s", "about 89 s", "about 2 min", "about 31 min"]
    # the committed notebooks all carry their time, so `make demo` announces each one
    assert all(committed_seconds(p) for p in pipeline_notebooks())
