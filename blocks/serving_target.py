"""Where the deployment flow rolls models out."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, model_validator

from tasks.serving.local_target import LocalSettings, LocalTarget


class ServingTarget(Block):
    """`local`: Seldon Core processes behind nginx on this machine (the embedded default);
    `kubernetes`: a SeldonDeployment applied in a cluster's namespace."""

    _block_type_name = "MLOps Serving Target"
    _description = (
        "Local Seldon processes behind nginx (ports, state folder, workers, limits) or a "
        "Kubernetes context and namespace for SeldonDeployments."
    )

    kind: Literal["local", "kubernetes"] = "local"
    # local
    state_dir: str = Field(default="data/serving", description="Pids, logs, nginx, request log.")
    host: str = Field(default="127.0.0.1", description="Address nginx and predictors bind.")
    port: int = Field(default=9000, ge=1, le=65535, description="nginx: the model's address.")
    serving_python: str = Field(default=".venv-serving/bin/python")
    online_store: str = Field(
        default="data/feast/online_store.db",
        description="SQLite online store file, or Feast's Redis store as redis://host:port/db.",
    )
    online_store_password: SecretStr | None = Field(
        default=None,
        description="local: the Redis online store's password, if it asks for one (handed to "
        "the predictors through their environment).",
    )
    workers: int = Field(default=1, ge=1, le=64, description="gunicorn workers per predictor.")
    threads: int = Field(
        default=2, ge=1, le=64, description="Per worker; >1 keeps connections alive."
    )
    max_rows: int = Field(default=1000, ge=1, description="Larger batches are answered 413.")
    max_body_kb: int = Field(
        default=1024, ge=1, description="nginx and each predictor refuse larger bodies (413)."
    )
    startup_timeout_s: float = Field(default=60.0, gt=0)
    drain_s: float = Field(default=2.0, ge=0, description="Wait before stopping a predictor.")
    client_keepalive_s: int = Field(
        default=0,
        ge=0,
        le=3600,
        description="nginx keep-alive for clients. 0: one connection per request, so that no "
        "request fails when a rollout reloads nginx (a reload closes kept-alive connections "
        "right after the answer in flight, and a client's next request on one fails); >0 "
        "saves a connect per request, for clients that retry on a closed connection.",
    )
    # kubernetes
    context: str | None = Field(default=None, description="kubeconfig context; None: current.")
    namespace: str = "default"
    kubeconfig: str | None = None
    image: str = Field(default="mlops-model-server:latest", description="deployments/seldon.")
    rollout_timeout_s: float = Field(default=600.0, gt=0, description="Wait for Available.")
    rollout_poll_s: float = Field(default=2.0, gt=0, description="How often to read its state.")
    log_claim: str | None = Field(
        default=None,
        description="A PersistentVolumeClaim the predictors write their request log to (none: "
        "a pod-local folder, which no window can be judged by).",
    )
    cluster_online_store: str = Field(
        default="", description="The online store's path in the predictors' pods (entity form)."
    )
    request_log_dir: str = Field(
        default="",
        description="Where this flow reads the request log the cluster's predictors write (their "
        "log volume, mounted or synced); empty: no window can be judged, so no promotion.",
    )

    @model_validator(mode="after")
    def _password_in_its_field(self) -> ServingTarget:
        url = urlsplit(self.online_store) if "://" in self.online_store else None
        if url is not None and (
            url.password or {"password", "username"} & set(parse_qs(url.query))
        ):
            raise ValueError(
                "online_store: the URL holds a password; give it in online_store_password "
                "(a secret field) and leave it out of the URL"
            )
        if self.online_store_password is not None and self.kind != "local":
            raise ValueError(
                "online_store_password is for kind local (the predictors this block starts); "
                "kind kubernetes does not pass it to the cluster's predictors"
            )
        return self

    def log_dir(self, model: str) -> Path:
        """Where `model`'s request and labels logs are (what monitoring reads)."""
        if self.kind == "local":
            return LocalTarget(self.local_settings(), model).log_dir
        if not self.request_log_dir:
            raise ValueError(
                f"serving target (kubernetes): request_log_dir is empty, so the request log of "
                f"'{model}' cannot be read; mount the predictors' log volume and set it"
            )
        return Path(self.request_log_dir)

    def monitoring_dir(self, model: str) -> Path:
        """Monitoring's own state for `model`: its watermark and open episodes."""
        if self.kind == "local":
            return LocalTarget(self.local_settings(), model).folder / "monitoring"
        return Path(self.state_dir).resolve() / model / "monitoring"

    def local_settings(self) -> LocalSettings:
        return LocalSettings(
            state_dir=self.state_dir,
            host=self.host,
            port=self.port,
            serving_python=self.serving_python,
            online_store=self.online_store,
            online_store_password=(
                self.online_store_password.get_secret_value() if self.online_store_password else ""
            ),
            workers=self.workers,
            threads=self.threads,
            max_rows=self.max_rows,
            max_body_kb=self.max_body_kb,
            startup_timeout_s=self.startup_timeout_s,
            drain_s=self.drain_s,
            client_keepalive_s=self.client_keepalive_s,
        )
