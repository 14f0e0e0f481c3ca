"""Security defaults (issue 17), each checked against the real thing:

- every server the platform starts listens on loopback only (its listening TCP sockets, read
  from /proc for the whole process tree), unless told otherwise;
- credentials live only in SecretStr block fields and reach no repr, dump, log, file, request
  log or command line (a planted secret is searched for everywhere it could land);
- no model or detector file is ever unpickled (an AST scan of the platform, then planted pickles
  whose unpickling would write a marker file, loaded through the real loaders);
- request bodies are limited: nginx answers 413 (JSON), the model server refuses more than
  `max_rows` rows, and a predictor's own port refuses a body over the limit before reading it;
- state folders are owner-only (0700), and a file holding a password is 0600.

One predictor behind nginx serves every serving case; each other server is started once.
"""

from __future__ import annotations

import ast
import http.client
import io
import json
import logging
import os
import pickle
import re
import shutil
import socket
import stat
import subprocess
import time
import typing
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import BaseModel, SecretStr

from deployments.contract import SERVING
from deployments.online_reader import OnlineStoreError
from deployments.predictor import ModelLoadError, load_folder
from deployments.redis_reader import VIEWS_KEY, RedisOnlineReader
from tests.unit.test_model_server import CONTRACT, FEATURES, PROJECT, _version

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[2]
SECRET = f"mlops-planted-secret-{uuid.uuid4().hex}"
LOOPBACK = {"127.0.0.1", "::1"}
MAX_ROWS = 5
MAX_BODY_KB = 16


# -- processes and their sockets --------------------------------------------------------------


def process_tree(root: int) -> set[int]:
    """`root`, every process of its session (a daemon's), and all their descendants."""
    table: dict[int, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(entry.name)] = (int(fields[1]), int(fields[3]))  # ppid, session
    found = {root} | {pid for pid, (_, session) in table.items() if session == root}
    while True:
        more = {pid for pid, (ppid, _) in table.items() if ppid in found} - found
        if not more:
            return found & set(table)
        found |= more


def listening(pids: set[int]) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket the processes `pids` hold."""
    inodes = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(int(link[8:-1]))
    found = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            parts = line.split()
            local, state, inode = parts[1], parts[3], int(parts[9])
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            address, port = local.split(":")
            raw = bytes.fromhex(address)  # 32-bit words in host (little-endian) order
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add((socket.inet_ntop(family, raw), int(port, 16)))
    return found


def assert_loopback_only(pids: set[int], expected_ports: set[int], what: str) -> None:
    sockets = listening(pids)
    assert expected_ports <= {port for _, port in sockets}, (what, sockets, expected_ports)
    wide = sorted(s for s in sockets if s[0] not in LOOPBACK)
    assert not wide, f"{what} listens beyond loopback: {wide} (all: {sorted(sockets)})"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def files_holding(root: Path, needle: str) -> list[str]:
    """Files under `root` whose bytes contain `needle`; [] also proves `root` had files."""
    files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    assert files, f"nothing written under {root}"
    return [str(p) for p in files if needle.encode() in p.read_bytes()]


def command_lines_holding(needle: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if needle.encode() in command:
                found.append(f"{entry.name}: {command[:200]!r}")
    return found


# -- a servable version and a Redis online store with a password -------------------------------


def write_version(folder: Path, files: dict[str, bytes], trainer: str) -> Path:
    """A registry version folder holding `files` as its model (tests/unit/test_model_server.py's
    layout)."""
    files = {
        **files,
        "features.json": json.dumps({"features": FEATURES}).encode(),
        SERVING: CONTRACT.to_json().encode(),
    }
    folder.mkdir(parents=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    metadata = {"name": "credit", "version": 3, "files": sorted(files)}
    metadata["metadata"] = {"trainer": trainer}
    (folder / "metadata.json").write_text(json.dumps(metadata))
    return folder


@dataclass
class PasswordRedis:
    port: int
    pid: int


def start_password_redis(folder: Path) -> PasswordRedis:
    """A redis-server asking for SECRET (from a 0600 config file: not on its command line),
    holding the serving contract's view descriptions, as Feast's apply leaves them."""
    import redis

    from tasks.processes import free_port, stop_process_group

    port = free_port()
    config = folder / "redis.conf"
    config.write_text(
        f'bind 127.0.0.1\nport {port}\nrequirepass {SECRET}\nsave ""\nappendonly no\ndir {folder}\n'
    )
    config.chmod(0o600)
    with (folder / "redis.log").open("wb") as log:
        process = subprocess.Popen(
            ["redis-server", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    views = {
        "profile": {
            "join_keys": {"customer_id": "INT64"},
            "features": {"annual_income": "Float64"},
        },
        "windows": {"join_keys": {"customer_id": "INT64"}, "features": {"txn_count_7d": "Int64"}},
    }
    client = redis.Redis(host="127.0.0.1", port=port, password=SECRET)
    deadline = time.monotonic() + 20
    try:
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.hset(
            VIEWS_KEY.format(project=PROJECT),
            mapping={name: json.dumps({**v, "ttl_s": 0}) for name, v in views.items()},
        )
    except BaseException:
        stop_process_group(process.pid, timeout=10)
        raise
    finally:
        client.close()
    return PasswordRedis(port, process.pid)


@dataclass
class Served:
    target: Any  # LocalTarget
    predictor: Any  # Predictor
    redis: PasswordRedis


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One predictor (LightGBM, Redis online store with a password) behind nginx, from the
    ServingTarget block's defaults but for ports, state folder and limits."""
    from blocks import ServingTarget
    from tasks.processes import free_port, stop_process_group
    from tasks.serving.local_target import LocalTarget, Routing

    root = tmp_path_factory.mktemp("served")
    redis_dir = root / "redis"
    redis_dir.mkdir()
    store = start_password_redis(redis_dir)
    target = None
    try:
        block = ServingTarget(
            state_dir=str(root / "serving"),
            port=free_port(),
            online_store=f"redis://127.0.0.1:{store.port}/0",
            online_store_password=SecretStr(SECRET),
            max_rows=MAX_ROWS,
            max_body_kb=MAX_BODY_KB,
            drain_s=0,
            startup_timeout_s=120,
        )
        target = LocalTarget(block.local_settings(), "credit")
        predictor = target.start("main", 3, str(_version(root / "v3", CONTRACT)))
        target.route(Routing(main=predictor.pid))
        yield Served(target, predictor, store)
    finally:
        if target is not None:
            target.stop_all()
        stop_process_group(store.pid, timeout=10)


