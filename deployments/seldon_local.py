"""`seldon-core-microservice`, bound to one host address instead of every interface.

Seldon Core 1.18 binds its REST and metrics servers to 0.0.0.0 (fine inside a pod, whose
network is its own). On a shared machine the local serving target runs each predictor as

    python -m deployments.seldon_local --host 127.0.0.1 deployments.model_server.ModelServer ...

which is Seldon's own `main()` (every other argument is its own) with gunicorn's bind address
rewritten before the servers start. gRPC stays off (`--grpc-workers 0`).
"""

from __future__ import annotations

import sys
from typing import Any


def bind_to(host: str) -> None:
    from seldon_core import gunicorn_utils

    original = gunicorn_utils.StandaloneApplication.load_config

    def load_config(self: Any) -> None:
        bind = str(self.options.get("bind", ""))
        self.options = {**self.options, "bind": bind.replace("0.0.0.0", host)}
        original(self)

    gunicorn_utils.StandaloneApplication.load_config = load_config  # type: ignore[method-assign]


def main(argv: list[str]) -> None:
    host = "127.0.0.1"
    if argv[:1] == ["--host"]:
        host, argv = argv[1], argv[2:]
    bind_to(host)
    from seldon_core import microservice

    sys.argv = ["seldon-core-microservice", *argv]
    microservice.main()


if __name__ == "__main__":
    main(sys.argv[1:])
