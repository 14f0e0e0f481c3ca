"""Atomic publication of staged tables: readers see the old tables or the new ones, never a mix."""

from __future__ import annotations

import uuid

import fsspec


def staging_uri(output_uri: str) -> str:
    """A fresh staging folder beside the outputs (same filesystem, so renames are cheap)."""
    return f"{output_uri.rstrip('/')}/.staging-{uuid.uuid4().hex[:12]}"


def publish(staging: str, output_uri: str, folders: dict[str, str]) -> None:
    """Move `staging/<src>/<table>` over `output/<dst>/<table>` for each `src: dst` of `folders`.

    Each replaced table is first renamed aside and deleted only once every new table is in
    place; if a move fails, the tables already moved are put back.
    """
    fs, stage_root = fsspec.core.url_to_fs(staging)
    _, out_root = fsspec.core.url_to_fs(output_uri)
    trash = f"{stage_root}.replaced"
    moved: list[tuple[str, str | None]] = []
    try:
        for folder, target in folders.items():
            if not fs.exists(f"{stage_root}/{folder}"):
                continue
            fs.makedirs(f"{out_root}/{target}", exist_ok=True)
            for src in sorted(fs.ls(f"{stage_root}/{folder}", detail=False)):
                table = src.rstrip("/").rsplit("/", 1)[-1]
                dst = f"{out_root}/{target}/{table}"
                aside = None
                if fs.exists(dst):
                    aside = f"{trash}/{target}/{table}"
                    fs.makedirs(f"{trash}/{target}", exist_ok=True)
                    fs.mv(dst, aside, recursive=True)
                moved.append((dst, aside))
                fs.mv(src, dst, recursive=True)
    except Exception:
        for dst, aside in reversed(moved):
            if fs.exists(dst):
                fs.rm(dst, recursive=True)
            if aside is not None:
                fs.mv(aside, dst, recursive=True)
        raise
    finally:
        for path in (trash, stage_root):
            if fs.exists(path):
                fs.rm(path, recursive=True)


def discard(staging: str) -> None:
    fs, path = fsspec.core.url_to_fs(staging)
    if fs.exists(path):
        fs.rm(path, recursive=True)
