"""The nginx front door (deploy/nginx) in front of a REAL `mlflow models serve`, on 127.0.0.1.

One model server (the tiny champion) and one real nginx, started by the recipe's own launcher
(``deploy/nginx/front_door.py``), for the module. Skipped, saying why, where nginx is not
installed (Debian: ``apt-get install nginx``; ``.ci/run`` installs it).
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
import requests

from eyecatcher.serving.client import dataframe_split_body
from eyecatcher.serving.probes import sample_jpeg
from eyecatcher.serving.process import ModelServer, free_port
from eyecatcher.serving_model.contract import encode_image
from tests.pipelines.serving.tiny_champion import MODEL_NAME, tiny_registry

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "deploy" / "nginx" / "front_door.py"
START_TIMEOUT_S = 240
#: Small, so that the oversized bodies of the test stay small too.
MAX_BODY = "1m"
#: The first test also waits for the model server to start (up to START_TIMEOUT_S).
pytestmark = pytest.mark.timeout(START_TIMEOUT_S + 120)


def _load_launcher() -> ModuleType:
    spec = importlib.util.spec_from_file_location("front_door", LAUNCHER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


front_door = _load_launcher()


def _nginx_or_skip() -> str:
    try:
        return front_door.find_nginx()
    except front_door.FrontDoorError as exc:
        pytest.skip(f"the front-door tests need a real nginx: {exc}")


class FrontDoor:
    """The launcher running nginx in the foreground, in its own process group."""

    def __init__(self, prefix: Path, upstream: str, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.prefix = prefix
        command = [
            sys.executable,
            str(LAUNCHER),
            "--listen",
            f"127.0.0.1:{self.port}",
            "--upstream",
            upstream,
            "--prefix",
            str(prefix),
            "--max-body",
            MAX_BODY,
            *extra,
        ]
        self.log = (prefix.parent / f"{prefix.name}.out").open("wb")
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_until_listening(self, timeout_s: float = 30.0) -> None:
        """Wait for the nginx this launcher became, not for whoever holds the port.

        The launcher's ``nginx -t`` binds and listens on the port for a moment (nginx opens the
        listening sockets to check them) and then exits: a connection made then succeeds and
        the next one is reset. The real nginx writes its pid file after it bound the port, and
        it has the launcher's pid (``execv``), so that file is what says it is up.
        """
        deadline = time.monotonic() + timeout_s
        pid_file = self.prefix / "nginx.pid"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.output()}")
            try:
                if pid_file.read_text().strip() == str(self.process.pid):
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"nginx did not listen within {timeout_s} s: {self.output()}")

    def output(self) -> str:
        self.log.flush()
        text = Path(self.log.name).read_text(errors="replace")
        error_log = self.prefix / "logs" / "error.log"
        if error_log.exists():
            text += "\n" + error_log.read_text(errors="replace")[-4000:]
        return text

    def stop(self) -> None:
        # The launcher exec-ed nginx: the group is the nginx master and its worker.
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ModelServer, FrontDoor]]:
    _nginx_or_skip()
    root = tmp_path_factory.mktemp("front-door")
    with tiny_registry(root) as registry:
        server = ModelServer(
            f"models:/{MODEL_NAME}@champion",
            tracking_uri=registry.tracking_uri,
            log_dir=root / "server-log",
        )
        door = None
        try:
            server.start()
            door = FrontDoor(root / "nginx", f"127.0.0.1:{server.port}")
            door.wait_until_listening()
            server.wait_until_ready(timeout_s=START_TIMEOUT_S)
            yield server, door
        finally:
            if door is not None:
                door.stop()
            server.stop()


def json_body(n_images: int = 1) -> bytes:
    images = [encode_image(sample_jpeg(64, seed=i)) for i in range(n_images)]
    return json.dumps(dataframe_split_body(images)).encode()


def post(url: str, body: bytes | Iterator[bytes], content_type: str | None) -> requests.Response:
    headers = {} if content_type is None else {"Content-Type": content_type}
    return requests.post(url + "/invocations", data=body, headers=headers, timeout=60)


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "application/json;charset=UTF-8"],
)
def test_a_json_request_is_scored_through_the_proxy(
    served: tuple[ModelServer, FrontDoor], content_type: str
) -> None:
    _, door = served
    response = post(door.url, json_body(2), content_type)
    assert response.status_code == 200, response.text[:500]
    rows = response.json()["predictions"]
    assert len(rows) == 2
    assert all(r["error"] is None and r["decision"] in {"allow", "review", "block"} for r in rows)


def _parquet_body() -> bytes:
    buffer = io.BytesIO()
    pd.DataFrame({"image": [encode_image(sample_jpeg(64))] * 3}).to_parquet(buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/vnd.apache.parquet", _parquet_body()),
        ("text/csv", b"image\n" + encode_image(sample_jpeg(64)).encode() + b"\n"),
        (None, json_body()),
        ("text/plain", json_body()),
        ("application/json; charset=latin-1", json_body()),
        # Spellings MLflow's server refuses too (it compares the type exactly, the charset
        # value unquoted): the proxy passes exactly what the server accepts.
        ("Application/JSON", json_body()),
        ('application/json; charset="utf-8"', json_body()),
        ("application/json; charset=utf-8; boundary=x", json_body()),
        ("application/jsonx", json_body()),
        ("application/x-www-form-urlencoded", b"image=abc"),
    ],
    ids=[
        "parquet",
        "csv",
        "no-type",
        "text-plain",
        "latin-1",
        "capitals",
        "quoted-charset",
        "extra-parameter",
        "jsonx",
        "form",
    ],
)
def test_anything_but_json_is_refused_with_415_at_the_proxy(
    served: tuple[ModelServer, FrontDoor], content_type: str | None, body: bytes
) -> None:
    server, door = served
    # The model server itself would parse these (CSV and Parquet into a DataFrame).
    response = post(door.url, body, content_type)
    assert response.status_code == 415, response.text[:300]
    assert response.json()["error_code"] == "UNSUPPORTED_MEDIA_TYPE"
    assert server.is_running()


def test_a_body_over_the_limit_is_refused_with_413_sized_or_chunked(
    served: tuple[ModelServer, FrontDoor],
) -> None:
    _, door = served
    big = b'{"dataframe_split": {"columns": ["image"], "data": [["' + b"A" * 1_200_000 + b'"]]}}'
    response = post(door.url, big, "application/json")
    assert response.status_code == 413
    assert response.json()["error_code"] == "REQUEST_TOO_LARGE"

    def chunks() -> Iterator[bytes]:  # no Content-Length: nginx counts while it reads
        yield big[:600_000]
        yield big[600_000:]

    response = post(door.url, chunks(), "application/json")
    assert response.status_code == 413


def test_ping_health_and_version_pass_through_and_other_paths_are_404(
    served: tuple[ModelServer, FrontDoor],
) -> None:
    _, door = served
    for path in ("/ping", "/health"):
        assert requests.get(door.url + path, timeout=10).status_code == 200
    version = requests.get(door.url + "/version", timeout=10)
    assert version.status_code == 200 and version.text.strip()[0].isdigit()
    for path in ("/", "/docs", "/openapi.json", "/invocations/x", "/pingx"):
        response = requests.get(door.url + path, timeout=10)
        assert response.status_code == 404, path
        assert response.json()["error_code"] == "NOT_FOUND"
    wrong = requests.get(door.url + "/invocations", timeout=10)
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "POST"
    assert requests.post(door.url + "/ping", timeout=10).status_code == 405


def test_hostile_json_is_bounded_by_size_and_answered_at_once(
    served: tuple[ModelServer, FrontDoor],
) -> None:
    """nginx cannot parse JSON: a huge integer or deep nesting reaches the server, within size.

    MLflow's scoring server does not catch these parser errors (Python's int-str limit raises
    ValueError, deep nesting RecursionError): it answers 500 (docs/serving.md). What the front
    door guarantees is the size, hence the cost; the server stays up.
    """
    server, door = served
    huge_number = b'{"dataframe_split": {"columns": ["image"], "data": [[' + b"9" * 5000 + b"]]}}"
    deep = b'{"inputs": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    for body in (huge_number, deep):
        assert len(body) < 1024 * 1024  # under the proxy's limit: it does reach the server
        started = time.monotonic()
        response = post(door.url, body, "application/json")
        assert response.status_code >= 400, response.text[:300]
        assert "Traceback" not in response.text
        assert time.monotonic() - started < 10
    assert server.is_running()
    assert post(door.url, json_body(), "application/json").status_code == 200


def test_the_server_still_serves_after_every_refusal(
    served: tuple[ModelServer, FrontDoor],
) -> None:
    server, door = served
    post(door.url, _parquet_body(), "application/vnd.apache.parquet")
    post(door.url, b"x" * 2_000_000, "application/json")
    response = post(door.url, json_body(), "application/json")
    assert response.status_code == 200 and response.json()["predictions"][0]["error"] is None
    assert server.is_running() and server.ping()
    access = (door.prefix / "logs" / "access.log").read_text()
    assert '"POST /invocations HTTP/1.1" 415' in access and '" 413 ' in access


def test_a_model_server_that_does_not_answer_gets_504_after_the_read_timeout(
    tmp_path: Path,
) -> None:
    _nginx_or_skip()
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(silent.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    door = FrontDoor(
        tmp_path / "nginx",
        f"127.0.0.1:{silent.getsockname()[1]}",
        "--deadline",
        "0.5",
        "--read-timeout",
        "1.5",
    )
    try:
        door.wait_until_listening()
        started = time.monotonic()
        response = post(door.url, json_body(), "application/json")
        elapsed = time.monotonic() - started
        assert response.status_code == 504
        assert response.json()["error_code"] == "MODEL_TIMEOUT"
        assert 1.0 < elapsed < 10.0
    finally:
        door.stop()
        stop.set()
        thread.join(timeout=5)
        for conn in accepted:
            conn.close()
        silent.close()


def test_a_model_server_that_is_down_gets_502_at_once(tmp_path: Path) -> None:
    _nginx_or_skip()
    door = FrontDoor(tmp_path / "nginx", f"127.0.0.1:{free_port()}")  # nothing listens there
    try:
        door.wait_until_listening()
        started = time.monotonic()
        response = requests.get(door.url + "/ping", timeout=10)
        assert response.status_code == 502 and response.json()["error_code"] == "MODEL_UNAVAILABLE"
        assert time.monotonic() - started < 5.0
    finally:
        door.stop()


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"prefix": Path("relative")}, "absolute"),
        ({"deadline_s": 10.0, "read_timeout_s": 10.0}, "above the model's deadline"),
        ({"max_body": "32 MB"}, "nginx size"),
        ({"listen": "8080"}, "host:port"),
    ],
)
def test_the_launcher_refuses_inconsistent_settings(settings: dict, match: str) -> None:
    base = {"listen": "127.0.0.1:8080", "upstream": "127.0.0.1:5001", "prefix": Path("/tmp/x")}
    with pytest.raises(front_door.FrontDoorError, match=match):
        front_door.render(**{**base, **settings})


def test_the_read_timeout_follows_the_model_deadline() -> None:
    config = front_door.render(
        listen="127.0.0.1:8080", upstream="127.0.0.1:5001", prefix=Path("/srv/door"), deadline_s=10
    )
    assert "proxy_read_timeout 15s;" in config
    assert "client_max_body_size 32m;" in config and "pid /srv/door/nginx.pid;" in config
