"""Small objects written only on a condition: written if absent, replaced if unchanged.

The registry claims version numbers and moves aliases with these two writes. A local folder
gets them from link(2) (fails on an existing name) and a lock held while comparing and
renaming; S3 from conditional PUTs (`If-None-Match: *`, `If-Match: <etag>`). A store that has
neither is refused, and an S3 endpoint is probed once, since some S3-compatible servers accept
the headers and ignore them.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import fsspec


class ConditionalWritesUnsupported(ValueError):
    """The store cannot write on a condition, so concurrent writers could overwrite each other."""


class Objects(Protocol):
    def read(self, path: str) -> tuple[bytes, str] | None:
        """The object's bytes and a token for `replace`, or None if it does not exist."""
        ...

    def create(self, path: str, data: bytes) -> bool:
        """Write `data` at `path` if nothing is there; False if something is."""
        ...

    def replace(self, path: str, data: bytes, token: str) -> bool:
        """Write `data` over `path` if it is still what `read` returned with `token`."""
        ...


def conditional_objects(fs: fsspec.AbstractFileSystem, root: str, uri: str) -> Objects:
    """The conditional writes of `fs` (for the registry at `uri`, `root` in `fs`);
    ConditionalWritesUnsupported for any other store."""
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    if protocols & {"file", "local"}:
        return LocalObjects()
    if protocols & {"s3", "s3a"}:
        objects = S3Objects(fs)
        objects.probe(root, uri)
        return objects
    raise ConditionalWritesUnsupported(
        f"registry root '{uri}': the {'/'.join(sorted(protocols))} store offers no conditional "
        "writes here, so two writers could claim the same version or lose an alias move; use a "
        "local folder or s3:// (AWS S3, MinIO, or any store honouring If-None-Match and If-Match)"
    )


class LocalObjects:
    """Conditional writes on a local filesystem shared by the processes of one machine (or NFS
    with working locks)."""

    def read(self, path: str) -> tuple[bytes, str] | None:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return None
        return data, hashlib.sha256(data).hexdigest()

    def create(self, path: str, data: bytes) -> bool:
        tmp = self._written(path, data)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def replace(self, path: str, data: bytes, token: str) -> bool:
        folder, name = os.path.split(path)
        with _locked(os.path.join(folder, f".{name}.lock")):
            now = self.read(path)
            if now is None or now[1] != token:
                return False
            os.replace(self._written(path, data), path)
            return True

    @staticmethod
    def _written(path: str, data: bytes) -> str:
        folder, name = os.path.split(path)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex}")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return tmp


@contextmanager
def _locked(path: str) -> Iterator[None]:
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


_PROBED: set[tuple[str, str]] = set()


class S3Objects:
    """Conditional PUTs through s3fs (the client, endpoint and credentials of `fs`)."""

    def __init__(self, fs: fsspec.AbstractFileSystem) -> None:
        self.fs = fs

    def read(self, path: str) -> tuple[bytes, str] | None:
        from s3fs.utils import FileExpired

        while True:
            self.fs.invalidate_cache(path)
            try:
                # the file pins the ETag it opened and reads with If-Match: bytes and token agree
                with self.fs.open(path, "rb") as fh:
                    return bytes(fh.read()), str(fh.details["ETag"])
            except FileNotFoundError:
                return None
            except FileExpired:  # replaced between the open and the read: read the new one
                continue

    def create(self, path: str, data: bytes) -> bool:
        return self._put(path, data, IfNoneMatch="*")

    def replace(self, path: str, data: bytes, token: str) -> bool:
        return self._put(path, data, IfMatch=token)

    def _put(self, path: str, data: bytes, **condition: str) -> bool:
        bucket, key, _ = self.fs.split_path(path)
        while True:
            try:
                self.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **condition)
                return True
            except FileExistsError:  # s3fs's name for a failed If-None-Match
                return False
            except OSError as exc:
                code = _s3_code(exc)
                if code == "PreconditionFailed":
                    return False
                if code != "ConditionalRequestConflict":  # 409: a concurrent write, retry
                    raise
            finally:
                self.fs.invalidate_cache(path)

    def probe(self, root: str, uri: str) -> None:
        """Refuse an endpoint that accepts conditional PUTs without honouring them."""
        endpoint = str(self.fs.client_kwargs.get("endpoint_url") or self.fs.endpoint_url or "")
        bucket = self.fs.split_path(root)[0]
        if (endpoint, bucket) in _PROBED:
            return
        path = f"{bucket}/.registry-probe/{uuid.uuid4().hex}"
        try:
            honoured = self.create(path, b"1") and not self.create(path, b"2")
            now = self.read(path)
            honoured = honoured and now is not None and not self.replace(path, b"3", '"0"')
        finally:
            self.fs.rm(path) if self.fs.exists(path) else None
        if not honoured:
            raise ConditionalWritesUnsupported(
                f"registry root '{uri}': the S3 endpoint {endpoint or '(AWS)'} accepted a "
                "conditional PUT without honouring it (If-None-Match / If-Match), so concurrent "
                "writers could overwrite each other; use a store that honours them"
            )
        _PROBED.add((endpoint, bucket))


def _s3_code(exc: BaseException) -> str:
    cause = exc.__cause__
    response = getattr(cause, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))
