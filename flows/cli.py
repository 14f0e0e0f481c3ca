"""`mlops`: list and run the registered flows and datasets, manage the local Prefect server."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError


def parse_params(pairs: Sequence[str], model: type[BaseModel]) -> BaseModel:
    """`key=value` pairs (values read as YAML scalars or lists) into the flow's parameter model."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--param expects key=value, got '{pair}'")
        values[key] = yaml.safe_load(raw) if raw else None
    return validate_params(values, model)


def validate_params(values: dict[str, Any], model: type[BaseModel]) -> BaseModel:
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'params'}: {e['msg']}" for e in exc.errors()
        )
        raise SystemExit(f"invalid parameters for {model.__name__}: {problems}") from exc


def describe_params(model: type[BaseModel]) -> list[str]:
    lines = []
    for name, field in model.model_fields.items():
        annotation = getattr(field.annotation, "__name__", None) or str(field.annotation)
        default = field.get_default(call_default_factory=True)
        lines.append(f"    {name}: {annotation} = {default!r}  {field.description or ''}".rstrip())
    return lines


def cmd_flows(_: argparse.Namespace) -> None:
    from flows import FLOWS

    for name, entry in FLOWS.items():
        print(f"{name}\n  {entry.summary}\n  entrypoint: {entry.entrypoint}\n  parameters:")
        print("\n".join(describe_params(entry.params)))


def cmd_datasets(args: argparse.Namespace) -> None:
    from tasks.specs.datasets import DATASETS_ROOT, list_datasets

    if args.action == "init":
        from pathlib import Path

        from blocks import DataSource, load_or_default
        from tasks.specs.inference import write_starter_spec

        if not args.name or not args.sample:
            raise SystemExit("usage: mlops datasets init NAME --from FILE [--data-source BLOCK]")
        source = load_or_default(DataSource, args.data_source, DataSource(uri=args.sample))
        access = source.access()
        out = Path(args.out) if args.out else DATASETS_ROOT / args.name / "dataset.yaml"
        print(f"wrote {write_starter_spec(args.name, args.sample, out, access)}")
        return

    for spec in list_datasets():
        tables = ", ".join(spec.tables)
        features = ", ".join(spec.feature_tables)
        print(
            f"{spec.name}\n  {spec.description}\n  entities: "
            f"{ {n: e.join_keys for n, e in spec.entities.items()} }; "
            f"label: {spec.label.table}.{spec.label.column}\n"
            f"  tables: {tables}\n  feature tables: {features}\n  source: {spec.source.uri}"
        )


def cmd_run(args: argparse.Namespace) -> None:
    from flows import FLOWS

    if args.name not in FLOWS:
        raise SystemExit(f"unknown flow '{args.name}'; registered: {', '.join(FLOWS)}")
    run_flow(args, FLOWS[args.name], parse_params(args.param or [], FLOWS[args.name].params))


def run_flow(args: argparse.Namespace, entry: Any, params: BaseModel) -> None:
    """Run a registered flow against the server (`_with_server`); print its result."""
    result = _with_server(args, lambda: entry.flow(params))
    print(json.dumps(_jsonable(result), indent=2, default=str))


def cmd_generate(args: argparse.Namespace) -> None:
    pairs = [f"{k}={v}" for k, v in vars(args).items() if k in _GENERATE_FIELDS and v is not None]
    args.name, args.param = "generate-data", pairs
    cmd_run(args)


def cmd_demo(args: argparse.Namespace) -> None:
    """The whole loop on embedded defaults (flows/demo.py)."""
    from flows.demo import DEMO_ROWS, run_demo

    run_demo(rows=args.rows or DEMO_ROWS, regenerate=args.regenerate)


