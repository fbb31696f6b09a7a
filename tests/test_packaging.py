"""The two ways to install (pip with pyproject.toml, conda with environment.yml) list the same dependencies."""

import tomllib

import yaml

from llavamed_lite.config import load_config
from llavamed_lite.paths import REPO_ROOT


def _pip_section(env: dict) -> list[str]:
    return next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    assert set(_pip_section(env)) == wanted


def test_torch_pinned_and_no_torchvision():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + project["optional-dependencies"]["dev"]
    assert "torch==2.13.0" in deps
    assert not any(d.startswith("torchvision") for d in deps)
    assert "torch==2.13.0" in (REPO_ROOT / "Makefile").read_text()


def test_console_script_and_ci_call_make_test():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["llavamed-lite"] == "llavamed_lite.cli:main"
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()


def test_config_overrides_from_cli_strings_and_papermill_values():
    cfg = load_config("tiny", ["stage2.lr=1e-4", "seed=3", "model.projector=linear", "stage1.bf16=true"])
    assert (cfg.stage2.lr, cfg.seed, cfg.model.projector, cfg.stage1.bf16) == (1e-4, 3, "linear", True)
    cfg = load_config("tiny", {"stage1.max_steps": 5, "data.max_articles": None})
    assert cfg.stage1.max_steps == 5 and cfg.data.max_articles is None


def test_config_errors_name_the_problem():
    import pytest

    with pytest.raises(KeyError, match="unknown config key 'stage9.lr'"):
        load_config("tiny", ["stage9.lr=1"])
    with pytest.raises(ValueError, match="cannot read 'fast' as float"):
        load_config("tiny", ["stage1.lr=fast"])
    with pytest.raises(ValueError, match="not of the form key=value"):
        load_config("tiny", ["stage1.lr"])


def test_presets_follow_the_paper():
    full = load_config("full")
    assert (full.stage1.lr, full.stage2.lr, full.stage2.epochs) == (2e-3, 2e-5, 3)
    assert full.stage2.warmup_ratio == 0.03 and full.stage2.lr_scheduler == "cosine" and full.stage2.bf16
    lora = load_config("lora")
    assert lora.model.load_in_4bit and lora.stage2.lora and not full.stage2.lora


def test_quick_mode_cuts_only_the_tiny_training_steps(monkeypatch):
    """`make test` runs the notebooks with LLAVAMED_LITE_QUICK=1: every tiny stage capped, nothing else changed."""
    from llavamed_lite.config import QUICK_ENV, QUICK_STEPS

    monkeypatch.delenv(QUICK_ENV, raising=False)
    tiny = load_config("tiny")
    assert tiny.stage2.max_steps > QUICK_STEPS and tiny.vqa.max_steps == -1 and tiny.vqa.epochs > 1
    monkeypatch.setenv(QUICK_ENV, "1")
    quick = load_config("tiny")
    assert [s.max_steps for s in (quick.stage1, quick.stage2, quick.vqa)] == [
        min(tiny.stage1.max_steps, QUICK_STEPS), QUICK_STEPS, QUICK_STEPS]
    assert (quick.stage2.lr, quick.vqa.lr, quick.model) == (tiny.stage2.lr, tiny.vqa.lr, tiny.model)
    assert load_config("tiny", {"stage2.max_steps": 5}).stage2.max_steps == 5  # explicit overrides still win
    assert load_config("full").stage2.max_steps == -1  # GPU presets are never cut
    monkeypatch.setenv(QUICK_ENV, "0")
    assert load_config("tiny").stage2.max_steps == tiny.stage2.max_steps


def test_make_test_runs_the_notebooks_in_quick_mode_from_a_copy():
    makefile = (REPO_ROOT / "Makefile").read_text()

    def recipe(target: str) -> str:
        return makefile.split(f"\n{target}:")[1].split("\n\n")[0]

    assert "$(MAKE) test-notebooks" in recipe("test")
    notebooks = recipe("test-notebooks")
    assert "LLAVAMED_LITE_QUICK=1" in notebooks
    assert "cp notebooks/*.ipynb $(QUICK_NOTEBOOKS)/" in notebooks  # the quick runs never land in notebooks/runs
    assert "pytest $(QUICK_NOTEBOOKS) --nbval-lax" in notebooks
    assert "QUICK" not in recipe("demo")
