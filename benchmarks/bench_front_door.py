"""The nginx front door (deploy/nginx): what each hostile body costs with and without it.

Serves a random-weight ``test_resnet`` champion (64 px) with ``mlflow models serve`` on
127.0.0.1 and starts the real nginx front door (``deploy/nginx/front_door.py``, default limits:
32 MB body, read timeout = the model's deadline + 5 s) in front of it. Each body is sent once
straight to the model server and once through the proxy: the answer, the wall time and the
peak RSS growth of the model server's process group (sampled every 20 ms) are printed.

Run (needs nginx: ``apt-get install nginx``)::

    .venv/bin/python benchmarks/bench_front_door.py
"""

from __future__ import annotations

import importlib.util
import io
import json
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import requests
import torch

from eyecatcher.models.bundle import ClassifierBundle
from eyecatcher.models.factory import create_classifier
from eyecatcher.preprocessing import data_config_for
from eyecatcher.serving.client import dataframe_split_body
from eyecatcher.serving.probes import sample_jpeg
from eyecatcher.serving.process import ModelServer, free_port
from eyecatcher.serving_model import DecisionThresholds, ServingConfig
from eyecatcher.serving_model.contract import encode_image
from eyecatcher.serving_model.packaging import log_served_model

REPO = Path(__file__).resolve().parents[1]
LAUNCHER = REPO / "deploy" / "nginx" / "front_door.py"
CLASSES = ["explicit_nudity", "safe", "swimwear_or_underwear"]
MB = 1024 * 1024


def register(root: Path) -> tuple[str, str]:
    """Register the tiny champion in a sqlite store under ``root``; (model URI, tracking URI)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    torch.manual_seed(0)
    model, source = create_classifier("test_resnet", len(CLASSES), "random")
    bundle = ClassifierBundle.from_model(
        model,
        architecture="test_resnet",
        classes=CLASSES,
        data_config=data_config_for(model, 64),
        weights_source=source,
    )
    config = ServingConfig(
        model_name="bench-front-door",
        model_version="1",
        candidate="test_resnet",
        precision="fp32",
        classes=CLASSES,
        safe_class="safe",
        thresholds=DecisionThresholds(review=0.5, block=0.8),
        operating_threshold=0.5,
    )
    experiment = mlflow.create_experiment(
        "bench-front-door", artifact_location=(root / "artifacts").as_uri()
    )
    with mlflow.start_run(experiment_id=experiment):
        info = log_served_model(bundle=bundle, config=config)
    version = mlflow.register_model(info.model_uri, "bench-front-door")
    MlflowClient().set_registered_model_alias("bench-front-door", "champion", version.version)
    return "models:/bench-front-door@champion", tracking_uri


def bodies() -> list[tuple[str, str, bytes]]:
    """(label, content type, body) for each case."""
    good = json.dumps(dataframe_split_body([encode_image(sample_jpeg(64))])).encode()
    # One long string, repeated: dictionary-encoded and compressed, ~1,000 rows of 220 kB each.
    parquet = io.BytesIO()
    pd.DataFrame({"image": ["A" * 220_000] * 1000}).to_parquet(parquet, compression="zstd")
    csv = b"image\n" + (encode_image(sample_jpeg(64)).encode() + b"\n") * 1000
    huge_integer = b'{"dataframe_split": {"columns": ["image"], "data": [[' + b"9" * 5000 + b"]]}}"
    deep = b'{"inputs": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    oversized = b'{"dataframe_split": {"columns": ["image"], "data": [["'
    oversized += b"A" * (40 * MB) + b'"]]}}'
    return [
        ("good JSON, 1 image", "application/json", good),
        ("Parquet, 1,000 rows of 220 kB", "application/vnd.apache.parquet", parquet.getvalue()),
        ("CSV, 1,000 rows", "text/csv", csv),
        ("JSON, 5,000-digit integer", "application/json", huge_integer),
        ("JSON, 200,000 levels of nesting", "application/json", deep),
        ("JSON, 40 MB (over the 32 MB limit)", "application/json", oversized),
    ]


def peak_growth(server: ModelServer, send: Callable[[], Any]) -> tuple[Any, int, float]:
    """Run ``send`` while sampling the server's RSS; (result, peak growth in bytes, seconds)."""
    baseline = peak = server.rss_bytes()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, server.rss_bytes())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    try:
        result = send()
    finally:
        elapsed = time.monotonic() - started
        done.set()
        sampler.join(timeout=5)
    return result, max(peak, server.rss_bytes()) - baseline, elapsed


def _load_launcher() -> Any:
    spec = importlib.util.spec_from_file_location("front_door", LAUNCHER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    front_door = _load_launcher()
    front_door.find_nginx()  # fails with the install hint when nginx is missing
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_uri, tracking_uri = register(root)
        with ModelServer(model_uri, tracking_uri=tracking_uri, log_dir=root / "log") as server:
            port = free_port()
            proxy = f"http://127.0.0.1:{port}"
            door = subprocess.Popen(
                [
                    sys.executable,
                    str(LAUNCHER),
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--upstream",
                    f"127.0.0.1:{server.port}",
                    "--prefix",
                    str(root / "nginx"),
                ],
                start_new_session=True,
            )
            try:
                server.wait_until_ready(300)
                for _ in range(100):
                    try:
                        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                        break
                    except OSError:
                        time.sleep(0.1)
                cases = bodies()
                requests.post(  # warm-up: lazy imports
                    server.url + "/invocations",
                    data=cases[0][2],
                    headers={"Content-Type": "application/json"},
                    timeout=120,
                )
                print(
                    f"# {platform.machine()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
                )
                print("| body | bytes | to | status | time | server peak RSS growth |")
                print("|---|---:|---|---:|---:|---:|")
                for label, content_type, body in cases:
                    for name, url in (("server", server.url), ("proxy", proxy)):

                        def send(url: str = url, body: bytes = body, ct: str = content_type) -> Any:
                            return requests.post(
                                url + "/invocations",
                                data=body,
                                headers={"Content-Type": ct},
                                timeout=300,
                            )

                        response, growth, seconds = peak_growth(server, send)
                        print(
                            f"| {label} | {len(body):,} | {name} | {response.status_code} | "
                            f"{seconds * 1000:,.0f} ms | +{growth / MB:,.0f} MB |",
                            flush=True,
                        )
                ok = requests.post(
                    proxy + "/invocations",
                    data=cases[0][2],
                    headers={"Content-Type": "application/json"},
                    timeout=120,
                )
                print(f"\nA good request through the proxy afterwards: {ok.status_code}")
            finally:
                door.send_signal(signal.SIGTERM)
                door.wait(timeout=10)


if __name__ == "__main__":
    main()