def features_request(rows: int = 1, pad: int = 0) -> bytes:
    row = [52_000.0, 4, 10_000.0, 0.19, 2]
    body: dict[str, Any] = {"data": {"names": FEATURES, "ndarray": [row] * rows}}
    if pad:
        body["pad"] = "x" * pad
    return json.dumps(body).encode()


def post(
    host: str, port: int, body: bytes, chunked: bool = False
) -> tuple[int | None, dict[str, Any] | str]:
    """POST to /api/v1.0/predictions; (None, why) when the server closed the connection."""
    conn = http.client.HTTPConnection(host, port, timeout=60)
    headers = {"Content-Type": "application/json"}
    try:
        if chunked:
            parts = (body[i : i + 65536] for i in range(0, len(body), 65536))
            conn.request("POST", "/api/v1.0/predictions", parts, headers, encode_chunked=True)
        else:
            conn.request("POST", "/api/v1.0/predictions", body, headers)
        response = conn.getresponse()
        text = response.read()
    except (ConnectionError, http.client.RemoteDisconnected) as exc:
        return None, f"connection closed: {exc!r}"
    finally:
        conn.close()
    try:
        return response.status, json.loads(text)
    except ValueError:
        return response.status, text.decode(errors="replace")


# -- 1. servers bind loopback ----------------------------------------------------------------


def test_the_socket_scan_sees_a_wildcard_listener() -> None:
    with socket.socket() as wide, socket.socket(socket.AF_INET6) as wide6:
        wide.bind(("0.0.0.0", 0))
        wide6.bind(("::", 0))
        for sock in (wide, wide6):
            sock.listen()
        expected = {("0.0.0.0", wide.getsockname()[1]), ("::", wide6.getsockname()[1])}
        assert expected <= listening({os.getpid()})


def test_predictor_and_nginx_listen_on_loopback_only(served: Served) -> None:
    predictor, target = served.predictor, served.target
    ports = {predictor.http_port, predictor.metrics_port}  # gunicorn REST and Seldon's metrics
    assert_loopback_only(process_tree(predictor.pid), ports, "predictor (seldon + gunicorn)")
    nginx = target.nginx_pid()
    assert nginx is not None
    assert_loopback_only(process_tree(nginx), {target.settings.port}, "nginx")


