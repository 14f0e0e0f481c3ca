"""The model registry on an MLflow tracking server's model registry, for teams that run one.

The same interface as `Registry` (tasks/registry/store.py), so the flows run unchanged:

- a model is a registered model; a version is a model version whose source is the `model/`
  artifact folder of its own run, holding the files and `metadata.json`. MLflow numbers the
  versions (one transaction on its server), so concurrent registrations get distinct numbers.
  The version is complete, and visible here, once its tag `mlops.complete` is set, after the
  last file is uploaded: a reader never sees half of one.
- evidence records are artifact folders `records/<kind>/<stamp>/` of the version's run, listed
  by a version tag `mlops.record.<kind>.<stamp>` set after their upload.
- aliases: MLflow moves its own aliases last-writer-wins, with no history. Here every move is
  appended as a model version of the companion model `<model>.aliases` (MLflow numbers them:
  an atomic, ordered log) naming the move it follows; the first entry following the current
  head wins and a later one is void, so a compare-and-swap loses nothing silently. MLflow's
  own alias is then set to the head, for its UI and other clients.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.registry.store import (
    METADATA,
    NAME,
    UNSET,
    AliasMove,
    AliasMoves,
    ModelVersion,
    RegistryError,
    _check_files,
    _check_name,
    alias_conflict,
    default_actor,
)

COMPLETE = "mlops.complete"
RECORD = "mlops.record."
LOG_SUFFIX = ".aliases"
EXPERIMENT = "mlops-registry"
MODEL_DIR = "model"


class MlflowRegistry(AliasMoves):
    """The registry on the MLflow tracking server at `tracking_uri`; downloaded version folders
    are cached under `cache_dir`."""

    local = False

    def __init__(self, tracking_uri: str, cache_dir: str | Path | None = None) -> None:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        from mlflow import MlflowClient

        self.uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        where = tracking_uri.split("://", 1)[-1].replace("/", "_").replace(":", "_")
        self.cache = Path(cache_dir or Path(tempfile.gettempdir()) / "mlops-mlflow-cache") / where
        self._metadata: dict[tuple[str, int], ModelVersion] = {}

    # -- versions --------------------------------------------------------------------------

    def register(
        self, name: str, files: Mapping[str, bytes], metadata: Mapping[str, Any]
    ) -> ModelVersion:
        _check_name(name)
        _check_files(name, files)
        self._ensure_model(name)
        run = self.client.create_run(self._experiment(), tags={"mlops.model": name})
        run_id = run.info.run_id
        made = None
        try:
            with tempfile.TemporaryDirectory() as folder:
                for file, content in files.items():
                    (Path(folder) / file).write_bytes(content)
                self.client.log_artifacts(run_id, folder, MODEL_DIR)
            source = f"runs:/{run_id}/{MODEL_DIR}"
            made = self.client.create_model_version(
                name, source, run_id=run_id, await_creation_for=0
            )
            version = ModelVersion(
                name=name,
                version=int(made.version),
                created_at=datetime.now(UTC),
                files=sorted(files),
                metadata=dict(metadata),
            )
            self._upload(run_id, MODEL_DIR, {METADATA: version.model_dump_json(indent=2).encode()})
            self.client.set_model_version_tag(name, made.version, COMPLETE, "true")
            self.client.set_terminated(run_id)
        except BaseException:
            if made is not None:  # never visible: it has no `mlops.complete` tag
                _quietly(self.client.delete_model_version, name, made.version)
            _quietly(self.client.set_terminated, run_id, "FAILED")
            raise
        return version

    def _experiment(self) -> str:
        found = self.client.get_experiment_by_name(EXPERIMENT)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(self.client.create_experiment(EXPERIMENT))
        except Exception:  # made meanwhile by another writer
            found = self.client.get_experiment_by_name(EXPERIMENT)
            if found is None:
                raise
            return str(found.experiment_id)

    def _ensure_model(self, name: str, tags: dict[str, str] | None = None) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name, tags=tags)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    def _upload(self, run_id: str, path: str, files: Mapping[str, bytes]) -> None:
        with tempfile.TemporaryDirectory() as folder:
            for file, content in files.items():
                (Path(folder) / file).write_bytes(content)
            self.client.log_artifacts(run_id, folder, path)

    def _complete(self, name: str) -> dict[int, Any]:
        """Number -> MLflow model version, of the complete versions of `name`."""
        versions = self.client.search_model_versions(f"name='{name}'")
        return {int(v.version): v for v in versions if v.tags.get(COMPLETE) == "true"}

    def _numbers(self, name: str) -> list[int]:
        return sorted(self._complete(name))

    def models(self) -> list[str]:
        found = self.client.search_registered_models()
        names = (m.name for m in found if not m.name.endswith(LOG_SUFFIX))
        return sorted(n for n in names if NAME.match(n) and self._numbers(n))

    def versions(self, name: str) -> list[ModelVersion]:
        return [self.get(name, n) for n in self._numbers(name)]

    def resolve(self, name: str, ref: int | str) -> int:
        if isinstance(ref, int) or str(ref).isdigit():
            number, known = int(ref), self._numbers(name)
            if number not in known:
                raise RegistryError(f"model '{name}' has no version {number}; versions: {known}")
            return number
        aliases = self.aliases(name)
        if ref not in aliases:
            raise RegistryError(f"model '{name}' has no alias '{ref}'; aliases: {aliases}")
        return aliases[str(ref)]

    def _run_id(self, name: str, number: int) -> str:
        return str(self.client.get_model_version(name, str(number)).run_id)

    def get(self, name: str, ref: int | str) -> ModelVersion:
        number = self.resolve(name, ref)
        if (name, number) not in self._metadata:  # versions never change: read once
            raw = (Path(self.version_path(name, number)) / METADATA).read_text()
            self._metadata[name, number] = ModelVersion.model_validate_json(raw)
        return self._metadata[name, number]

    def version_path(self, name: str, ref: int | str) -> str:
        """A local folder holding the version's files and metadata (downloaded once, whole,
        then renamed into the cache)."""
        number = self.resolve(name, ref)
        target = self.cache / name / str(number)
        if not (target / METADATA).is_file():
            staging = target.with_name(f".{number}.{uuid.uuid4().hex}")
            staging.mkdir(parents=True)
            try:
                self.client.download_artifacts(self._run_id(name, number), MODEL_DIR, str(staging))
                try:
                    os.rename(staging / MODEL_DIR, target)
                except OSError:
                    if not (target / METADATA).is_file():
                        raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return str(target)

    def read(self, name: str, ref: int | str, file: str) -> bytes:
        return (Path(self.version_path(name, ref)) / file).read_bytes()

    def file_uri(self, name: str, ref: int | str, file: str) -> str:
        return str(Path(self.version_path(name, ref)) / file)

    def version_uri(self, name: str, ref: int | str) -> str:
        """The version's artifact folder on the server's artifact store (a cluster reads it)."""
        run = self.client.get_run(self._run_id(name, self.resolve(name, ref)))
        return f"{run.info.artifact_uri}/{MODEL_DIR}"

    # -- records ---------------------------------------------------------------------------

    def record(self, name: str, ref: int | str, kind: str, files: Mapping[str, bytes]) -> str:
        if not NAME.match(kind):
            raise RegistryError(f"invalid record kind '{kind}'")
        _check_files(name, files)
        number = self.resolve(name, ref)
        stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:6]}"
        self._upload(self._run_id(name, number), f"records/{kind}/{stamp}", files)
        self.client.set_model_version_tag(name, str(number), f"{RECORD}{kind}.{stamp}", "true")
        return stamp

    def records(self, name: str, ref: int | str, kind: str) -> list[str]:
        number = self.resolve(name, ref)
        tags = self.client.get_model_version(name, str(number)).tags
        prefix = f"{RECORD}{kind}."
        return sorted(t[len(prefix) :] for t in tags if t.startswith(prefix))

    def read_record(self, name: str, ref: int | str, kind: str, stamp: str, file: str) -> bytes:
        number = self.resolve(name, ref)
        if stamp not in self.records(name, number, kind):
            raise RegistryError(f"model '{name}' v{number}: no {kind} record {stamp}")
        with tempfile.TemporaryDirectory() as folder:
            path = self.client.download_artifacts(
                self._run_id(name, number), f"records/{kind}/{stamp}/{file}", folder
            )
            return Path(path).read_bytes()

    def record_uri(self, name: str, ref: int | str, kind: str, stamp: str, file: str) -> str:
        number = self.resolve(name, ref)
        run = self.client.get_run(self._run_id(name, number))
        return f"{run.info.artifact_uri}/records/{kind}/{stamp}/{file}"

    # -- aliases ---------------------------------------------------------------------------

    def _log(self, name: str) -> list[tuple[int, dict[str, str]]]:
        """The alias log of `name`: (entry number, tags), oldest first."""
        found = self.client.search_model_versions(f"name='{name}{LOG_SUFFIX}'")
        return sorted((int(v.version), dict(v.tags)) for v in found)

    def _chains(self, name: str) -> dict[str, list[tuple[int, AliasMove]]]:
        """Per alias, its accepted moves: each follows the previous accepted one."""
        chains: dict[str, list[tuple[int, AliasMove]]] = {}
        for entry, tags in self._log(name):
            chain = chains.setdefault(tags["alias"], [])
            head = chain[-1][0] if chain else 0
            if int(tags["after"]) == head:
                move = AliasMove.model_validate_json(tags["move"])
                chain.append((entry, move.model_copy(update={"seq": len(chain) + 1})))
        return chains

    def aliases(self, name: str) -> dict[str, int]:
        heads = {a: chain[-1][1].version for a, chain in self._chains(name).items() if chain}
        return dict(sorted((a, v) for a, v in heads.items() if v is not None))

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasMove]:
        chains = self._chains(name)
        wanted = [alias] if alias else sorted(chains)
        return [move for a in wanted for _, move in chains.get(a, [])]

    def set_alias(
        self,
        name: str,
        alias: str,
        ref: int | str | None,
        *,
        expected: int | None = UNSET,
        by: str | None = None,
        reason: str = "",
    ) -> int | None:
        if not NAME.match(alias):
            raise RegistryError(f"invalid alias '{alias}' (lowercase letters, digits, - and _)")
        number = None if ref is None else self.resolve(name, ref)
        self._ensure_model(f"{name}{LOG_SUFFIX}", tags={"mlops.kind": "alias-log"})
        while True:
            chain = self._chains(name).get(alias, [])
            head, current = chain[-1] if chain else (0, None)
            now = None if current is None else current.version
            if expected is not UNSET and now != expected:
                raise alias_conflict(name, alias, now, expected, current)
            if current is None and number is None:
                return None
            move = AliasMove(
                alias=alias,
                version=number,
                previous=now,
                seq=len(chain) + 1,
                at=datetime.now(UTC),
                by=by or default_actor(),
                reason=reason,
            )
            run_id = self._run_id(name, number if number is not None else now)  # type: ignore[arg-type]
            entry = self.client.create_model_version(  # an entry is tied to the version it names
                f"{name}{LOG_SUFFIX}",
                f"runs:/{run_id}/{MODEL_DIR}",
                run_id=run_id,
                tags={"alias": alias, "after": str(head), "move": move.model_dump_json()},
                await_creation_for=0,
            )
            accepted = self._chains(name).get(alias, [])
            if any(e == int(entry.version) for e, _ in accepted):
                self._mirror(name, alias)
                return number

    def _mirror(self, name: str, alias: str) -> None:
        """MLflow's own alias follows the log's head (for its UI and other clients), set again
        if the head moved while it was being set."""
        while True:
            chain = self._chains(name).get(alias, [])
            version = chain[-1][1].version if chain else None
            if version is None:
                _quietly(self.client.delete_registered_model_alias, name, alias)
            else:
                self.client.set_registered_model_alias(name, alias, str(version))
            chain = self._chains(name).get(alias, [])
            if (chain[-1][1].version if chain else None) == version:
                return


def _quietly(call: Any, *args: Any) -> None:
    """Cleanup after a failure: the failure itself is what propagates."""
    with contextlib.suppress(Exception):
        call(*args)
