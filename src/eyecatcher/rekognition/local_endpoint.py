"""A stand-in for Rekognition on 127.0.0.1, speaking its JSON protocol, for tests and benchmarks.

moto does not implement ``DetectModerationLabels`` and botocore's ``Stubber`` answers before the
HTTP layer (so botocore's retries never run under it). This server sits behind a real botocore
client (``endpoint_url=server.url``): requests are signed, sent over HTTP, parsed, and errors go
through botocore's standard retry mode exactly as they would against AWS.

It only serves ``X-Amz-Target: RekognitionService.DetectModerationLabels``
(``application/x-amz-json-1.1``). Inline images are identified by the sha256 of their bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TARGET = "RekognitionService.DetectModerationLabels"

#: HTTP status Rekognition uses for each error code the server can simulate.
ERROR_STATUS = {
    "ThrottlingException": 400,
    "ProvisionedThroughputExceededException": 400,
    "InternalServerError": 500,
    "InvalidImageFormatException": 400,
    "ImageTooLargeException": 400,
    "InvalidParameterException": 400,
    "InvalidS3ObjectException": 400,
    "AccessDeniedException": 400,
    "UnrecognizedClientException": 400,
}


def empty_answer(_: str) -> dict[str, Any]:
    """An answer with no moderation label (a safe image) from model version 7.0."""
    return {"ModerationLabels": [], "ModerationModelVersion": "7.0", "ContentTypes": []}


@dataclass
class ScriptedBehaviour:
    """What the server does.

    Attributes:
        answer: ``sha256 -> response`` for inline images (S3 objects use ``bucket/key``).
        latency_s: Simulated service time per request.
        fail_first: Error codes returned, in order, for the first requests (before answering).
        errors_by_image: ``sha256 -> error code`` returned every time for that image.
    """

    answer: Callable[[str], dict[str, Any]] = empty_answer
    latency_s: float = 0.0
    fail_first: list[str] = field(default_factory=list)
    errors_by_image: dict[str, str] = field(default_factory=dict)


class LocalRekognition:
    """A threaded HTTP server on 127.0.0.1 answering ``DetectModerationLabels``.

    Use as a context manager::

        with LocalRekognition(ScriptedBehaviour(latency_s=0.1)) as server:
            endpoint = RekognitionEndpoint(mode="live", endpoint_url=server.url, ...)

    Attributes:
        requests: One entry per HTTP request received: ``(image id, status code)``.
    """

    def __init__(self, behaviour: ScriptedBehaviour | None = None) -> None:
        self.behaviour = behaviour or ScriptedBehaviour()
        self.requests: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self._failures_left = list(self.behaviour.fail_first)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return  # keep test output clean

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                status, payload = server._handle(self.headers.get("X-Amz-Target", ""), body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-amzn-RequestId", hashlib.md5(data).hexdigest())
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The endpoint URL to give a botocore client."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def _handle(self, target: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if target != TARGET:
            return 400, {"__type": "UnknownOperationException", "Message": target}
        image = body.get("Image", {})
        if "Bytes" in image:
            image_id = hashlib.sha256(base64.b64decode(image["Bytes"])).hexdigest()
        else:
            s3 = image.get("S3Object", {})
            image_id = f"{s3.get('Bucket')}/{s3.get('Name')}"
        if self.behaviour.latency_s:
            time.sleep(self.behaviour.latency_s)
        with self._lock:
            code = self._failures_left.pop(0) if self._failures_left else None
            code = code or self.behaviour.errors_by_image.get(image_id)
            status = ERROR_STATUS.get(code, 400) if code else 200
            self.requests.append((image_id, status))
        if code:
            return status, {"__type": code, "Message": f"simulated {code}"}
        return 200, self.behaviour.answer(image_id)

    def answered_images(self) -> list[str]:
        """Image ids that got a 200 answer, in order."""
        return [image for image, status in self.requests if status == 200]

    def __enter__(self) -> LocalRekognition:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