def test_prefect_server_listens_on_loopback_only_and_its_home_is_private(tmp_path: Path) -> None:
    from flows.local_server import LocalServer
    from tasks.processes import free_port

    server = LocalServer(home=tmp_path / "prefect", port=free_port())
    try:
        server.start(timeout=150)
        pid = int(server.pid_file.read_text())
        assert_loopback_only(process_tree(pid), {server.port}, "prefect server")
        assert mode(server.home) == 0o700
    finally:
        server.stop()


def test_prometheus_and_pushgateway_listen_on_loopback_only(tmp_path: Path) -> None:
    from tasks.monitoring.prometheus import LocalPrometheus

    if shutil.which("prometheus") is None or shutil.which("prometheus-pushgateway") is None:
        pytest.skip("Debian's prometheus and prometheus-pushgateway are not installed")
    servers = LocalPrometheus(tmp_path / "prometheus")
    try:
        servers.start()
        pids = servers.pids
        assert_loopback_only(process_tree(pids["prometheus"]), {servers.port}, "prometheus")
        assert_loopback_only(
            process_tree(pids["pushgateway"]), {servers.pushgateway_port}, "pushgateway"
        )
        assert mode(tmp_path / "prometheus") == 0o700
        assert mode(tmp_path / "prometheus" / "tsdb") == 0o700  # its data
    finally:
        servers.stop()


def test_redis_listens_on_loopback_only_unless_given_a_host(tmp_path: Path) -> None:
    from tasks.feature_store.local_redis import LocalRedis

    with LocalRedis(tmp_path / "redis.log") as redis:
        assert redis._proc is not None and redis.dir is not None
        assert_loopback_only(process_tree(redis._proc.pid), {redis.port}, "redis")
        assert mode(redis.dir) == 0o700  # its working folder, where a SAVE would write
        working = redis.dir
    assert not working.exists()
    with LocalRedis(tmp_path / "other.log", host="127.0.0.2") as redis:  # the override
        assert redis._proc is not None
        assert listening(process_tree(redis._proc.pid)) == {("127.0.0.2", redis.port)}


def test_postgres_listens_on_loopback_only_private_and_its_password_file_0600() -> None:
    from flows.local_postgres import LocalPostgres

    pg = LocalPostgres()  # under the system's tmp: run as root, the postgres user reaches it
    seen: list[int] = []
    run = pg._run

    def watched(args: list[str], **env: str) -> None:
        if args[0].endswith("initdb"):
            assert pg.root is not None
            seen.append(mode(pg.root / "pw"))
        run(args, **env)

    pg._run = watched  # type: ignore[method-assign]
    try:
        pg.start()
        assert pg._proc is not None and pg.root is not None
        assert_loopback_only(process_tree(pg._proc.pid), {pg.port}, "postgres")
        assert seen == [0o600]  # the password file initdb read
        assert not (pg.root / "pw").exists()
        assert mode(pg.root) == 0o700 and mode(pg.root / "data") == 0o700
        assert not command_lines_holding(pg.password)
        assert pg.password not in (pg.root / "postgres.log").read_text(errors="replace")
    finally:
        pg.stop()


# -- 2. secrets --------------------------------------------------------------------------------

CREDENTIAL = re.compile(r"secret|password|token|key|connection_string|credential", re.I)
NOT_CREDENTIALS = {"secret_field"}  # the name of the fsspec option the secret goes into


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _secret(annotation: Any) -> bool:
    """SecretStr, or SecretStr | None."""
    args = set(typing.get_args(annotation))
    return annotation is SecretStr or (SecretStr in args and args <= {SecretStr, type(None)})


def credential_fields() -> dict[str, Any]:
    """Every field of every block (and of the models they hold) named like a credential."""
    from prefect.blocks.core import Block

    import blocks

    found: dict[str, Any] = {}
    todo: list[tuple[str, type[BaseModel]]] = [
        (name, cls)
        for name in blocks.__all__
        if isinstance(cls := getattr(blocks, name), type) and issubclass(cls, Block)
    ]
    seen: set[type] = set()
    while todo:
        where, model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, info in model.model_fields.items():
            if CREDENTIAL.search(name) and name not in NOT_CREDENTIALS:
                found[f"{where}.{name}"] = info.annotation
            todo += [(f"{where}.{name}", m) for m in _models_in(info.annotation)]
    return found


def test_every_credential_block_field_is_a_secret() -> None:
    fields = credential_fields()
    assert {
        "DataSource.secret",
        "ModelRegistry.secret",
        "FeatureRepo.redis_connection_string",
        "ServingTarget.online_store_password",
    } <= set(fields)
    plain = {k: v for k, v in fields.items() if not _secret(v)}
    assert not plain, f"credential fields that are not SecretStr: {plain}"