def cmd_models(args: argparse.Namespace) -> None:
    from blocks import ModelRegistry, load_or_default
    from tasks.registry.store import Registry, RegistryError

    words = list(args.words or [])
    if words[:1] in (["promote"], ["rollback"]):
        _change_champion(args, words)
        return
    if len(words) > 2:
        raise SystemExit(f"mlops models: too many arguments {words}")
    name, ref = [*words, None, None][:2]
    if args.lineage and ref is None:
        raise SystemExit("mlops models NAME REF --lineage: which version (a number or an alias)")
    if args.history and (name is None or (ref is not None and ref.isdigit())):
        raise SystemExit("mlops models NAME [ALIAS] --history: which model (and alias)")
    if args.root:
        registry = Registry(args.root)
    else:
        registry = load_or_default(ModelRegistry, args.registry_block, ModelRegistry()).registry()
    try:
        if name is None:
            for model in registry.models():
                versions = registry.versions(model)
                print(f"{model}: {len(versions)} version(s), aliases {registry.aliases(model)}")
        elif ref is None:
            aliases = registry.aliases(name)
            for v in registry.versions(name):
                tags = [a for a, n in aliases.items() if n == v.version]
                decision = _last_decision(registry, name, v.version)
                print(
                    f"{name} v{v.version}  {v.created_at:%Y-%m-%d %H:%M}  {tags or ''}"
                    f"  validation: {decision.get('decision', '-')}"
                )
        elif args.history:
            for move in registry.alias_history(name, ref):
                print(_move_line(move))
        elif args.lineage:
            _print_lineage(registry, name, registry.resolve(name, ref))
        else:
            version = registry.get(name, ref)
            print(version.model_dump_json(indent=2))
            for kind in ("validation", "decision", "rollout"):
                print(f"{kind} records: {registry.records(name, version.version, kind)}")
            print("last decision:", json.dumps(_last_decision(registry, name, version.version)))
    except RegistryError as exc:
        raise SystemExit(str(exc)) from exc


def _move_line(move: Any) -> str:
    def at(version: int | None) -> str:
        return "-" if version is None else f"v{version}"

    reason = f"  reason: {json.dumps(move.reason)}" if move.reason else ""
    return (
        f"{move.at:%Y-%m-%d %H:%M:%S}  {move.alias} #{move.seq}: {at(move.previous)} -> "
        f"{at(move.version)}  by {move.by}{reason}"
    )


def _print_lineage(registry: Any, name: str, version: int) -> None:
    """event -> flow runs (UI links) -> version -> gates -> rollout decision."""
    from prefect.settings import PREFECT_UI_URL

    from tasks.monitoring.lineage import lineage_lines, read_lineage

    lineage = read_lineage(registry, name, version)
    if lineage is None:
        cause = registry.get(name, version).metadata.get("cause")
        print(f"{name} v{version}: no lineage record (not made by a retraining); cause: {cause}")
        return
    for line in lineage_lines(lineage, PREFECT_UI_URL.value()):
        print(line)


def cmd_pipeline_updated(args: argparse.Namespace) -> None:
    """CI after `prefect deploy --all`: one `mlops.pipeline.updated` event per changed pipeline
    (a trigger in prefect.yaml retrains the served models on it), sent through a connected
    events client: a server that cannot be reached fails the step."""
    import asyncio
    from pathlib import Path

    from prefect.events import Event, Resource
    from prefect.events.clients import get_events_client
    from prefect.settings import PREFECT_API_URL

    from flows import FLOWS
    from flows.changes import EVENT, changed_files, changed_pipelines

    if not PREFECT_API_URL.value():
        raise SystemExit("PREFECT_API_URL is not set: no server to announce the pipelines to")
    root = Path(__file__).resolve().parents[1]
    files = changed_files(args.before, args.commit, root)
    entrypoints = {name: f.entrypoint for name, f in FLOWS.items()}
    changed = (
        changed_pipelines(files, entrypoints, root)
        if files is not None
        else {name: ["(no earlier commit: every file)"] for name in FLOWS}
    )
    events = [
        Event(
            event=EVENT,
            resource=Resource(
                {
                    "prefect.resource.id": f"mlops.pipeline.{name}",
                    "prefect.resource.name": name,
                    "mlops.commit": args.commit,
                }
            ),
            payload={
                "pipeline": name,
                "commit": args.commit,
                "before": args.before,
                "files": names[:50],
                "pipelines": sorted(changed),
            },
        )
        for name, names in changed.items()
    ]

    async def send() -> None:
        async with get_events_client() as client:
            for event in events:
                await client.emit(event)

    asyncio.run(send())
    for event in events:
        name = event.payload["pipeline"]
        files_changed = len(event.payload["files"])
        print(f"{EVENT} {name} at {args.commit[:12]}: {files_changed} file(s) {event.id}")
    if not changed:
        print(f"no pipeline changed between {args.before[:12]} and {args.commit[:12]}")


def cmd_approve(args: argparse.Namespace) -> None:
    """Answer a validation run waiting for approval (suspended or paused), as the UI's form does."""
    from flows.approval import ApprovalError, approve

    try:
        answer = _with_server(
            args, lambda: approve(args.run_id, not args.reject, args.reviewer, args.comment)
        )
    except ApprovalError as exc:
        raise SystemExit(f"mlops: error: {exc}") from exc
    verdict = "approved" if answer.approve else "rejected"
    print(f"flow run {args.run_id}: {verdict} by {answer.reviewer}; it resumes on its worker")


