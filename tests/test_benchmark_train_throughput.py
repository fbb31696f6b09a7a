"""benchmarks/train_throughput.py at the miniature shape on the CPU: the four cases (stock and ours, stage 2 and
QLoRA) run in one call on the same checkpoint and batch, and ours carry their ratio to stock."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "train_throughput.py"
CASES = ["stock stage 2", "ours stage 2", "stock QLoRA", "ours QLoRA"]


def benchmark():
    if str(SCRIPT.parent) not in sys.path:  # as when run as a script: it imports its neighbour machine.py
        sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("train_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mini_shape_times_stock_and_ours_side_by_side(tmp_path):
    pytest.importorskip("bitsandbytes")
    out = tmp_path / "train_throughput.json"
    result = benchmark().main(["--shape", "mini", "--device", "cpu", "--steps", "1", "--warmup", "1",
                               "--out", str(out)])
    rows = {row["case"]: row for row in result["cases"]}
    assert list(rows) == CASES
    for row in rows.values():
        assert "error" not in row and "skipped" not in row, row
        assert row["samples_per_s"] > 0 and row["tokens_per_s"] == pytest.approx(row["samples_per_s"] * 640)
    for kind in ("stage 2", "QLoRA"):
        stock, ours = rows[f"stock {kind}"], rows[f"ours {kind}"]
        assert ours["vs_stock"] == pytest.approx(ours["samples_per_s"] / stock["samples_per_s"])
        # the same comparison: what trains is the same size, and the first step sees the same weights and batch
        assert ours["trainable_parameters"] == stock["trainable_parameters"]
        assert math.isclose(ours["losses"][0], stock["losses"][0], abs_tol=1e-2)
    assert rows["stock QLoRA"]["trainable_parameters"] < rows["stock stage 2"]["trainable_parameters"]
    assert "fp32 master weights" in rows["ours stage 2"]["setup"]
    saved = json.loads(out.read_text())["mini-cpu"]
    assert [row["case"] for row in saved["cases"]] == CASES
    table = out.with_suffix(".md").read_text()
    assert all(f"| {case} |" in table for case in CASES)
    assert f"| {rows['ours QLoRA']['vs_stock']:.2f} |" in table


def test_qlora_cases_are_skipped_with_the_reason_without_bitsandbytes(tmp_path, monkeypatch):
    module = benchmark()
    monkeypatch.setattr(module, "bitsandbytes_missing", lambda: "bitsandbytes is not importable: test")
    monkeypatch.setattr(module, "COMPARISON", [c for c in module.COMPARISON if c[1] == "QLoRA"])
    result = module.main(["--shape", "mini", "--device", "cpu", "--out", str(tmp_path / "t.json")])
    assert [(r["case"], r["skipped"]) for r in result["cases"]] == [
        ("stock QLoRA", "bitsandbytes is not importable: test"), ("ours QLoRA", "bitsandbytes is not importable: test")]
    assert "bitsandbytes is not importable: test" in (tmp_path / "t.md").read_text()


@pytest.mark.parametrize("argv, message", [(["--shape", "v1.5"], "needs --device cuda"),
                                           (["--shape", "mini", "--steps", "0"], "at least 1")])
def test_bad_options_exit_2_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        benchmark().main(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err
