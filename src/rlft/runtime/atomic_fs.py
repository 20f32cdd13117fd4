"""Crash-safe file-system helpers: a directory appears complete or not at all.

Replacing a directory takes three steps: the old one is renamed aside (`NAME.old-<ns>-<pid>`), the
new one renamed in, then the aside copy is renamed to a `.tmp-` name and deleted. A kill between
any two steps leaves a complete copy: `NAME` itself, or (between the first two) its aside copy,
which `readable_dir` finds and the next replace (or `recover`) renames back. Every `.old-`
directory is complete; half-deleted ones only ever carry a `.tmp-` name.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ASIDE = ".old-"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    for p in sorted(root.rglob("*")):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    fsync_dir(root)


def aside_dirs(target: Path) -> list[Path]:
    """The aside copies of `target` left by interrupted replaces, newest first."""
    prefix = target.name + ASIDE
    if not target.parent.is_dir():
        return []
    found = [p for p in target.parent.iterdir() if p.name.startswith(prefix) and p.is_dir()]
    return sorted(found, key=lambda p: p.name, reverse=True)


def original_name(name: str) -> str:
    """The name a directory had before a replace set it aside (`final.old-1-2` -> `final`)."""
    return name.partition(ASIDE)[0]


def readable_dir(target: Path) -> Path:
    """`target`, or while a replace interrupted between its renames left none, its newest aside
    copy (read-only lookup: nothing is renamed, so a replace running now is never disturbed)."""
    target = Path(target)
    if target.exists():
        return target
    asides = aside_dirs(target)
    return asides[0] if asides else target


def discard(path: Path) -> None:
    """Delete a directory tree, renaming it to a `.tmp-` name first so that a kill mid-delete
    leaves no half-deleted tree under its real name."""
    trash = path.with_name(f".tmp-{original_name(path.name)}-del-{time.time_ns()}-{os.getpid()}")
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def recover(target: Path) -> None:
    """Finish an interrupted replace of `target`: rename its newest aside copy back when `target`
    is missing, then delete the other aside copies and half-deleted leftovers."""
    target = Path(target)
    asides = aside_dirs(target)
    if asides and not target.exists():
        os.rename(asides.pop(0), target)
        fsync_dir(target.parent)
    for p in asides:
        discard(p)
    for p in target.parent.glob(f".tmp-{glob.escape(target.name)}-del-*"):  # a kill mid-delete
        shutil.rmtree(p, ignore_errors=True)


def recover_all(parent: Path) -> None:
    """`recover` every directory in `parent` that has aside copies."""
    if parent.is_dir():
        names = {original_name(p.name) for p in parent.iterdir() if ASIDE in p.name}
        for name in names - {""}:
            recover(parent / name)


def swap_in(tmp: Path, target: Path) -> None:
    """Rename the complete `tmp` to `target`: old `target` aside, `tmp` in, parent fsynced, old
    copy deleted."""
    aside = target.with_name(f"{target.name}{ASIDE}{time.time_ns()}-{os.getpid()}")
    replacing = target.exists()
    if replacing:
        os.rename(target, aside)
    os.rename(tmp, target)
    fsync_dir(target.parent)
    if replacing:
        discard(aside)


@contextmanager
def atomic_directory(target: Path, prefix: str = ".tmp-") -> Iterator[Path]:
    """Yield a temp dir beside `target`; on success fsync it and rename it to `target` (replacing
    an older one, crash-safe: `swap_in`); on any error remove it. Readers never see a half-written
    `target`, and a kill at any moment leaves `readable_dir(target)` complete (old or new)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover(target)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    try:
        yield tmp
        fsync_tree(tmp)
        swap_in(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