def cmd_labels(args: argparse.Namespace) -> None:
    """Back-fill labels from a file into a model's labels log (joined by request id)."""
    from blocks import ServingTarget, load_or_default
    from tasks.monitoring.accuracy import import_labels

    block = load_or_default(ServingTarget, args.target_block, ServingTarget())
    try:
        count = import_labels(args.file, block.log_dir(args.model), args.model)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"mlops labels: {exc}") from exc
    print(f"{count} label(s) appended to {block.log_dir(args.model)}/labels")


def _change_champion(args: argparse.Namespace, words: list[str]) -> None:
    """`models promote NAME VERSION --reason ...` / `models rollback NAME --reason ...`: the
    deployment flow's manual actions, recorded as its rollouts are."""
    action = words[0]
    expected = 3 if action == "promote" else 2
    if len(words) != expected or (action == "promote" and not words[2].isdigit()):
        usage = "promote NAME VERSION" if action == "promote" else "rollback NAME"
        raise SystemExit(f"usage: mlops models {usage} --reason TEXT")
    values: dict[str, Any] = {
        "action": action,
        "model_name": words[1],
        "reason": args.reason or "",
        "actor": f"{os.environ.get('USER', 'cli')} (mlops models {action})",
    }
    if action == "promote":
        values["version"] = int(words[2])
    for key in ("registry_block", "target_block", "policy_block"):
        if getattr(args, key):
            values[key] = getattr(args, key)
    from flows import FLOWS

    entry = FLOWS["deployment"]
    run_flow(args, entry, validate_params(values, entry.params))


def cmd_serving(args: argparse.Namespace) -> None:
    """What the local serving target runs (predictors, routing, nginx), or stop it by pid."""
    from pathlib import Path

    from blocks import ServingTarget, load_or_default
    from tasks.serving.local_target import LocalTarget, http_json

    block = load_or_default(ServingTarget, args.target_block, ServingTarget())
    root = Path(block.state_dir)
    names = [args.name] if args.name else sorted(p.name for p in root.glob("*") if p.is_dir())
    for name in names:
        target = LocalTarget(block.local_settings(), name)
        if args.action == "stop":
            print(f"{name}: stopped pids {target.stop_all()}")
            continue
        routing = target.routing()
        nginx = target.nginx_pid()
        print(f"{name}: {target.url if nginx else 'no ingress'} (nginx pid {nginx})")
        print(f"  routing: {routing}")
        for p in target.predictors():
            try:
                status, _ = http_json(f"{p.url}/health/status", timeout=2)
                health = "healthy" if status == 200 else f"HTTP {status}"
            except OSError as exc:
                health = f"no answer ({exc})"
            print(
                f"  {p.role:<7} v{p.version}  pid {p.pid}  http {p.http_port}  "
                f"metrics {p.metrics_port}  {health}"
            )
    if not names:
        print(f"nothing served (no model under {root})")


def _last_decision(registry: Any, name: str, version: int) -> dict[str, Any]:
    stamps = registry.records(name, version, "decision")
    if not stamps:
        return {}
    return dict(
        json.loads(registry.read_record(name, version, "decision", stamps[-1], "decision.json"))
    )


def cmd_feast(args: argparse.Namespace) -> None:
    from tasks.feature_store.store import FeatureStoreError, run_feast_cli

    try:
        print(run_feast_cli(args.repo, args.action, args.data_root))
    except FeatureStoreError as exc:
        raise SystemExit(str(exc)) from exc


def cmd_server(args: argparse.Namespace) -> None:
    from flows.local_server import default_server, default_worker

    server, worker = default_server(), default_worker()
    if args.action == "start":
        server.start()
        print(f"Prefect server up: {server.ui_url} (API {server.api_url}, home {server.home})")
    elif args.action == "stop":
        if server.healthy():  # the worker's flow runs are in their own sessions: end them too
            from prefect.settings import PREFECT_API_URL, temporary_settings

            from flows.local_server import cancel_active_runs

            with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
                ended = cancel_active_runs(timeout=20)
            if ended:
                print(f"cancelled flow runs still going: {ended}")
        worker.stop()
        server.stop()
        print("Prefect worker and server stopped")
    else:
        print(f"{server.ui_url}: {'up' if server.healthy() else 'down'}")


