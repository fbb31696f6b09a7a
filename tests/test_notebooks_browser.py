"""Notebook 01 as a student meets it: JupyterLab served on 127.0.0.1 (as `make lab` does), the notebook opened in
headless Chromium, every cell run through the UI (Run > Run All Cells), saved through the UI, and no cell with an
error, on screen or in the saved file. Skipped, with a message, where Chromium or chromedriver is missing."""

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from llavamed_lite.config import QUICK_ENV
from llavamed_lite.paths import REPO_ROOT
from test_serve_browser import browser, free_port  # noqa: F401 (browser: the shared headless Chromium fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = "01_architecture.ipynb"
SCREENSHOT = REPO_ROOT / "build" / "artifacts" / "notebook01.png"
START_S = 120  # JupyterLab answering, the notebook on screen
RUN_S = 300  # kernel start and every cell (about 5 s of cells on 2 free cores; the kernel imports torch first)
# Settings a student would not change, set so the test sees every cell and no pop-up covers the page.
LAB_SETTINGS = {
    "notebook-extension/tracker": {"windowingMode": "none"},  # every cell in the page, not only those in view
    "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},  # no news toast, no network
}


def _api(base: str, token: str, path: str, method: str = "GET"):
    request = urllib.request.Request(f"{base}{path}", method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else None


def _kernel_states(base: str, token: str) -> list[str]:
    """Execution states of the server's kernels; none while it cannot list them (it answers 500 while a kernel is
    still starting)."""
    try:
        return [k["execution_state"] for k in _api(base, token, "/api/kernels")]
    except urllib.error.HTTPError:
        return []


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """(base URL, token, notebook folder): JupyterLab on a copy of notebook 01 with its outputs cleared, in its own
    Jupyter dirs, with the environment `make test` gives the notebooks."""
    tmp = tmp_path_factory.mktemp("lab")
    work = tmp / "notebooks"
    work.mkdir()
    nb = json.loads((REPO_ROOT / "notebooks" / NOTEBOOK).read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    (work / NOTEBOOK).write_text(json.dumps(nb, indent=1))
    for name, values in LAB_SETTINGS.items():
        path = tmp / "settings" / "@jupyterlab" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))

    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # the kernel's inline backend draws the figures
    env.update({QUICK_ENV: "1"}, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), JUPYTER_CONFIG_DIR=str(tmp / "config"),
               JUPYTER_DATA_DIR=str(tmp / "data"), JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"), IPYTHONDIR=str(tmp / "ipython"))
    port, token = free_port(), secrets.token_hex(16)
    base = f"http://127.0.0.1:{port}"
    log = open(tmp / "lab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={work}", "--MappingKernelManager.default_kernel_name=python3"],
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_S
        while True:
            try:
                _api(base, token, "/api/status")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start; its log:\n{(tmp / 'lab.log').read_text()[-3000:]}")
                time.sleep(1)
        yield base, token, work
    finally:
        try:
            _api(base, token, "/api/shutdown", "POST")  # shuts its kernels down too
            server.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            server.kill()
            server.wait()
        log.close()


def _click_menu(driver, menu: str, command: str):
    """Open a menu of the menu bar by its label and click the item that runs `command`."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(By.XPATH, f"//li[contains(@class, 'lm-MenuBar-item')][normalize-space()='{menu}']").click()
    item = (By.CSS_SELECTOR, f".lm-Menu .lm-Menu-item[data-command='{command}']")
    WebDriverWait(driver, 10).until(ec.element_to_be_clickable(item)).click()


def _prompts(driver) -> list[str]:
    """Each code cell's prompt, '[3]:' once run, '[*]:' while queued or running, '[ ]:' never run."""
    return driver.execute_script(
        "return [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')].map(e => e.textContent)")


def _shown_errors(driver) -> list[str]:
    """Texts of the error and stderr outputs on screen that carry a traceback."""
    texts = driver.execute_script(
        "return [...document.querySelectorAll('.jp-Notebook .jp-OutputArea-output')]"
        ".filter(e => e.matches('[data-mime-type*=\"error\"], [data-mime-type*=\"stderr\"]'))"
        ".map(e => e.textContent)")
    return [t for t in texts if "Traceback" in t or "Error" in t]


def _saved(work) -> dict:
    return json.loads((work / NOTEBOOK).read_text())


def test_notebook_01_runs_through_the_jupyterlab_ui(browser, lab):  # noqa: F811 (the imported fixture)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    base, token, work = lab
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    browser.get(f"{base}/lab/tree/{NOTEBOOK}?token={token}")
    try:
        WebDriverWait(browser, START_S).until(
            ec.presence_of_element_located((By.CSS_SELECTOR, ".jp-Notebook .jp-CodeCell .jp-InputPrompt")),
            message="the notebook never appeared in JupyterLab")
        n_code = sum(c["cell_type"] == "code" for c in _saved(work)["cells"])
        WebDriverWait(browser, START_S).until(lambda d: len(_prompts(d)) == n_code, message="not every cell shown")
        WebDriverWait(browser, START_S).until(  # the kernel asked over the REST API, as a student waits for "Idle"
            lambda d: "idle" in _kernel_states(base, token),
            message="the notebook's kernel never became ready")

        _click_menu(browser, "Run", "runmenu:run-all")  # "Run All Cells"
        WebDriverWait(browser, 10).until(lambda d: any("*" in p for p in _prompts(d)),
                                         message="Run All Cells queued nothing")
        # Done when no cell waits or runs any more and the kernel is idle; an error stops Run All early.
        WebDriverWait(browser, RUN_S).until(
            lambda d: not any("*" in p for p in _prompts(d))
            and set(_kernel_states(base, token)) == {"idle"},
            message=f"the cells did not finish within {RUN_S} s")
    finally:
        images = browser.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-RenderedImage img")
        if images:  # the screenshot shows a figure the run drew, not only the title
            browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", images[0])
        browser.save_screenshot(str(SCREENSHOT))
        print(f"screenshot: {SCREENSHOT}")
    prompts, errors = _prompts(browser), _shown_errors(browser)

    assert not errors, "a cell shows an error:\n" + "\n\n".join(errors)
    assert all(p.strip().strip("[]:").isdigit() for p in prompts), f"cells left unrun: {prompts}"
    assert images, "no figure was drawn"

    _click_menu(browser, "File", "docmanager:save")
    WebDriverWait(browser, 60).until(
        lambda d: all(c["execution_count"] for c in _saved(work)["cells"] if c["cell_type"] == "code"),
        message="the notebook saved through the UI has unrun cells")
    saved = _saved(work)["cells"]
    committed = json.loads((REPO_ROOT / "notebooks" / NOTEBOOK).read_text())["cells"]
    outputs = [o for c in saved if c["cell_type"] == "code" for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"], "the saved notebook holds an error output"
    for cell, before in zip(saved, committed):  # every cell that printed or drew in the committed run did so here
        if before["cell_type"] == "code" and before["outputs"]:
            assert cell["outputs"], f"no output from cell:\n{''.join(cell['source'])[:200]}"
    assert SCREENSHOT.stat().st_size > 10_000
