"""Notebook kernels forked from a process that has already imported torch, transformers and this package.

`make test` executes the notebooks 24 times (quick tiny, `lora`, `full`). A plain kernel spends 10-15 s of each on
the same imports and on starting ipykernel, on 2 cores more than a third of the notebooks' time (docs/testing.md).
Here one warm process imports them once; each kernel is a fork of it, so a notebook still runs in a process of its
own, starts from an empty namespace and executes its own import cell (a no-op for the modules already loaded).
Only `make test` uses it: `make demo`, `make notebooks` and `make lab` start plain kernels.

    python -m llavamed_lite.warm_kernel run -- CMD ...   # CMD's notebook kernels ('python3') are warm forks

`run` starts the warm process on a Unix socket, points JUPYTER_PATH at a kernelspec named `python3` whose command is
`python -m llavamed_lite.warm_kernel launch -f {connection_file}`, runs CMD and stops the warm process. `launch` is
what jupyter_client starts: it hands its environment, working directory, arguments and standard streams to the warm
process, which forks the kernel; it forwards signals (interrupts) to the kernel and exits with it. A kernel whose
launcher dies (killed by jupyter_client) exits too.
"""

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SOCKET_ENV = "LLAVAMED_LITE_WARM_KERNEL"
# What the notebooks' import cells load, in their order: llavamed_lite first (it quiets tqdm before transformers
# loads it). Not gradio: only notebook 07 imports it. A fork keeps only the forking thread, so `serve` checks that
# these imports started no other.
PRELOAD = ("llavamed_lite", "torch", "transformers", "matplotlib.pyplot", "pandas", "ipykernel.kernelapp",
           "llavamed_lite.model.compose", "llavamed_lite.train.launch", "llavamed_lite.train.stages",
           "llavamed_lite.eval.evaluate", "llavamed_lite.eval.report", "llavamed_lite.synth.towers")
START_TIMEOUT = 300.0  # seconds for the warm process to import PRELOAD on a busy machine


class WarmKernelError(RuntimeError):
    pass


def _send(conn: socket.socket, message: dict) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


def _receive(conn: socket.socket) -> dict | None:
    """One newline-ended JSON message, or None when the other side closed first."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    return json.loads(data)


def serve(socket_path: str | Path, preload: tuple[str, ...] = PRELOAD) -> None:
    """Import `preload`, then fork a kernel for each launcher that connects to `socket_path`, until SIGTERM."""
    import importlib

    for name in preload:
        importlib.import_module(name)
    if threading.active_count() != 1:  # a fork keeps only the forking thread: another one's locks would hang
        raise WarmKernelError(f"importing {preload} started threads {threading.enumerate()}; a fork would lose them")
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernels are reaped as they exit
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(socket_path))
    server.listen(16)
    while True:
        conn, _ = server.accept()
        if os.fork() == 0:
            server.close()
            _become_kernel(conn)  # never returns
        conn.close()


def _become_kernel(conn: socket.socket) -> None:
    """In the forked child: take the launcher's streams, directory, environment and arguments, then run ipykernel."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the kernel waits for its own subprocesses
        _, fds, _, _ = socket.recv_fds(conn, 1, 3)
        request = _receive(conn)
        # its own process group, so a Ctrl-C in the terminal reaches it once, through the launcher; the session stays
        # make's, where the scheduler weighs it against the other tests by their nice values
        os.setpgrp()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["ipykernel_launcher", *request["argv"]]
        if request["env"].get("JPY_PARENT_PID"):  # read when ipykernel was imported, in the warm process
            sys.argv.append(f"--IPKernelApp.parent_handle={request['env']['JPY_PARENT_PID']}")
        sys.path[0] = request["cwd"]  # as `python -m ipykernel_launcher` run there
        _send(conn, {"pid": os.getpid()})
        # the launcher's end closes when it exits or is killed: the kernel goes with it
        threading.Thread(target=lambda: (conn.recv(1), os._exit(1)), daemon=True).start()
        from ipykernel import kernelapp

        kernelapp.launch_new_instance()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:  # exit here: never back into the warm process's loop
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def launch(argv: list[str]) -> int:
    """What the kernelspec runs: have the warm process fork a kernel with this process's streams, directory,
    environment and arguments; forward signals to it; return when it exits."""
    path = os.environ.get(SOCKET_ENV)
    if not path:
        raise WarmKernelError(f"{SOCKET_ENV} is not set: start kernels through `python -m {__spec__.name} run`")
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError as e:
        raise WarmKernelError(f"no warm kernel process at {path}: {e}") from None
    socket.send_fds(conn, [b"."], [0, 1, 2])
    _send(conn, {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)})
    reply = _receive(conn)
    if reply is None:
        raise WarmKernelError("the warm kernel process closed the connection before the kernel started")
    pid = reply["pid"]

    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, forward)
    while True:  # the kernel is not our child: wait for it to be gone
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return 0
        time.sleep(0.2)


def run(command: list[str], preload: tuple[str, ...] = PRELOAD) -> int:
    """Run `command` with its 'python3' notebook kernels forked from one warm process; return its exit status."""
    if sys.platform != "linux":  # on macOS a process that has loaded torch (and Apple's frameworks) may not fork safely
        print(f"warm kernel: not on {sys.platform}; the notebooks start plain kernels", file=sys.stderr)
        return subprocess.call(command)
    with tempfile.TemporaryDirectory(prefix="warm-kernel-") as tmp:
        socket_path = Path(tmp) / "socket"
        spec = Path(tmp) / "kernels" / "python3"
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", __spec__.name, "launch", "-f", "{connection_file}"],
            "display_name": "Python 3 (warm fork)", "language": "python"}))
        env = {**os.environ, SOCKET_ENV: str(socket_path),
               "JUPYTER_PATH": os.pathsep.join(filter(None, [tmp, os.environ.get("JUPYTER_PATH")]))}
        warm = subprocess.Popen([sys.executable, "-m", __spec__.name, "serve", str(socket_path), *preload], env=env)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not socket_path.exists():
                if warm.poll() is not None:
                    raise WarmKernelError(f"the warm kernel process exited ({warm.returncode}) before it listened")
                if time.monotonic() > deadline:
                    raise WarmKernelError(f"the warm kernel process did not listen within {START_TIMEOUT:.0f} s")
                time.sleep(0.1)
            return subprocess.call(command, env=env)
        finally:
            warm.terminate()
            warm.wait()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    usage = f"usage: python -m {__spec__.name} run -- CMD ... | serve SOCKET [MODULE ...] | launch KERNEL-ARGS ..."
    if not argv or argv[0] not in ("run", "serve", "launch"):
        print(usage, file=sys.stderr)
        return 2
    try:
        if argv[0] == "serve" and len(argv) >= 2:
            serve(argv[1], tuple(argv[2:]))
            return 0
        if argv[0] == "launch":
            return launch(argv[1:])
        if argv[0] == "run" and argv[1:2] == ["--"] and len(argv) > 2:
            return run(argv[2:])
    except WarmKernelError as e:
        print(f"warm kernel: {e}", file=sys.stderr)
        return 1
    print(usage, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