def _server(args: argparse.Namespace) -> Any:
    if getattr(args, "no_server", False) or os.environ.get("PREFECT_API_URL"):
        return None
    from flows.local_server import default_server

    return default_server()


def _with_server(args: argparse.Namespace, job: Any) -> Any:
    """Run `job` against the local server (started if needed) unless an API URL is set."""
    server = _server(args)
    if server is None:
        return job()
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server.start()
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        return job()


def _jsonable(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


_GENERATE_FIELDS = (
    "dataset",
    "rows",
    "seed",
    "out_uri",
    "chunk_rows",
    "dirty_rate",
    "drift_start",
    "covariate_drift",
    "concept_drift",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlops", description=__doc__)
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks (the run's log has them anyway)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("flows", help="list registered flows and their parameters").set_defaults(
        func=cmd_flows
    )
    datasets = sub.add_parser("datasets", help="list dataset specs, or `init` a starter spec")
    datasets.add_argument("action", nargs="?", choices=["list", "init"], default="list")
    datasets.add_argument("name", nargs="?", help="with init: the new dataset's name")
    datasets.add_argument(
        "--from", dest="sample", help="with init: a sample Parquet/CSV file (path or fsspec URI)"
    )
    datasets.add_argument(
        "--data-source",
        dest="data_source",
        help="with init: a saved DataSource block whose storage options and secret open --from",
    )
    datasets.add_argument("--out", help="with init: where to write (default features/NAME/)")
    datasets.set_defaults(func=cmd_datasets)

    run = sub.add_parser("run", help="run a registered flow")
    run.add_argument("name")
    run.add_argument("--param", action="append", metavar="KEY=VALUE")
    run.add_argument("--no-server", action="store_true", help="run without the local server")
    run.set_defaults(func=cmd_run)

    gen = sub.add_parser("generate-data", help="generate a dataset's synthetic raw tables")
    gen.add_argument("--dataset")
    gen.add_argument("--rows", type=int)
    gen.add_argument("--seed", type=int)
    gen.add_argument("--out-uri", dest="out_uri")
    gen.add_argument("--chunk-rows", dest="chunk_rows", type=int)
    gen.add_argument("--dirty-rate", dest="dirty_rate", type=float)
    gen.add_argument("--drift-start", dest="drift_start", help="YYYY-MM-DD")
    gen.add_argument("--covariate-drift", dest="covariate_drift", help="[col,col]")
    gen.add_argument("--concept-drift", dest="concept_drift", action="store_const", const="true")
    gen.add_argument("--no-server", action="store_true")
    gen.set_defaults(func=cmd_generate)

    demo = sub.add_parser("demo", help="the main job on embedded defaults")
    demo.add_argument("--rows", type=int, help="generated card transactions (default 500,000)")
    demo.add_argument("--regenerate", action="store_true", help="generate the data again")
    demo.set_defaults(func=cmd_demo)

    models = sub.add_parser(
        "models",
        help="list models, a model's versions or one version; promote or roll back by hand",
        usage="mlops models [NAME [REF [--lineage]]] | NAME [ALIAS] --history | "
        "promote NAME VERSION --reason TEXT | rollback NAME --reason TEXT",
    )
    models.add_argument("words", nargs="*", help="NAME [REF], or promote/rollback and theirs")
    models.add_argument("--reason", default=None, help="promote/rollback: why (recorded)")
    models.add_argument("--registry-block", dest="registry_block", default=None)
    models.add_argument("--target-block", dest="target_block", default=None)
    models.add_argument("--policy-block", dest="policy_block", default=None)
    models.add_argument("--root", default=None, help="a registry root URI (overrides the block)")
    models.add_argument("--no-server", action="store_true")
    models.add_argument(
        "--history", action="store_true", help="NAME [ALIAS]: every alias move, who and why"
    )
    models.add_argument(
        "--lineage", action="store_true", help="NAME REF: event -> runs -> gates -> rollout"
    )
    models.set_defaults(func=cmd_models)

    updated = sub.add_parser(
        "pipeline-updated", help="CI: emit mlops.pipeline.updated for each pipeline a push changed"
    )
    updated.add_argument("--before", required=True, help="the commit before the push")
    updated.add_argument("--commit", required=True, help="the pushed commit")
    updated.set_defaults(func=cmd_pipeline_updated)

    approval = sub.add_parser(
        "approve", help="answer a validation run waiting for a reviewer (approve, or --reject)"
    )
    approval.add_argument("run_id", help="the validation flow run's id (its page in the UI)")
    approval.add_argument("--reviewer", required=True, help="who decides (recorded)")
    approval.add_argument("--reject", action="store_true", help="reject the candidate")
    approval.add_argument("--comment", default="", help="why (recorded)")
    approval.set_defaults(func=cmd_approve)

    labels = sub.add_parser(
        "labels", help="back-fill observed outcomes (request_id,label[,row]; CSV or Parquet)"
    )
    labels.add_argument("file")
    labels.add_argument("--model", required=True)
    labels.add_argument("--target-block", dest="target_block", default=None)
    labels.add_argument("--no-server", action="store_true")
    labels.set_defaults(func=cmd_labels)

    serving = sub.add_parser("serving", help="the local serving target: status, or stop it")
    serving.add_argument("action", choices=["status", "stop"])
    serving.add_argument("name", nargs="?", help="a model (default: every served model)")
    serving.add_argument("--target-block", dest="target_block", default=None)
    serving.set_defaults(func=cmd_serving)

    feast = sub.add_parser("features", help="feast plan / apply on the feature repository")
    feast.add_argument("action", choices=["plan", "apply"])
    feast.add_argument("--repo", default="features")
    feast.add_argument("--data-root", dest="data_root", default=None)
    feast.set_defaults(func=cmd_feast)

    server = sub.add_parser("server", help="the local Prefect server (stop: its worker too)")
    server.add_argument("action", choices=["start", "stop", "status"])
    server.set_defaults(func=cmd_server)
    return parser


# Exit codes (README, "The flow registry and the CLI"): 1 is an unexpected error (a bug).
EXIT_BAD_PARAMETERS = 2
EXIT_DATA_REJECTED = 3
EXIT_INFRASTRUCTURE = 4


def exit_code(exc: BaseException) -> int:
    """What kind of failure `exc` is, as the CLI's exit code."""
    from pydantic import ValidationError as ParamsError

    from deployments.predictor import ModelLoadError
    from tasks.data.raw_checks import DataValidationError
    from tasks.feature_store.definitions import FeatureStoreError
    from tasks.feature_store.skew import SkewError
    from tasks.registry.store import RegistryError
    from tasks.specs.dataset_spec import SpecError
    from tasks.training.training_set import TrainingDataError
    from tasks.validation.holdout import HoldoutError

    data = (DataValidationError, SkewError, TrainingDataError, HoldoutError, ModelLoadError)
    if isinstance(exc, data):  # before FeatureStoreError: a SkewError is one
        return EXIT_DATA_REJECTED
    # FileExistsError: a file it will not overwrite, e.g. `datasets init` onto a spec
    params = (SystemExit, ParamsError, SpecError, RegistryError, FeatureStoreError)
    if isinstance(exc, (*params, FileExistsError)):
        return EXIT_BAD_PARAMETERS
    if isinstance(exc, OSError | TimeoutError) or type(exc).__module__.startswith(
        ("httpx", "httpcore", "sqlite3", "sqlalchemy", "distributed", "redis")
    ):
        return EXIT_INFRASTRUCTURE
    return 1


class _WithoutTraceback(logging.Formatter):
    """A console formatter that prints a record's message but not its traceback: the run's
    log on the Prefect server keeps it (its handler formats the same record in full)."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def quiet_console_tracebacks() -> None:
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger(), *map(logging.getLogger, logging.root.manager.loggerDict)]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, PrefectConsoleHandler) and not isinstance(
                handler.formatter, _WithoutTraceback
            ):
                handler.setFormatter(_WithoutTraceback(handler.formatter))


def main(argv: Sequence[str] | None = None) -> None:
    # Dask's scheduler (in this process) and workers (inheriting the environment) log every
    # connection at INFO; keep the console readable.
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    logging.getLogger("distributed").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    if args.debug:
        args.func(args)
        return
    quiet_console_tracebacks()
    try:
        args.func(args)
    except (Exception, SystemExit) as exc:
        if isinstance(exc, SystemExit) and not isinstance(exc.code, str):
            raise
        message = exc.code if isinstance(exc, SystemExit) else f"{type(exc).__name__}: {exc}"
        print(f"mlops: error: {message}", file=sys.stderr)
        code = exit_code(exc)
        if code == 1:
            print("(an unexpected error: run with --debug for the traceback)", file=sys.stderr)
        raise SystemExit(code) from None


if __name__ == "__main__":
    main(sys.argv[1:])
