"""The model registry: numbered, immutable versions per model name, and movable aliases.

Layout under the root (a local folder or any fsspec URI):

    <model>/versions/<n>/metadata.json      what trained it, on what, with which results
    <model>/versions/<n>/<files>            the model file(s), the reference sample, ...
    <model>/versions/<n>/records/<kind>/<t>/ evidence added later (validation, ...), at time t
    <model>/aliases/<alias>                 the version number an alias points to

A version is written completely under a staging folder, then claimed by renaming the folder to
the next free number: a rename onto an existing version fails, so concurrent registrations get
distinct numbers and a reader never sees a half-written version. An alias is replaced by
writing a temporary file and renaming it over the old one. Nothing is overwritten in place.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import fsspec
from pydantic import BaseModel, ConfigDict, Field

NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
METADATA = "metadata.json"


class RegistryError(ValueError):
    """A registry request that cannot be served; the message names the model and version."""


class ModelVersion(BaseModel):
    """Metadata of one registered version (what `metadata.json` holds)."""

    model_config = ConfigDict(extra="allow")

    name: str
    version: int = Field(ge=1)
    created_at: datetime
    files: list[str]
    metadata: dict[str, Any] = Field(default_factory=dict)


class Registry:
    """A model registry rooted at `root` (local path or fsspec URI)."""

    def __init__(self, root: str) -> None:
        self.fs, self.root = fsspec.core.url_to_fs(root)
        self.uri = root

    def _dir(self, *parts: object) -> str:
        return "/".join([self.root.rstrip("/"), *(str(p) for p in parts)])

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
        staging = self._dir(name, f".staging-{uuid.uuid4().hex}")
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

        Written completely, then renamed into place; returns the record's UTC timestamp.
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
                try:
                    _rename_exclusive(self.fs, staging, f"{folder}/{stamp}")
                    return stamp
                except FileExistsError:
                    continue
        except BaseException:
            if self.fs.exists(staging):
                self.fs.rm(staging, recursive=True)
            raise

    def records(self, name: str, ref: int | str, kind: str) -> list[str]:
        """Timestamps of a version's records of `kind`, oldest first."""
        folder = self._dir(name, "versions", self.resolve(name, ref), "records", kind)
        if not self.fs.exists(folder):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(folder, detail=False))

    def record_uri(self, name: str, ref: int | str, kind: str, stamp: str, file: str) -> str:
        path = self._dir(name, "versions", self.resolve(name, ref), "records", kind, stamp, file)
        return path if "://" not in self.uri else self.fs.unstrip_protocol(path)

    def read_record(self, name: str, ref: int | str, kind: str, stamp: str, file: str) -> bytes:
        with self.fs.open(self.record_uri(name, ref, kind, stamp, file), "rb") as fh:
            return bytes(fh.read())

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
            )
            with self.fs.open(f"{staging}/{METADATA}", "w") as fh:
                fh.write(version.model_dump_json(indent=2))
            target = self._dir(name, "versions", number)
            try:
                _rename_exclusive(self.fs, staging, target)
                return version
            except FileExistsError:
                number += 1

    def _numbers(self, name: str) -> list[int]:
        folder = self._dir(name, "versions")
        if not self.fs.exists(folder):
            return []
        names = (p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(folder, detail=False))
        return [int(n) for n in names if n.isdigit()]

    def models(self) -> list[str]:
        if not self.fs.exists(self.root):
            return []
        names = (p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False))
        return sorted(n for n in names if NAME.match(n) and self._numbers(n))

    def versions(self, name: str) -> list[ModelVersion]:
        return [self.get(name, n) for n in sorted(self._numbers(name))]

    def get(self, name: str, ref: int | str) -> ModelVersion:
        """A version by number, or by alias (`champion`, `challenger`, ...)."""
        number = self.resolve(name, ref)
        path = self._dir(name, "versions", number, METADATA)
        with self.fs.open(path, "r") as fh:
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
        number = self.resolve(name, ref)
        with self.fs.open(self._dir(name, "versions", number, file), "rb") as fh:
            return bytes(fh.read())

    def version_path(self, name: str, ref: int | str) -> str:
        """The version's folder, as a path within the registry's filesystem."""
        return self._dir(name, "versions", self.resolve(name, ref))

    def file_uri(self, name: str, ref: int | str, file: str) -> str:
        path = self._dir(name, "versions", self.resolve(name, ref), file)
        return path if "://" not in self.uri else self.fs.unstrip_protocol(path)

    def aliases(self, name: str) -> dict[str, int]:
        folder = self._dir(name, "aliases")
        if not self.fs.exists(folder):
            return {}
        out = {}
        for path in self.fs.ls(folder, detail=False):
            alias = path.rstrip("/").rsplit("/", 1)[-1]
            if alias.startswith("."):
                continue
            with self.fs.open(path, "r") as fh:
                out[alias] = int(fh.read().strip())
        return dict(sorted(out.items()))

    def set_alias(self, name: str, alias: str, ref: int | str) -> int:
        """Point `alias` at a version (by number or another alias), atomically."""
        if not NAME.match(alias):
            raise RegistryError(f"invalid alias '{alias}' (lowercase letters, digits, - and _)")
        number = self.resolve(name, ref)
        folder = self._dir(name, "aliases")
        self.fs.makedirs(folder, exist_ok=True)
        tmp = f"{folder}/.{alias}.{uuid.uuid4().hex}"
        with self.fs.open(tmp, "w") as fh:
            fh.write(str(number))
        self.fs.mv(tmp, f"{folder}/{alias}")
        return number

    def remove_alias(self, name: str, alias: str) -> None:
        """Remove `alias` (nothing if it is not set)."""
        path = f"{self._dir(name, 'aliases')}/{alias}"
        if self.fs.exists(path):
            self.fs.rm(path)


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


def _rename_exclusive(fs: fsspec.AbstractFileSystem, src: str, dst: str) -> None:
    """Rename a folder onto `dst` only if `dst` does not exist (FileExistsError otherwise).

    On a local filesystem this is one rename(2), which fails when the target is a non-empty
    folder, so two writers can never take the same number. Object stores have no atomic
    rename: there the check and the move are two steps.
    """
    if "file" in fs.protocol or "local" in fs.protocol:
        try:
            os.rename(src, dst)
        except OSError as exc:
            if os.path.exists(dst):
                raise FileExistsError(dst) from exc
            raise
        return
    if fs.exists(dst):
        raise FileExistsError(dst)
    fs.mv(src, dst, recursive=True)
