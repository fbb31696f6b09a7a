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


def test_quick_mode_cuts_the_training_steps_at_every_scale(monkeypatch):
    """Quick mode (`make test`, `run --quick`): every stage capped; at the GPU presets also batches of 2 and inputs
    that need no network; the models and rates stay the preset's."""
    from llavamed_lite.config import QUICK_ENV, QUICK_STEPS

    monkeypatch.delenv(QUICK_ENV, raising=False)
    tiny, full, lora = load_config("tiny"), load_config("full"), load_config("lora")
    assert tiny.stage2.max_steps > QUICK_STEPS["tiny"] and tiny.vqa.max_steps == -1 and tiny.vqa.epochs > 1
    assert full.stage2.max_steps == -1 and full.data.source == "llava-med"  # GPU presets: the paper's epochs
    monkeypatch.setenv(QUICK_ENV, "1")
    quick = load_config("tiny")
    cap = QUICK_STEPS["tiny"]
    assert [s.max_steps for s in (quick.stage1, quick.stage2, quick.vqa)] == [min(tiny.stage1.max_steps, cap), cap, cap]
    assert (quick.stage2.lr, quick.vqa.lr, quick.model) == (tiny.stage2.lr, tiny.vqa.lr, tiny.model)
    assert quick.data.n_train_figures < tiny.data.n_train_figures and quick.data.source == tiny.data.source
    assert quick.stage2.batch_size == tiny.stage2.batch_size
    assert load_config("tiny", {"stage2.max_steps": 5}).stage2.max_steps == 5  # explicit overrides still win
    for scale in ("lora", "full"):
        q = load_config(scale)
        assert [s.max_steps for s in (q.stage1, q.stage2, q.vqa)] == [QUICK_STEPS[scale]] * 3
        assert (q.stage2.batch_size, q.stage2.grad_accum, q.data.source) == (2, 1, "curated")
        preset = {"lora": lora, "full": full}[scale]
        assert (q.model, q.stage2.lr, q.stage2.lora) == (preset.model, preset.stage2.lr, preset.stage2.lora)
        assert load_config(scale, {"data.source": "llava-med"}).data.source == "llava-med"
    monkeypatch.setenv(QUICK_ENV, "0")
    assert load_config("tiny").stage2.max_steps == tiny.stage2.max_steps


def test_make_test_runs_the_notebooks_in_quick_mode_from_a_copy():
    makefile = (REPO_ROOT / "Makefile").read_text()

    def recipe(target: str) -> str:
        return makefile.split(f"\n{target}:")[1].split("\n\n")[0]

    assert "test-unit" in recipe("test") and "test-notebooks test-scales" in recipe("test")
    notebooks = recipe("test-notebooks")
    assert "LLAVAMED_LITE_QUICK=1" in notebooks
    assert "cp notebooks/*.ipynb $(QUICK_NOTEBOOKS)/" in notebooks  # the quick runs never land in notebooks/runs
    assert "pytest $(QUICK_NOTEBOOKS) --nbval-lax" in notebooks
    assert "QUICK" not in recipe("demo")
    # the notebooks' kernels are warm forks in make test only (llavamed_lite/warm_kernel.py)
    assert "WARM := $(BIN)/python -m llavamed_lite.warm_kernel run --" in makefile
    for target in ("test-notebooks", "test-scales"):
        assert "$(WARM) $(BIN)/" in recipe(target)
    for target in ("demo", "notebooks", "lab"):
        assert "WARM" not in recipe(target)
