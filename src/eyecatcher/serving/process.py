"""Starting, waiting on and stopping an ``mlflow models serve`` process.

The serving pipeline, the batch-scoring tests and the serving benchmark all need the same thing:
a real scoring server on 127.0.0.1 that is known to be up before the first request and is known
to be gone afterwards, whatever happened in between. :class:`ModelServer` is that one thing.

Why a process group: ``mlflow models serve --env-manager local`` is a Python process that starts
``bash -c "exec uvicorn ..."`` as a child, and uvicorn may start worker processes of its own.
Killing only the process we started would leave uvicorn holding the port, so the server runs in
its own session and is stopped by signalling the whole group.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from eyecatcher.registry.client import absolute_tracking_uri

logger = logging.getLogger(__name__)

#: How many characters of the server's log are quoted in an error message.
LOG_TAIL_CHARS = 4000


class ServerStartError(RuntimeError):
    """The scoring server died or did not answer ``/ping`` in time; the message quotes its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """Ask the OS for a TCP port that is free on ``host`` right now.

    Args:
        host: The interface the server will bind.

    Returns:
        A port number. Another process could take it before the server binds it; the server
        then dies with "address already in use", which :meth:`ModelServer.wait_until_ready`
        reports.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_answers(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port`` right now."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _read_tail(path: Path, limit: int = LOG_TAIL_CHARS) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-limit:]


def _parent_death_signal() -> Callable[[], None] | None:
    """A pre-exec hook asking Linux for SIGTERM when the parent dies (even by SIGKILL).

    Without it a killed ``kedro run`` would leave the server holding its port. uvicorn gets the
    same treatment from MLflow, so the whole chain goes down. libc is resolved here, in the
    parent, so the hook itself only makes one C call after fork (no imports, no locks).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def hook() -> None:
        prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG

    return hook


