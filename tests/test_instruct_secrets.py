"""The API key never leaves the environment: not in outputs, caches, logs, the console, or the saved notebook."""

import json
import os
import re
import secrets
import subprocess
import sys

import pytest

from llavamed_lite.data.formats import DOMAINS
from llavamed_lite.teaching_servers import LocalChatServer, Reply
from llavamed_lite.paths import REPO_ROOT

NOTEBOOK = REPO_ROOT / "notebooks" / "03_instruction_synthesis.ipynb"
KEY_PATTERN = re.compile(r"sk-[A-Za-z0-9_-]{16,}")


@pytest.mark.slow
def test_api_key_appears_in_no_file_log_or_console(tmp_path):
    key = "sk-test-" + secrets.token_hex(20)
    captions = tmp_path / "captions.json"
    records = [{"pair_id": f"p{i}", "pmid": "1", "fig_id": "F1", "fig_label": "Fig. 1",
                "fig_caption": f"Chest radiograph {i} with a nodule.", "in_text_mention": [],
                "domain": {d: d == "chest_xray" for d in DOMAINS}} for i in range(4)]
    captions.write_text(json.dumps(records))
    env = {**os.environ, "OPENAI_API_KEY": key, "PYTHONPATH": str(REPO_ROOT)}
    def reply(body, n):  # one 429 first, so the log has a retry line in it
        return Reply(status=429, headers={"Retry-After": "0"}, body={"error": {"message": "slow"}}) if n == 0 else Reply()

    with LocalChatServer(reply) as server:
        done = subprocess.run(
            [sys.executable, "-m", "llavamed_lite.cli", "synthesize", "--captions", str(captions),
             "--out", str(tmp_path / "out" / "instruct.json"), "--backend", "openai", "--model", "gpt-4o",
             "--base-url", server.base_url, "--cache", str(tmp_path / "out" / "cache.jsonl"),
             "--log-file", str(tmp_path / "out" / "run.log")],
            env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # the key was really used ...
    assert any(v == f"Bearer {key}" for r in server.requests for k, v in r["headers"].items() if k.lower() == "authorization")
    # ... and is nowhere else
    written = sorted((tmp_path / "out").iterdir())
    assert {p.name for p in written} == {"instruct.json", "instruct.stats.json", "cache.jsonl", "run.log"}
    assert "retrying" in (tmp_path / "out" / "run.log").read_text()  # the log has content worth scanning
    for text in [p.read_text() for p in written] + [done.stdout, done.stderr]:
        assert key not in text and key[3:] not in text


def test_saved_notebook_holds_no_key():
    if not NOTEBOOK.exists():
        pytest.skip("notebook 03 not generated yet")
    text = NOTEBOOK.read_text()
    assert not KEY_PATTERN.search(text)
    for name in ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY"):
        value = os.environ.get(name)
        if value:
            assert value not in text