def test_planted_secrets_reach_no_repr_dump_log_or_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    from blocks import DataSource, FeatureRepo, ModelRegistry, ServingTarget
    from tasks.data.ingest import list_files, read_file
    from tasks.feature_store.redis_store import redis_url
    from tasks.serving.local_target import LocalTarget

    caplog.set_level(logging.DEBUG)
    source_dir = tmp_path / "source" / "loans"
    source_dir.mkdir(parents=True)
    pd.DataFrame({"id": [1, 2], "amount": [1.5, 2.5]}).to_parquet(source_dir / "part.parquet")
    configured = [
        ModelRegistry(
            root_uri=str(tmp_path / "registry"),
            storage_options={"auto_mkdir": True},
            secret=SecretStr(SECRET),
        ),
        DataSource(uri=str(tmp_path / "source"), secret=SecretStr(SECRET)),
        FeatureRepo(
            online_store="redis",
            redis_connection_string=SecretStr(f"127.0.0.1:1,password={SECRET}"),
        ),
        ServingTarget(
            state_dir=str(tmp_path / "serving"),
            online_store="redis://127.0.0.1:1/0",
            online_store_password=SecretStr(SECRET),
        ),
    ]
    shown = []
    for block in configured:
        shown += [
            repr(block),
            str(block),
            block.model_dump_json(),
            json.dumps(block.model_dump(mode="json")),
        ]
    registry_block, source, repo, target_block = configured
    settings = repo.settings()  # the plain forms, secrets unwrapped for their point of use
    local = target_block.local_settings()
    assert SECRET in settings.redis_connection_string and SECRET in local.online_store_password
    shown += [repr(settings), repr(local), repr(source.access())]
    shown += [repr(LocalTarget(local, "credit").settings)]
    for text in shown:
        assert SECRET not in text, text

    # the registry on a local folder, its options carrying the secret: files, metadata, records
    registry = registry_block.registry()
    version = registry.register("credit", {"model.txt": b"model"}, {"trainer": "lightgbm"})
    registry.set_alias("credit", "champion", version.version, reason="test")
    registry.record("credit", version.version, "validation", {"report.json": b"{}"})
    assert SECRET not in version.model_dump_json()
    assert files_holding(tmp_path / "registry", SECRET) == []
    assert mode(tmp_path / "registry") == 0o700  # a local registry root is owner-only

    # a data source read with its secret in the fsspec options; an error names no secret
    files = list_files(source.uri, "parquet", source.access())
    assert len(read_file(files[0], "parquet", access=source.access())) == 2
    with pytest.raises(Exception) as missing:
        read_file(str(source_dir / "absent.parquet"), "parquet", access=source.access())
    assert SECRET not in str(missing.value)

    # Redis refusing the password: the reader's error hides it
    with pytest.raises(OnlineStoreError) as refused:
        RedisOnlineReader(redis_url(settings.redis_connection_string), PROJECT, {"v": ["f"]}, 1)
    assert SECRET not in str(refused.value)

    captured = capsys.readouterr()
    assert SECRET not in caplog.text + captured.out + captured.err


