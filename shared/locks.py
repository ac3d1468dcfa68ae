"""One writer per output: an exclusive lock on a run folder or a label set, refused at once when held.

Two runs writing into one place interleave their files: one run's printed mIoU beside the other's
metrics.json, or two stage-one runs rewriting one label set. `hold(lock_path, what)` takes an
operating-system lock (`filelock`: flock on POSIX) on `lock_path` for the duration of a `with`
block; a second holder gets `LockedError` immediately, naming the first one (pid, host, command,
start time) from a small side file `<lock_path>.holder.json` that the holder writes. The OS
releases the lock when its process dies, so a killed run never leaves a stale lock behind; the
empty lock file itself stays (deleting it would let two runs lock two different files).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from .errors import DiskWriteError, LlmsegError
from .io import atomic_write_json, ensure_folder

FOLDER_LOCK = ".llmseg.lock"  # the lock file of a run folder (evaluate, compare, tune)
HOLDER_SUFFIX = ".holder.json"


class LockedError(LlmsegError, RuntimeError):
    """Another run holds the folder or file this run would write."""


def holder_path(lock_path: Path) -> Path:
    return lock_path.with_name(lock_path.name + HOLDER_SUFFIX)


def _command() -> str:
    """The program and its sub-command only (`llmseg evaluate`): options may hold keys or private URLs."""
    words = [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"]
    for arg in sys.argv[1:3]:
        if arg.startswith("-") or "/" in arg or "=" in arg or ":" in arg:
            break
        words.append(arg)
    return " ".join(words)


def describe_holder(lock_path: Path) -> str:
    """Who holds `lock_path`, as its side file tells (or that it does not say)."""
    try:
        info = json.loads(holder_path(lock_path).read_text(encoding="utf-8"))
        if not isinstance(info, dict):
            raise ValueError("not an object")
    except (OSError, ValueError):
        return "another process (it has not recorded itself yet)"
    return (f"pid {info.get('pid')} on host {info.get('host')} ({info.get('command')}, "
            f"started {info.get('started')})")


@contextlib.contextmanager
def hold(lock_path: str | os.PathLike, what: str, hint: str = "wait for it to finish or write elsewhere") -> Iterator[Path]:
    """Hold the lock `lock_path` for the block; `LockedError` at once if another holder has it.

    `what` names the protected thing in the error (e.g. "run folder results/x").
    """
    path = Path(lock_path)
    ensure_folder(path.parent)
    lock = FileLock(str(path), timeout=0, thread_local=False)
    try:
        lock.acquire()
    except Timeout:  # before OSError: filelock's Timeout is a TimeoutError
        raise LockedError(f"{what} is in use by {describe_holder(path)}: {hint}") from None
    except OSError as exc:  # the lock file cannot be created: a read-only or full disk
        raise DiskWriteError.from_os_error(path, exc) from exc
    side = holder_path(path)
    try:
        atomic_write_json(side, {"pid": os.getpid(), "host": socket.gethostname(), "command": _command(),
                                 "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        yield path
    finally:
        with contextlib.suppress(OSError):
            side.unlink()
        lock.release()


@contextlib.contextmanager
def hold_folder(folder: str | os.PathLike, what: str, name: str = FOLDER_LOCK) -> Iterator[Path]:
    """`hold` on the lock file of a run folder (created if missing).

    A folder this call created and that holds nothing but lock files afterwards (the run was refused
    before writing) is removed again, so a refused run leaves no folder behind.
    """
    folder = Path(folder)
    created = not folder.exists()
    acquired = False
    try:
        with hold(folder / name, f"{what} {folder}", hint="wait for that run to finish or choose another --out") as path:
            acquired = True
            yield path
    finally:
        if created and acquired:
            _remove_if_only_locks(folder)


def _remove_if_only_locks(folder: Path) -> None:
    try:
        entries = set(folder.iterdir())
        if entries and entries <= lock_files(folder):
            for path in entries:
                path.unlink(missing_ok=True)
            folder.rmdir()
    except OSError:
        pass  # someone wrote into it meanwhile, or it is gone: either way nothing to tidy


def lock_files(folder: Path) -> set[Path]:
    """The lock files `hold_folder` may leave in `folder` (not results: a folder holding only these is empty)."""
    return {p for p in folder.glob(".llmseg*.lock*") if p.is_file()}


def hold_label_set(path: str | os.PathLike) -> contextlib.AbstractContextManager[Path]:
    """`hold` on `<label set path>.lock`: one stage-one run at a time writes a label set (and its sidecar)."""
    target = Path(path)
    return hold(target.with_name(target.name + ".lock"), f"label set {target}",
                hint="wait for that run to finish or choose another --out")
