"""make test's notebook kernels are forks of one warm process (llavamed_lite/warm_kernel.py): each must still behave
as a kernel of its own (directory, environment, fresh state, interrupts, subprocesses' exit codes, death with its
launcher)."""

import json
import os
import subprocess
import sys

import pytest

from llavamed_lite import warm_kernel

# Run by `warm_kernel.run` as its command: two kernels one after the other, through jupyter_client as papermill and
# nbval start them; what each printed goes to a JSON file.
CLIENT = r"""
import json, os, sys, time
from jupyter_client.manager import start_new_kernel

def run(kc, code):
    out = []
    reply = kc.execute_interactive(code, timeout=60, output_hook=lambda m: out.append(m["content"].get("text", "")))
    return reply["content"]["status"], "".join(out), reply["content"].get("ename")

report = {}
km, kc = start_new_kernel(kernel_name="python3", cwd=sys.argv[2])
report["first"] = run(kc, "import json, os, subprocess, sys\n"
                          "json.leak = 1\n"
                          "print(json.dumps([os.getpid(), os.getcwd(), os.environ.get('WARM_TEST'),\n"
                          "                  'email.mime.text' in sys.modules,\n"
                          "                  subprocess.run(['sh', '-c', 'exit 3']).returncode]))")
start = time.monotonic()
kc.execute("import time; time.sleep(30)")
time.sleep(1)
km.interrupt_kernel()
report["interrupted"] = [kc.get_shell_msg(timeout=20)["content"].get("ename"), time.monotonic() - start]
pid = json.loads(report["first"][1])[0]
km.shutdown_kernel(now=True)  # SIGKILL to the launcher: the forked kernel must go too
for _ in range(50):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        break
    time.sleep(0.1)
report["killed_kernel_gone"] = not os.path.exists(f"/proc/{pid}")
km, kc = start_new_kernel(kernel_name="python3", cwd=sys.argv[2])
report["second"] = run(kc, "import json, os\nprint(json.dumps([os.getpid(), hasattr(json, 'leak')]))")
km.shutdown_kernel()
open(sys.argv[1], "w").write(json.dumps(report))
"""


def test_kernels_forked_from_the_warm_process_behave_as_their_own(tmp_path, monkeypatch):
    client, report, cwd = tmp_path / "client.py", tmp_path / "report.json", tmp_path / "work"
    client.write_text(CLIENT)
    cwd.mkdir()
    monkeypatch.setenv("WARM_TEST", "from the launcher")
    status = warm_kernel.run([sys.executable, str(client), str(report), str(cwd)],
                             preload=("email.mime.text", "ipykernel.kernelapp"))
    assert status == 0
    got = json.loads(report.read_text())
    assert got["first"][0] == "ok"
    pid, kernel_cwd, env, preloaded, exit_code = json.loads(got["first"][1])
    assert (kernel_cwd, env, preloaded) == (str(cwd), "from the launcher", True)
    assert exit_code == 3  # the kernel reaps its own subprocesses (the warm process ignores SIGCHLD)
    assert got["interrupted"][0] == "KeyboardInterrupt" and got["interrupted"][1] < 15
    assert got["killed_kernel_gone"]
    second_pid, leaked = json.loads(got["second"][1])
    assert second_pid != pid and leaked is False  # a fresh fork: nothing the first kernel did is seen


def test_launch_without_a_warm_process_says_how_to_start_one(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != warm_kernel.SOCKET_ENV}
    done = subprocess.run([sys.executable, "-m", "llavamed_lite.warm_kernel", "launch", "-f", "x.json"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 1 and "llavamed_lite.warm_kernel run" in done.stderr
    env[warm_kernel.SOCKET_ENV] = str(tmp_path / "nothing-here")
    done = subprocess.run([sys.executable, "-m", "llavamed_lite.warm_kernel", "launch", "-f", "x.json"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 1 and "no warm kernel process at" in done.stderr


def test_run_reports_a_warm_process_that_cannot_start():
    with pytest.raises(warm_kernel.WarmKernelError, match="exited"):
        warm_kernel.run(["true"], preload=("no_such_module_anywhere",))
    assert warm_kernel.main(["run", "true"]) == 2  # no `--` before the command: the usage


def test_other_platforms_run_the_command_with_plain_kernels_and_say_so(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sys, "platform", "darwin")
    marker = tmp_path / "ran"
    assert warm_kernel.run([sys.executable, "-c", f"open({str(marker)!r}, 'w')"], preload=("json",)) == 0
    assert marker.exists() and "plain kernels" in capsys.readouterr().err