def test_served_online_store_password_stays_off_command_lines_and_files(served: Served) -> None:
    target, predictor = served.target, served.predictor
    status, answer = post("127.0.0.1", target.settings.port, features_request(2))
    assert status == 200, answer  # the predictor reached the Redis store with the password
    row = {
        "customer_id": 9,
        "loan_amount": 1000.0,
        "term_months": 12,
        "purpose": "car",
        "missed_payments_12m": 0,
    }
    entities = json.dumps({"jsonData": {"rows": [row]}}).encode()
    status, answer = post("127.0.0.1", target.settings.port, entities)
    assert status == 404, answer  # looked up in Redis, with the password: an unknown entity
    assert not command_lines_holding(SECRET)
    commands = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in process_tree(predictor.pid)]
    assert commands and not any(b"online_store" in c for c in commands)
    deadline = time.monotonic() + 10
    while not list(target.log_dir.rglob("*.jsonl")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert list(target.log_dir.rglob("*.jsonl")), "no request log written"
    state = json.loads((target.folder / "state.json").read_text())
    assert state["predictors"] and SECRET not in json.dumps(state)
    assert files_holding(target.folder, SECRET) == []  # state, nginx, logs, request log


# -- 3. nothing is unpickled ------------------------------------------------------------------

SCANNED = ("tasks", "deployments", "flows", "blocks", "features")
UNPICKLING = {
    "pickle.load",
    "pickle.loads",
    "pickle.Unpickler",
    "_pickle.load",
    "_pickle.loads",
    "cloudpickle.load",
    "cloudpickle.loads",
    "dill.load",
    "dill.loads",
    "joblib.load",
    "pandas.read_pickle",
    "shelve.open",
    "marshal.load",
    "marshal.loads",
}
# loads that are safe only with this keyword set so (numpy's, torch's, Alibi Detect's: the
# platform also vets a detector's config before it, see tasks/monitoring/detectors.py)
SAFE_ONLY_WITH = {
    "numpy.load": ("allow_pickle", False),
    "torch.load": ("weights_only", True),
    "alibi_detect.saving.load_detector": ("enable_unsafe_loading", False),
}


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def unpickling_calls(source: str, where: str) -> list[str]:
    """`where:line: call` for every call in `source` that may unpickle."""
    tree = ast.parse(source)
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        dotted = _dotted(node.func)
        if dotted is None:
            continue
        head, _, rest = dotted.partition(".")
        full = ".".join(filter(None, [names.get(head, head), rest]))
        keywords = {
            k.arg: k.value.value for k in node.keywords if isinstance(k.value, ast.Constant)
        }
        unsafe = (
            full in UNPICKLING
            or full.startswith("skops.")
            or (full.startswith("mlflow.") and full.endswith(".load_model"))
            or (
                full in SAFE_ONLY_WITH
                and keywords.get(SAFE_ONLY_WITH[full][0], ...) is not SAFE_ONLY_WITH[full][1]
            )
        )
        if unsafe:
            found.append(f"{where}:{node.lineno}: {full}")
    return found


def test_the_scan_finds_unpickling_calls() -> None:
    source = (
        "import numpy as np\nimport pickle as p\nfrom joblib import load\nimport torch\n"
        "import pandas as pd\nfrom alibi_detect.saving import load_detector\n"
        "np.load('a')\nnp.load('b', allow_pickle=False)\np.loads(b'')\nload('m')\n"
        "torch.load('t')\ntorch.load('t', weights_only=True)\npd.read_pickle('x')\n"
        "load_detector('d')\nload_detector('d', enable_unsafe_loading=False)\n"
    )
    assert unpickling_calls(source, "x.py") == [
        "x.py:7: numpy.load",
        "x.py:9: pickle.loads",
        "x.py:10: joblib.load",
        "x.py:11: torch.load",
        "x.py:13: pandas.read_pickle",
        "x.py:14: alibi_detect.saving.load_detector",
    ]


def test_no_platform_module_unpickles() -> None:
    found = []
    modules = [p for top in SCANNED for p in sorted((ROOT / top).rglob("*.py"))]
    assert len(modules) > 50
    for path in modules:
        found += unpickling_calls(path.read_text(), str(path.relative_to(ROOT)))
    assert not found, "calls that may unpickle:\n" + "\n".join(found)


class Planted:
    """Unpickled, it creates the file `marker` (what any code in a pickle could do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str, str]]:
        return open, (str(self.marker), "w")


def test_a_planted_model_pickle_is_refused_by_every_model_loader(tmp_path: Path) -> None:
    import torch

    from tasks.registry.loading import load_model
    from tasks.registry.store import Registry

    marker = tmp_path / "unpickled"
    planted = pickle.dumps(Planted(marker))
    buffer = io.BytesIO()
    torch.save(Planted(marker), buffer)
    mlp = {
        "encoding": {
            "numeric": FEATURES,
            "categorical": [],
            "cardinalities": [],
            "means": [0.0] * 5,
            "stds": [1.0] * 5,
        },
        "model": {"embedding_dim": 2, "hidden": [4], "dropout": 0.0},
    }
    cases = {
        "lightgbm": ({"model.txt": planted}, "model.txt"),
        "torch": (
            {"model.pt": buffer.getvalue(), "model.json": json.dumps(mlp).encode()},
            "model.pt",
        ),
    }
    registry = Registry(str(tmp_path / "registry"))
    for trainer, (files, name) in cases.items():
        folder = write_version(tmp_path / trainer, files, trainer=trainer)
        with pytest.raises(ModelLoadError, match=re.escape(name)):
            load_folder(folder)  # the model server's loader
        registered = registry.register(
            trainer,
            {
                f: (folder / f).read_bytes()
                for f in json.loads((folder / "metadata.json").read_text())["files"]
            },
            {"trainer": trainer},
        )
        with pytest.raises(ModelLoadError, match=re.escape(name)):
            load_model(
                registry, trainer, registered.version
            )  # the platform's, through the registry
        assert not marker.exists(), f"{trainer}: {name} was unpickled"


def test_planted_detector_pickles_are_refused(tmp_path: Path) -> None:
    import dill

    from tasks.monitoring.detectors import (
        FEATURE_DETECTOR,
        SCORE_DETECTOR,
        DetectorLoadError,
        fit_detector_files,
        load_detectors,
        read_files,
    )

    rng = np.random.default_rng(1)
    reference = pd.DataFrame(rng.normal(size=(60, 2)), columns=["a", "b"])
    reference["c"] = rng.integers(0, 3, size=60)
    files = fit_detector_files(reference, rng.uniform(size=60), ["a", "b", "c"], ["c"])
    assert load_detectors(read_files(files)).features == ["a", "b", "c"]  # the genuine ones load

    marker = tmp_path / "unpickled"
    evil = tmp_path / "evil.dill"
    evil.write_bytes(dill.dumps(Planted(marker)))
    object_array = io.BytesIO()
    np.save(object_array, np.array([Planted(marker)], dtype=object), allow_pickle=True)
    config = files[f"{FEATURE_DETECTOR}.config.toml"].decode()
    cases = [  # (the file the error names, the planted file)
        (f"{SCORE_DETECTOR}.x_ref.npy", object_array.getvalue()),
        (  # a preprocess_fn Alibi Detect would dill.load
            f"{FEATURE_DETECTOR}.config.toml",
            config.replace('preprocess_fn = "None"', f'preprocess_fn = "{evil}"').encode(),
        ),
        (f"{FEATURE_DETECTOR}.config.toml", f'kernel = "{evil}"\n{config}'.encode()),
    ]
    for name, planted in cases:
        with pytest.raises(DetectorLoadError, match=re.escape(f"model 'credit' v3: {name}")):
            load_detectors(read_files({**files, name: planted}), where="model 'credit' v3")
        assert not marker.exists(), f"{name}: unpickled"


# -- 4. request size limits ------------------------------------------------------------------


def test_nginx_answers_an_oversized_body_413_in_json(served: Served) -> None:
    big = features_request(pad=4 * MAX_BODY_KB * 1024)
    status, answer = post("127.0.0.1", served.target.settings.port, big)
    assert status == 413, answer
    assert isinstance(answer, dict) and answer["status"]["reason"] == "TOO_LARGE", answer


def test_the_model_server_refuses_more_than_max_rows(served: Served) -> None:
    status, answer = post("127.0.0.1", served.target.settings.port, features_request(MAX_ROWS + 1))
    assert status is not None and 400 <= status < 500, answer
    assert f"the limit is {MAX_ROWS}" in json.dumps(answer), answer
    status, answer = post("127.0.0.1", served.target.settings.port, features_request(MAX_ROWS))
    assert status == 200, answer


def test_a_predictor_port_refuses_a_body_over_the_limit_itself(served: Served) -> None:
    predictor = served.predictor
    under = features_request(pad=MAX_BODY_KB * 1024 - 1024)
    status, answer = post(predictor.host, predictor.http_port, under)
    assert status == 200, answer  # a body under the limit is served
    # just over the limit, so that the whole body is sent before the answer comes back
    over = features_request(pad=MAX_BODY_KB * 1024 + 1024)
    for chunked in (False, True):
        status, answer = post(predictor.host, predictor.http_port, over, chunked=chunked)
        assert status == 413, (chunked, answer)
        assert isinstance(answer, dict) and answer["status"]["reason"] == "TOO_LARGE"
    far_over = features_request(pad=64 * MAX_BODY_KB * 1024)  # 1 MiB, a valid request
    for chunked in (False, True):
        status, answer = post(predictor.host, predictor.http_port, far_over, chunked=chunked)
        if status is not None:  # else the predictor closed the connection: refused too
            assert status == 413, (chunked, answer)
    status, answer = post(predictor.host, predictor.http_port, features_request())
    assert status == 200, answer  # still serving


# -- 5. state folders ------------------------------------------------------------------------


def test_the_serving_state_folders_are_private(served: Served) -> None:
    target = served.target
    for folder in (target.folder, target.log_dir, target.folder / "tmp"):
        assert mode(folder) == 0o700, folder
