"""Render EyeCatcher's nginx front door and run it in the foreground, without root.

    .venv/bin/python deploy/nginx/front_door.py --listen 127.0.0.1:8080 \\
        --upstream 127.0.0.1:5001 --prefix .front-door

writes ``PREFIX/nginx.conf`` from ``eyecatcher.conf.template`` (next to this file), creates the
log and temporary folders under ``PREFIX``, checks the configuration (``nginx -t``) and replaces
itself with ``nginx -c PREFIX/nginx.conf -p PREFIX -g 'daemon off;'`` (Ctrl-C or SIGTERM stops
it). ``--render-only`` writes the configuration and prints the nginx command instead.
``nginx -t`` binds the port for a moment as well: nginx is up once ``PREFIX/nginx.pid`` holds
this process's pid (``execv`` keeps it).

The proxy's read timeout defaults to the served model's per-request deadline
(``request_deadline_s``, :data:`eyecatcher.serving_model.contract.DEFAULT_REQUEST_DEADLINE_S`)
plus a margin, so the model's own answer arrives before the proxy answers 504. Pass
``--deadline`` when the registered version was given another deadline.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from eyecatcher.serving_model.contract import DEFAULT_REQUEST_DEADLINE_S

TEMPLATE = Path(__file__).with_name("eyecatcher.conf.template")
#: Body size limit: ``max_rows`` (64) images of ~300 kB, base64 (x 4/3), is about 26 MB.
DEFAULT_MAX_BODY = "32m"
#: Seconds the proxy waits for the model's answer beyond the model's own deadline.
READ_MARGIN_S = 5.0
#: Temporary folders nginx may write (each ``*_temp_path`` of the template).
TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
_SIZE = re.compile(r"^[1-9][0-9]*[kKmM]?$")
_ADDRESS = re.compile(r"^[0-9A-Za-z.\-\[\]:]+:[0-9]{1,5}$")


class FrontDoorError(ValueError):
    """A setting of the front door is invalid, or nginx cannot be found or refused it."""


def find_nginx() -> str:
    """The nginx binary: ``$NGINX``, else ``nginx`` on PATH, else Debian's ``/usr/sbin/nginx``.

    Debian installs nginx in ``/usr/sbin``, which is not on a non-root user's PATH.

    Raises:
        FrontDoorError: When none of them exists.
    """
    explicit = os.environ.get("NGINX")
    if explicit:
        if not (Path(explicit).is_file() and os.access(explicit, os.X_OK)):
            raise FrontDoorError(f"NGINX={explicit} is not an executable file")
        return explicit
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if found is None:
        raise FrontDoorError(
            "nginx not found on PATH or in /usr/sbin: install it (Debian: apt-get install "
            "nginx) or set NGINX=/path/to/nginx"
        )
    return found


def _duration(seconds: float) -> str:
    """An nginx time: whole seconds as ``35s``, else milliseconds (nginx has no ``1.5s``)."""
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{round(seconds * 1000)}ms"


def render(
    *,
    listen: str,
    upstream: str,
    prefix: Path,
    max_body: str = DEFAULT_MAX_BODY,
    deadline_s: float = DEFAULT_REQUEST_DEADLINE_S,
    connect_timeout_s: float = 2.0,
    send_timeout_s: float = 30.0,
    read_timeout_s: float | None = None,
) -> str:
    """The nginx configuration for these settings.

    Args:
        listen: ``host:port`` nginx listens on (keep ``127.0.0.1`` behind a TLS terminator).
        upstream: ``host:port`` of ``mlflow models serve``.
        prefix: Absolute folder for the pid file, logs and temporary files.
        max_body: nginx size (``32m``, ``512k``, bytes): larger bodies get 413.
        deadline_s: The served model's per-request deadline (``request_deadline_s``).
        connect_timeout_s: Connecting to the model server.
        send_timeout_s: Between two writes of the body to the model server.
        read_timeout_s: Between two reads of the answer; ``deadline_s`` + 5 s when ``None``.

    Raises:
        FrontDoorError: On a malformed address or size, a relative prefix, or a read timeout
            not above the deadline.
    """
    for name, address in (("listen", listen), ("upstream", upstream)):
        if not _ADDRESS.match(address):
            raise FrontDoorError(f"--{name} must be host:port, got {address!r}")
    if not _SIZE.match(max_body):
        raise FrontDoorError(f"--max-body must be an nginx size such as 32m, got {max_body!r}")
    if not prefix.is_absolute():
        raise FrontDoorError(f"the prefix must be an absolute path, got {prefix}")
    if any(ch.isspace() or ch in ";{}'\"" for ch in str(prefix)):
        raise FrontDoorError(f"the prefix must not contain spaces, quotes, ';' or braces: {prefix}")
    read = deadline_s + READ_MARGIN_S if read_timeout_s is None else read_timeout_s
    if read <= deadline_s:
        raise FrontDoorError(
            f"the read timeout ({read:g} s) must be above the model's deadline ({deadline_s:g} s): "
            "otherwise the proxy answers 504 before the model answers deadline_exceeded"
        )
    if min(connect_timeout_s, send_timeout_s) <= 0:
        raise FrontDoorError("timeouts must be > 0 seconds")
    values = {
        "PREFIX": str(prefix),
        "LISTEN": listen,
        "UPSTREAM": upstream,
        "MAX_BODY": max_body,
        "CONNECT_TIMEOUT": _duration(connect_timeout_s),
        "SEND_TIMEOUT": _duration(send_timeout_s),
        "READ_TIMEOUT": _duration(read),
    }
    text = TEMPLATE.read_text(encoding="utf-8")
    for name, value in values.items():
        text = text.replace(f"@{name}@", value)
    left = sorted(set(re.findall(r"@[A-Z_]+@", text)))
    if left:
        raise FrontDoorError(f"{TEMPLATE} has tokens nothing replaces: {left}")
    return text


def prepare(prefix: Path, config: str) -> Path:
    """Write the configuration and create the folders nginx writes to; return the config path."""
    for sub in ("logs", *(f"temp/{name}" for name in TEMP_DIRS)):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    path = prefix / "nginx.conf"
    path.write_text(config, encoding="utf-8")
    return path


def nginx_command(nginx: str, config: Path, prefix: Path) -> list[str]:
    """The foreground nginx command line for a rendered configuration."""
    # -e: nginx opens its built-in error log (/var/log/nginx, root's) before reading the config.
    return [
        nginx,
        "-e",
        str(prefix / "logs" / "error.log"),
        "-c",
        str(config),
        "-p",
        f"{prefix}/",
        "-g",
        "daemon off;",
    ]


def main(argv: list[str] | None = None) -> int:
    """Render, check and run the front door (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:8080", help="host:port nginx listens on")
    parser.add_argument(
        "--upstream", default="127.0.0.1:5001", help="host:port of mlflow models serve"
    )
    parser.add_argument("--prefix", default=".front-door", help="folder for pid, logs, temp")
    parser.add_argument("--max-body", default=DEFAULT_MAX_BODY, help="largest body (413 above)")
    parser.add_argument(
        "--deadline",
        type=float,
        default=DEFAULT_REQUEST_DEADLINE_S,
        help="the served model's request_deadline_s (read timeout = deadline + 5 s)",
    )
    parser.add_argument("--read-timeout", type=float, default=None)
    parser.add_argument("--connect-timeout", type=float, default=2.0)
    parser.add_argument("--send-timeout", type=float, default=30.0)
    parser.add_argument("--render-only", action="store_true", help="write the config and stop")
    args = parser.parse_args(argv)
    prefix = Path(args.prefix).resolve()
    try:
        config = render(
            listen=args.listen,
            upstream=args.upstream,
            prefix=prefix,
            max_body=args.max_body,
            deadline_s=args.deadline,
            connect_timeout_s=args.connect_timeout,
            send_timeout_s=args.send_timeout,
            read_timeout_s=args.read_timeout,
        )
        path = prepare(prefix, config)
        nginx = find_nginx()
    except FrontDoorError as exc:
        print(f"front_door: {exc}", file=sys.stderr)
        return 2
    command = nginx_command(nginx, path, prefix)
    if args.render_only:
        print(" ".join(command[:-1]) + " 'daemon off;'")
        return 0
    checked = subprocess.run(
        [*command[:-2], "-t", "-q"], capture_output=True, text=True, check=False
    )
    if checked.returncode != 0:
        print(f"front_door: nginx refused {path}:\n{checked.stderr}", file=sys.stderr)
        return 2
    print(f"front_door: http://{args.listen} -> http://{args.upstream} ({path})", flush=True)
    os.execv(nginx, command)
    return 0  # not reached: execv replaces this process


if __name__ == "__main__":
    sys.exit(main())
