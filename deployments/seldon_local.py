"""`seldon-core-microservice`, bound to one host address instead of every interface, with a
request-body limit, and with parameters kept off its command line.

Seldon Core 1.18 binds its REST and metrics servers to 0.0.0.0 (fine inside a pod, whose
network is its own) and reads any request body whole (Flask 2.2 applies MAX_CONTENT_LENGTH to
form posts only). On a shared machine the local serving target runs each predictor as

    python -m deployments.seldon_local --host 127.0.0.1 --max-body-kb 1024 \\
        deployments.model_server.ModelServer ...

which is Seldon's own `main()` (every other argument is its own) with gunicorn's bind address
rewritten before the servers start, and every REST request whose body is over the limit
answered 413 before it is read (what nginx answers in front of it). gRPC stays off
(`--grpc-workers 0`). Parameters that must not be visible in /proc/<pid>/cmdline (the online
store's URL, which may hold a password) come as a JSON list of Seldon parameters in the
environment variable MLOPS_SELDON_PARAMETERS and are added to `--parameters` in the process.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

PRIVATE_PARAMETERS = "MLOPS_SELDON_PARAMETERS"
DEFAULT_MAX_BODY_KB = 1024
READ_CHUNK = 64 * 1024


def bind_to(host: str) -> None:
    from seldon_core import gunicorn_utils

    original = gunicorn_utils.StandaloneApplication.load_config

    def load_config(self: Any) -> None:
        bind = str(self.options.get("bind", ""))
        self.options = {**self.options, "bind": bind.replace("0.0.0.0", host)}
        original(self)

    gunicorn_utils.StandaloneApplication.load_config = load_config  # type: ignore[method-assign]


class BodyLimit:
    """WSGI middleware: a request body over `max_bytes` is answered 413 (Seldon's JSON error
    form) and never handed to the app; a chunked body is read up to one byte past the limit."""

    def __init__(self, app: Callable[..., Iterable[bytes]], max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        length = str(environ.get("CONTENT_LENGTH") or "").strip()
        if length:
            if not length.isdigit() or int(length) > self.max_bytes:
                return self._too_large(start_response)
        elif "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower():
            body = _read_at_most(environ["wsgi.input"], self.max_bytes + 1)
            if len(body) > self.max_bytes:
                return self._too_large(start_response)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        return self.app(environ, start_response)

    def _too_large(self, start_response: Callable[..., Any]) -> list[bytes]:
        kb = self.max_bytes // 1024
        body = json.dumps(
            {
                "status": {
                    "code": 413,
                    "status": "FAILURE",
                    "reason": "TOO_LARGE",
                    "info": f"the request body is over {kb} KB",
                }
            }
        ).encode()
        start_response(
            "413 Request Entity Too Large",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]


def _read_at_most(stream: Any, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while size < limit:
        chunk = stream.read(min(READ_CHUNK, limit - size))
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


def limit_bodies(max_bytes: int) -> None:
    """Wrap every REST app Seldon builds in BodyLimit (the metrics app takes no bodies)."""
    from seldon_core import wrapper

    original = wrapper.get_rest_microservice

    def get_rest_microservice(user_model: Any, seldon_metrics: Any) -> Any:
        app = original(user_model, seldon_metrics)
        app.wsgi_app = BodyLimit(app.wsgi_app, max_bytes)
        return app

    wrapper.get_rest_microservice = get_rest_microservice


def with_private_parameters(argv: list[str], private: str) -> list[str]:
    """`argv` with the parameters of the JSON list `private` added to `--parameters`."""
    extra = json.loads(private)
    if not isinstance(extra, list):
        raise ValueError(f"{PRIVATE_PARAMETERS} must be a JSON list of Seldon parameters")
    out = list(argv)
    if "--parameters" in out:
        at = out.index("--parameters") + 1
        out[at] = json.dumps([*json.loads(out[at]), *extra])
    else:
        out += ["--parameters", json.dumps(extra)]
    return out


def main(argv: list[str]) -> None:
    host, max_kb = "127.0.0.1", DEFAULT_MAX_BODY_KB
    while argv[:1] in (["--host"], ["--max-body-kb"]):
        if argv[0] == "--host":
            host = argv[1]
        else:
            max_kb = int(argv[1])
        argv = argv[2:]
    private = os.environ.pop(PRIVATE_PARAMETERS, "")  # not inherited by gunicorn's workers
    if private:
        argv = with_private_parameters(argv, private)
    bind_to(host)
    limit_bodies(max_kb * 1024)
    from seldon_core import microservice

    sys.argv = ["seldon-core-microservice", *argv]
    microservice.main()


if __name__ == "__main__":
    main(sys.argv[1:])
