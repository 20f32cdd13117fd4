"""Crash-safe directory replace (rlft.runtime.atomic_fs): a process SIGKILLed between any two steps
of a replace (old aside, new in, old to trash) leaves a complete directory, old or new, never
neither; loaders find it and the next replace (or checkpoint pruning) puts it back under its own
name."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rlft.models.load import resolve_model_path
from rlft.runtime.atomic_fs import ASIDE, atomic_directory, readable_dir, recover

# Replaces `target` with a dir holding weights=<content>, SIGKILLing itself after the Nth rename.
CHILD = """
import os, signal, sys
from pathlib import Path
from rlft.runtime.atomic_fs import atomic_directory

target, kill_after, content = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
real_rename, renames = os.rename, []

def rename(src, dst):
    real_rename(src, dst)
    renames.append(dst)
    if len(renames) == kill_after:
        os.kill(os.getpid(), signal.SIGKILL)

os.rename = rename
with atomic_directory(target) as tmp:
    (tmp / "weights").write_text(content)
    (tmp / "COMPLETE").write_text("1")
"""


def _write(target: Path, content: str) -> None:
    with atomic_directory(target) as tmp:
        (tmp / "weights").write_text(content)
        (tmp / "COMPLETE").write_text("1")


def _killed_replace(target: Path, kill_after: int, content: str = "new") -> None:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(target), str(kill_after), content], timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _asides(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ASIDE in p.name)


@pytest.mark.parametrize(
    "kill_after, expected",
    [(1, "old"), (2, "new"), (3, "new")],
    ids=["after-old-aside", "after-new-in", "after-old-to-trash"],
)
def test_a_kill_between_any_two_steps_leaves_a_complete_dir(tmp_path: Path, kill_after: int, expected: str):
    final = tmp_path / "final"
    _write(final, "old")
    _killed_replace(final, kill_after)
    found = readable_dir(final)
    assert sorted(p.name for p in found.iterdir()) == ["COMPLETE", "weights"]
    assert (found / "weights").read_text() == expected
    assert resolve_model_path(str(final)) == str(found)  # what every model load goes through
    assert (found == final) == (kill_after > 1)  # after step 1 only the aside copy holds it
    recover(final)
    assert (final / "weights").read_text() == expected
    assert _asides(tmp_path) == [] and not list(tmp_path.glob(".tmp-final-del-*"))  # nor half-deleted
    _write(final, "next")
    assert (final / "weights").read_text() == "next" and _asides(tmp_path) == []


def test_the_next_replace_recovers_the_aside_copy_first(tmp_path: Path):
    final = tmp_path / "final"
    _write(final, "old")
    _killed_replace(final, 1)
    assert not final.exists() and len(_asides(tmp_path)) == 1
    with pytest.raises(RuntimeError), atomic_directory(final) as tmp:  # a failed write after a kill
        (tmp / "weights").write_text("half")
        raise RuntimeError("disk full")
    assert (final / "weights").read_text() == "old" and _asides(tmp_path) == []


def test_a_first_write_killed_after_it_is_renamed_in_is_complete(tmp_path: Path):
    final = tmp_path / "final"
    _killed_replace(final, 1)  # nothing to set aside: the first rename puts the new dir in
    assert (final / "weights").read_text() == "new" and _asides(tmp_path) == []