def _group_members(pgid: int) -> list[int] | None:
    """Live (non-zombie) processes of group ``pgid``; None where /proc is not available.

    Zombies count as gone: they hold no port and no memory, and in some containers PID 1 never
    reaps them, so waiting for them would always time out.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    members = []
    for stat in proc.glob("[0-9]*/stat"):
        try:
            # Fields after the parenthesised command: state, ppid, pgrp, ...
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in {"Z", "X"}:
            members.append(int(stat.parent.name))
    return members


def _group_alive(pgid: int) -> bool:
    """Whether any process is left running in process group ``pgid``."""
    members = _group_members(pgid)
    if members is not None:
        return bool(members)
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


class ModelServer:
    """An ``mlflow models serve --env-manager local`` process bound to one host and port.

    Use it as a context manager so the server is stopped on every path out::

        with ModelServer("models:/eyecatcher-moderation@champion", tracking_uri=uri) as server:
            server.wait_until_ready(timeout_s=120)
            requests.post(server.url + "/invocations", json=payload)

    Args:
        model_uri: What to serve (``models:/name@alias``, ``runs:/...``, a local path).
        tracking_uri: The MLflow tracking/registry URI the server resolves ``model_uri`` with
            (made absolute, see :func:`eyecatcher.registry.client.absolute_tracking_uri`).
        host: Interface to bind; 127.0.0.1 keeps the server off the network.
        port: TCP port; ``None`` picks a free one.
        workers: uvicorn worker processes.
        request_timeout_s: Per-request limit inside the server (answers 504 beyond it).
        extra_env: Further environment variables for the server process.
        log_dir: Where ``server.log`` goes (a temporary directory if None).

    Attributes:
        url: ``http://host:port`` once constructed.
        log_path: The file that receives the server's stdout and stderr.
    """

    def __init__(
        self,
        model_uri: str,
        *,
        tracking_uri: str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        workers: int = 1,
        request_timeout_s: int = 60,
        extra_env: dict[str, str] | None = None,
        log_dir: str | Path | None = None,
    ) -> None:
        self.model_uri = model_uri
        self.tracking_uri = tracking_uri
        self.host = host
        self.port = int(port) if port else free_port(host)
        self.workers = int(workers)
        self.request_timeout_s = int(request_timeout_s)
        self.extra_env = dict(extra_env or {})
        self._own_log_dir = log_dir is None
        self._log_dir = Path(log_dir or tempfile.mkdtemp(prefix="eyecatcher-serve-"))
        self.log_path = self._log_dir / "server.log"
        self.url = f"http://{host}:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_handle = None

    # -- lifecycle -------------------------------------------------------------------------

    def command(self) -> list[str]:
        """The command line that starts the server (the same one docs/serving.md shows)."""
        return [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            self.model_uri,
            "--env-manager",
            "local",
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-w",
            str(self.workers),
            "-t",
            str(self.request_timeout_s),
        ]

    def environment(self) -> dict[str, str]:
        """The server's environment: ours, plus the tracking URI and a PATH that finds uvicorn."""
        env = dict(os.environ)
        # MLflow runs `bash -c "exec uvicorn ..."`; without the venv's bin on PATH (a venv used
        # through .venv/bin/python, never activated) bash would not find uvicorn.
        bin_dir = str(Path(sys.executable).parent)
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
        if self.tracking_uri:
            env["MLFLOW_TRACKING_URI"] = absolute_tracking_uri(self.tracking_uri)
        env.update(self.extra_env)
        return env

    def start(self) -> ModelServer:
        """Launch the server in its own process group (returns at once; see wait_until_ready).

        Returns:
            ``self``.

        Raises:
            RuntimeError: If this server was already started.
            ServerStartError: If something already answers on the port: ``/ping`` would then
                reach that other server and the smoke test would test the wrong process.
        """
        if self._process is not None:
            raise RuntimeError(f"server for {self.model_uri} already started")
        if _port_answers(self.host, self.port):
            raise ServerStartError(
                f"{self.host}:{self.port} is already in use by another process (a server "
                f"started earlier?); stop it, choose another port, or leave the port unset "
                f"for a free one"
            )
        self._log_dir.mkdir(parents=True, exist_ok=True)
        self._log_handle = self.log_path.open("wb")
        logger.info("Starting scoring server: %s", " ".join(self.command()))
        self._process = subprocess.Popen(
            self.command(),
            env=self.environment(),
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_parent_death_signal(),  # noqa: PLW1509 (one C call, see its docstring)
        )
        return self

    @property
    def pid(self) -> int | None:
        """Process id of the ``mlflow models serve`` process (also its process-group id)."""
        return None if self._process is None else self._process.pid

    def rss_bytes(self) -> int:
        """Resident memory of every live process of the server's group (MLflow and uvicorn).

        Returns:
            The sum of their RSS in bytes (psutil); 0 when the server is not running or /proc
            is absent.
        """
        if self._process is None:
            return 0
        # psutil is a dev dependency: only tests and benchmarks measure the server.
        import psutil

        total = 0
        for pid in _group_members(self._process.pid) or []:
            try:
                total += psutil.Process(pid).memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue  # exited between the listing and the read
        return total

    def is_running(self) -> bool:
        """Whether the process we started is still alive."""
        return self._process is not None and self._process.poll() is None

    def log_tail(self, limit: int = LOG_TAIL_CHARS) -> str:
        """The last ``limit`` characters the server wrote to stdout/stderr."""
        return _read_tail(self.log_path, limit)

    def ping(self, timeout_s: float = 2.0) -> bool:
        """Whether ``GET /ping`` answers 200 right now."""
        try:
            with urllib.request.urlopen(self.url + "/ping", timeout=timeout_s) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError, TimeoutError):
            return False

    def wait_until_ready(self, timeout_s: float = 180.0, poll_s: float = 0.5) -> float:
        """Block until ``/ping`` answers, failing fast if the process dies.

        Args:
            timeout_s: Longest wait. Loading torch and the model takes ~10-30 s on 2 CPU cores.
            poll_s: Interval between checks.

        Returns:
            Seconds it took to become ready.

        Raises:
            ServerStartError: If the process exits or ``timeout_s`` passes; the message quotes
                the tail of the server's log (the real reason is in there).
        """
        if self._process is None:
            raise RuntimeError("start() the server before waiting on it")
        started = time.monotonic()
        deadline = started + timeout_s
        while True:
            code = self._process.poll()
            if code is not None:
                raise ServerStartError(
                    f"`mlflow models serve` for {self.model_uri} exited with code {code} before "
                    f"answering /ping. Server log ({self.log_path}):\n{self.log_tail()}"
                )
            if self.ping(timeout_s=min(2.0, timeout_s)):
                return time.monotonic() - started
            if time.monotonic() >= deadline:
                raise ServerStartError(
                    f"`mlflow models serve` for {self.model_uri} did not answer {self.url}/ping "
                    f"within {timeout_s:.0f} s. Server log ({self.log_path}):\n{self.log_tail()}"
                )
            time.sleep(poll_s)

    def stop(self, grace_s: float = 10.0) -> int | None:
        """Stop the server's process group: SIGTERM, then SIGKILL after ``grace_s``.

        Safe to call more than once and on a server that never started or already died.

        Returns:
            The exit code of the ``mlflow models serve`` process, or None if never started.
        """
        if self._process is None:
            return None
        process = self._process
        # SIGTERM uvicorn first: the `mlflow models serve` process waits for it and reaps it,
        # so no zombie is left behind (PID 1 in some containers never reaps orphans).
        children = [pid for pid in (_group_members(process.pid) or []) if pid != process.pid]
        for pid in children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        try:
            if not children:
                raise subprocess.TimeoutExpired(process.args, 0)
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                logger.warning("Scoring server %s ignored SIGTERM; killing it", process.pid)
        # Anything left in the group (uvicorn workers, a server that ignored SIGTERM) is killed;
        # a no-op once every member has exited.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace_s)
        self._wait_for_group_exit(process.pid, grace_s)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        return process.returncode

    @staticmethod
    def _wait_for_group_exit(pgid: int, timeout_s: float) -> None:
        # Orphaned members are reaped a moment after the leader exits; return only once no
        # process of the group is left running, so the port is free when stop() returns.
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not _group_alive(pgid):
                return
            time.sleep(0.05)
        logger.warning("Processes of the scoring server's group %s are still alive", pgid)

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
