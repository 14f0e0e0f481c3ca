"""The model registry: numbered, immutable versions per model name, and movable aliases.

Layout under the root (a local folder, or s3://):

    <model>/versions/<n>/metadata.json        what trained it, on what, with which results
    <model>/versions/<n>/<files>              the model file(s), reference sample ... (local)
    <model>/files/<id>/<files>                the same on an object store (`location` says which)
    <model>/versions/<n>/records/<kind>/<t>   evidence added later (validation, ...), at time t
    <model>/aliases/<alias>.json              the version an alias points to, who moved it, why
    <model>/alias-history/<alias>/<seq>.json  every move of the alias, in order

A version is written completely before it is claimed, so a reader never sees half of one.
Locally the claim renames the staging folder to the next free number (rename(2) onto an
existing version fails). On an object store, where a rename is a copy then a delete, the files
stay in their own folder and the claim is a create-if-absent PUT of the version's
`metadata.json`. Aliases move by compare-and-swap on their document (link and lock locally,
If-Match on S3), and every move lands in the alias history. Nothing is overwritten in place.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import socket
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import fsspec
from pydantic import BaseModel, ConfigDict, Field

from tasks.processes import private_dir
from tasks.registry.objects import ConditionalWritesUnsupported, conditional_objects

NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
METADATA = "metadata.json"
UNSET: Any = object()  # `expected` not given: the move happens whatever the alias holds


class RegistryError(ValueError):
    """A registry request that cannot be served; the message names the model and version."""


class AliasConflict(RegistryError):
    """An alias was not where the mover expected it (someone else moved it first)."""


class ModelVersion(BaseModel):
    """Metadata of one registered version (what `metadata.json` holds)."""

    model_config = ConfigDict(extra="allow")

    name: str
    version: int = Field(ge=1)
    created_at: datetime
    files: list[str]
    metadata: dict[str, Any] = Field(default_factory=dict)
    location: str | None = None  # the files' folder under the model, if not the version's own


class AliasMove(BaseModel):
    """One move of an alias: the alias document, and one entry of its history."""

    alias: str
    version: int | None  # None: removed
    previous: int | None
    seq: int = Field(ge=0)
    at: datetime
    by: str
    reason: str = ""


def default_actor() -> str:
    """Who moves an alias when the caller does not say: user@host (pid)."""
    return f"{getpass.getuser()}@{socket.gethostname()} (pid {os.getpid()})"


class AliasMoves:
    """What every registry backend derives from its `aliases` and `set_alias`."""

    def aliases(self, name: str) -> dict[str, int]:
        raise NotImplementedError

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
        raise NotImplementedError

    def advance_alias(self, name: str, alias: str, version: int, *, by: str, reason: str) -> int:
        """Move `alias` forward to `version`, never back past a newer version another writer put
        there; returns where the alias points afterwards."""
        while True:
            now = self.aliases(name).get(alias)
            if now is not None and now >= version:
                return now
            try:
                self.set_alias(name, alias, version, expected=now, by=by, reason=reason)
                return version
            except AliasConflict:
                continue

    def remove_alias(
        self,
        name: str,
        alias: str,
        *,
        expected: int | None = UNSET,
        by: str | None = None,
        reason: str = "",
    ) -> None:
        """Remove `alias` (nothing if it is not set); the removal is kept in its history."""
        self.set_alias(name, alias, None, expected=expected, by=by, reason=reason)


def alias_conflict(
    name: str, alias: str, now: int | None, expected: int | None, current: AliasMove | None
) -> AliasConflict:
    def where(version: int | None) -> str:
        return "nothing" if version is None else f"v{version}"

    moved = f"moved by {current.by} at {current.at}" if current else "never moved"
    return AliasConflict(
        f"model '{name}': alias '{alias}' points to {where(now)}, not {where(expected)} as "
        f"expected ({moved}); nothing changed"
    )


class Registry(AliasMoves):
    """A model registry rooted at `root` (a local path or s3:// URI; `storage_options` go to
    fsspec). RegistryError for a store without conditional writes."""

    def __init__(self, root: str, storage_options: Mapping[str, Any] | None = None) -> None:
        self.fs, self.root = fsspec.core.url_to_fs(root, **dict(storage_options or {}))
        self.uri = root
        self.local = _is_local(self.fs)
        try:
            self.objects = conditional_objects(self.fs, self.root, root)
        except ConditionalWritesUnsupported as exc:
            raise RegistryError(str(exc)) from exc

    def _dir(self, *parts: object) -> str:
        return "/".join([self.root.rstrip("/"), *(str(p) for p in parts)])

    def _ls(self, folder: str) -> list[str]:
        """Names in `folder` ([] if absent), read afresh from the store."""
        self.fs.invalidate_cache(folder)
        if not self.fs.exists(folder):
            return []
        return [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(folder, detail=False)]

    def register(
        self,
        name: str,
        files: Mapping[str, bytes],
        metadata: Mapping[str, Any],
    ) -> ModelVersion:
        """Store `files` and `metadata` as the next version of `name`; returns its metadata."""
        _check_name(name)
        _check_files(name, files)
        staging = self._staged(name, files)
        try:
            version = self._claim(name, staging, dict(metadata), sorted(files))
        except BaseException:
            self.fs.rm(staging, recursive=True)
            raise
        return version

    def _staged(self, name: str, files: Mapping[str, bytes]) -> str:
        """A new folder holding `files`: hidden staging locally (under a root made owner-only,
        0700, on the first write), `files/<id>` on a store."""
        if self.local:
            private_dir(self.root)
        key = uuid.uuid4().hex
        staging = self._dir(name, f".staging-{key}" if self.local else f"files/{key}")
        try:
            self.fs.makedirs(staging, exist_ok=False)
            for file, content in files.items():
                with self.fs.open(f"{staging}/{file}", "wb") as fh:
                    fh.write(content)
        except BaseException:
            if self.fs.exists(staging):
                self.fs.rm(staging, recursive=True)
            raise
        return staging

    def record(self, name: str, ref: int | str, kind: str, files: Mapping[str, bytes]) -> str:
        """Attach evidence (`kind`: validation, ...) to a version without changing it.

        Written completely, then claimed under a fresh timestamp; returns that timestamp.
        """
        if not NAME.match(kind):
            raise RegistryError(f"invalid record kind '{kind}'")
        _check_files(name, files)
        folder = self._dir(name, "versions", self.resolve(name, ref), "records", kind)
        staging = self._staged(name, files)
        try:
            self.fs.makedirs(folder, exist_ok=True)
            while True:
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
                if self.local:
                    try:
                        _rename_exclusive(staging, f"{folder}/{stamp}")
                        return stamp
                    except FileExistsError:
                        continue
                pointer = json.dumps({"location": _location(staging)}).encode()
                if self.objects.create(f"{folder}/{stamp}.json", pointer):
                    return stamp
        except BaseException:
            if self.fs.exists(staging):
                self.fs.rm(staging, recursive=True)
            raise

    def records(self, name: str, ref: int | str, kind: str) -> list[str]:
        """Timestamps of a version's records of `kind`, oldest first."""
        folder = self._dir(name, "versions", self.resolve(name, ref), "records", kind)
        names = self._ls(folder)
        return sorted(names if self.local else (n[:-5] for n in names if n.endswith(".json")))

    def _record_dir(self, name: str, ref: int | str, kind: str, stamp: str) -> str:
        folder = self._dir(name, "versions", self.resolve(name, ref), "records", kind)
        if self.local:
            return f"{folder}/{stamp}"
        found = self.objects.read(f"{folder}/{stamp}.json")
        if found is None:
            raise RegistryError(f"model '{name}' v{ref}: no {kind} record {stamp}")
        return self._dir(name, json.loads(found[0])["location"])

    def record_uri(self, name: str, ref: int | str, kind: str, stamp: str, file: str) -> str:
        return self._uri(f"{self._record_dir(name, ref, kind, stamp)}/{file}")

    def read_record(self, name: str, ref: int | str, kind: str, stamp: str, file: str) -> bytes:
        with self.fs.open(f"{self._record_dir(name, ref, kind, stamp)}/{file}", "rb") as fh:
            return bytes(fh.read())

    def _uri(self, path: str) -> str:
        return path if self.local else self.fs.unstrip_protocol(path)

    def _claim(
        self, name: str, staging: str, metadata: dict[str, Any], files: list[str]
    ) -> ModelVersion:
        self.fs.makedirs(self._dir(name, "versions"), exist_ok=True)
        number = max(self._numbers(name), default=0) + 1
        while True:
            version = ModelVersion(
                name=name,
                version=number,
                created_at=datetime.now(UTC),
                files=files,
                metadata=metadata,
                location=None if self.local else _location(staging),
            )
            text = version.model_dump_json(indent=2, exclude_none=True)
            with self.fs.open(f"{staging}/{METADATA}", "w") as fh:
                fh.write(text)
            target = self._dir(name, "versions", number)
            if self.local:
                try:
                    _rename_exclusive(staging, target)
                    return version
                except FileExistsError:
                    pass
            elif self.objects.create(f"{target}/{METADATA}", text.encode()):
                return version
            number += 1

    def _numbers(self, name: str) -> list[int]:
        return [int(n) for n in self._ls(self._dir(name, "versions")) if n.isdigit()]

    def models(self) -> list[str]:
        return sorted(n for n in self._ls(self.root) if NAME.match(n) and self._numbers(n))

    def versions(self, name: str) -> list[ModelVersion]:
        return [self.get(name, n) for n in sorted(self._numbers(name))]

    def get(self, name: str, ref: int | str) -> ModelVersion:
        """A version by number, or by alias (`champion`, `challenger`, ...)."""
        number = self.resolve(name, ref)
        with self.fs.open(self._dir(name, "versions", number, METADATA), "r") as fh:
            return ModelVersion.model_validate_json(fh.read())

    def resolve(self, name: str, ref: int | str) -> int:
        if isinstance(ref, int) or str(ref).isdigit():
            number, known = int(ref), sorted(self._numbers(name))
            if number not in known:
                raise RegistryError(f"model '{name}' has no version {number}; versions: {known}")
            return number
        aliases = self.aliases(name)
        if ref not in aliases:
            raise RegistryError(f"model '{name}' has no alias '{ref}'; aliases: {aliases}")
        return aliases[str(ref)]

    def read(self, name: str, ref: int | str, file: str) -> bytes:
        with self.fs.open(f"{self.version_path(name, ref)}/{file}", "rb") as fh:
            return bytes(fh.read())

    def version_path(self, name: str, ref: int | str) -> str:
        """The folder holding the version's files and metadata, as a path in `self.fs`."""
        version = self.get(name, ref)
        if version.location is None:
            return self._dir(name, "versions", version.version)
        return self._dir(name, version.location)

    def file_uri(self, name: str, ref: int | str, file: str) -> str:
        return self._uri(f"{self.version_path(name, ref)}/{file}")

    def version_uri(self, name: str, ref: int | str) -> str:
        return self._uri(self.version_path(name, ref))

    def aliases(self, name: str) -> dict[str, int]:
        out = {}
        for alias in {n.removesuffix(".json") for n in self._ls(self._dir(name, "aliases"))}:
            if NAME.match(alias):
                move = self._alias(name, alias)[0]
                if move is not None and move.version is not None:
                    out[alias] = move.version
        return dict(sorted(out.items()))

    def _alias(self, name: str, alias: str) -> tuple[AliasMove | None, str | None]:
        """The alias's document and its token for a compare-and-swap (None: never set)."""
        found = self.objects.read(self._dir(name, "aliases", f"{alias}.json"))
        if found is not None:
            return AliasMove.model_validate_json(found[0]), found[1]
        legacy = self.objects.read(self._dir(name, "aliases", alias))  # before alias documents
        if legacy is None:
            return None, None
        at = datetime.fromtimestamp(0, UTC)
        return AliasMove(
            alias=alias, version=int(legacy[0]), previous=None, seq=0, at=at, by="unknown"
        ), None

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
        """Point `alias` at a version (by number or another alias; None removes it).

        With `expected` (a version, or None for "not set") the move happens only if the alias
        still points there, else AliasConflict. Without it the move wins over concurrent ones,
        and every move is kept in the alias history.
        """
        if not NAME.match(alias):
            raise RegistryError(f"invalid alias '{alias}' (lowercase letters, digits, - and _)")
        number = None if ref is None else self.resolve(name, ref)
        path = self._dir(name, "aliases", f"{alias}.json")
        while True:
            current, token = self._alias(name, alias)
            now = None if current is None else current.version
            if expected is not UNSET and now != expected:
                raise alias_conflict(name, alias, now, expected, current)
            if current is None and number is None:
                return None
            if current is not None and current.seq:
                self._archive(name, current)
            move = AliasMove(
                alias=alias,
                version=number,
                previous=now,
                seq=(current.seq if current else 0) + 1,
                at=datetime.now(UTC),
                by=by or default_actor(),
                reason=reason,
            )
            data = move.model_dump_json(indent=2).encode()
            if (
                self.objects.create(path, data)
                if token is None
                else self.objects.replace(path, data, token)
            ):
                self._archive(name, move)
                if current is not None and current.seq == 0:
                    self.fs.rm(self._dir(name, "aliases", alias))
                return number

    def _archive(self, name: str, move: AliasMove) -> None:
        """Put `move` into the alias history (idempotent: a move's entry is written once)."""
        path = self._dir(name, "alias-history", move.alias, f"{move.seq:010d}.json")
        self.objects.create(path, move.model_dump_json(indent=2).encode())

    def alias_history(self, name: str, alias: str | None = None) -> list[AliasMove]:
        """Every move of `alias` (or of all aliases), oldest first per alias."""
        aliases = [alias] if alias else self._ls(self._dir(name, "alias-history"))
        moves: list[AliasMove] = []
        for each in sorted(a for a in aliases if NAME.match(a)):
            folder = self._dir(name, "alias-history", each)
            entries = sorted(n for n in self._ls(folder) if n.endswith(".json"))
            for entry in entries:
                found = self.objects.read(f"{folder}/{entry}")
                if found is not None:
                    moves.append(AliasMove.model_validate_json(found[0]))
            current = self._alias(name, each)[0]
            if current is not None and current.seq and all(m.seq != current.seq for m in moves):
                moves.append(current)  # its mover stopped before archiving it
        return moves


def _location(staging: str) -> str:
    """`files/<id>`: where a staged folder lies under its model."""
    return "/".join(staging.rsplit("/", 2)[-2:])


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    return bool(protocols & {"file", "local"})


def _check_name(name: str) -> None:
    if not NAME.match(name):
        raise RegistryError(
            f"invalid model name '{name}': a lowercase letter, then letters, digits, - and _"
        )


def _check_files(name: str, files: Mapping[str, bytes]) -> None:
    if not files:
        raise RegistryError(f"model '{name}': at least one file is needed")
    for file in files:
        if "/" in file or file in (METADATA, "", "records") or file.startswith("."):
            raise RegistryError(f"model '{name}': invalid file name '{file}'")


def _rename_exclusive(src: str, dst: str) -> None:
    """Rename a local folder onto `dst` only if `dst` does not exist (FileExistsError otherwise):
    one rename(2), which fails when the target is a non-empty folder."""
    try:
        os.rename(src, dst)
    except OSError as exc:
        if os.path.exists(dst):
            raise FileExistsError(dst) from exc
        raise
