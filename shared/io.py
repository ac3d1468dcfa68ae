"""Atomic, crash-safe file writing and hashing used by every writer in the project.

A reader never sees a half-written file: data goes to a temporary file in the same
folder, is flushed and fsync'ed, then renamed over the target (atomic on POSIX).
The temporary is private (0600) while it is written; the file that replaces the target gets
the permissions an ordinary `open(path, "w")` would give (0666 minus the umask), or keeps
those of the file it replaces.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonlines

from .errors import DiskWriteError, LlmsegError

PathLike = str | os.PathLike
log = logging.getLogger(__name__)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask sets it to read it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _final_mode(target: Path) -> int:
    """Permission bits for the file that replaces `target`: its current ones, else 0666 & ~umask."""
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it over `path` if the block succeeds.

    For libraries that want a file name (PIL's save, torch.save, np.save). The temporary
    keeps the target's suffix so that format detection by extension still works.

    An OSError on the way (a full or read-only disk, no permission, an I/O error), in the block
    too (it writes the temporary), becomes a `DiskWriteError` naming `path` and the disk error;
    the target is left as it was. This is the one place where the project's writes meet the disk.
    """
    target = Path(path)
    ensure_folder(target.parent)
    try:
        fd, tmp_name = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=(suffix if suffix is not None else target.suffix) + ".tmp"
        )
        os.close(fd)
    except OSError as exc:
        raise DiskWriteError.from_os_error(target, exc) from exc
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fchmod(fh.fileno(), _final_mode(target))  # mkstemp's 0600 would make every output private
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and not isinstance(exc, DiskWriteError):
            raise DiskWriteError.from_os_error(target, exc) from exc
        raise


def ensure_folder(folder: PathLike) -> Path:
    """mkdir -p `folder`; a full or read-only disk is a `DiskWriteError` naming the folder, not a traceback."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DiskWriteError.from_os_error(exc.filename or path, exc) from exc
    return path


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Serialise `obj` as UTF-8 JSON (non-ASCII kept, key order kept) and write atomically."""
    text = json.dumps(obj, indent=indent, ensure_ascii=False)
    return atomic_write_text(path, text + "\n")


class JsonlError(LlmsegError, OSError):
    """A jsonlines file that cannot be read or appended to at all; the message names the file and the OS error."""


def _ends_with_newline(fh: Any) -> bool:
    """Whether the open binary file is empty or ends in b"\\n" (a kill mid-append leaves it without)."""
    fh.seek(0, os.SEEK_END)
    if fh.tell() == 0:
        return True
    fh.seek(-1, os.SEEK_END)
    return fh.read(1) == b"\n"


def append_jsonl(path: PathLike, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync, so a record survives a SIGKILL right after the call.

    A process killed mid-write can leave a truncated last line without its newline; the next
    append first ends that line, so the torn fragment stays one bad line (`read_jsonl` skips it)
    instead of swallowing the good record written after it. OSError (a full or read-only disk)
    reaches the caller, which knows what the record is worth (`llmseg.stage1.cache` rescues it).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "a+b") as fh:
        writer = jsonlines.Writer(fh, flush=True, dumps=_dumps)
        if not _ends_with_newline(fh):
            fh.write(b"\n")
        writer.write(record)
        os.fsync(fh.fileno())


def _dumps(value: Any) -> str:
    """One JSON line, non-ASCII kept; a lone surrogate (a server may send "\\ud800") as a \\u escape instead of a crash."""
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value)  # reads back to the very same string
    return text


def iter_jsonl(path: PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of every readable line of a jsonlines file; a missing file has none.

    Tolerant by design, because the file is a log of answers already paid for: each line is
    decoded on its own (a last line cut inside a UTF-8 character spoils only that line), and a
    line that is not a JSON object is skipped with a warning naming the file and the line: as
    "cut short" when it is the unterminated last line (a kill mid-write), else as "not a JSON
    object" (corruption, or a torn line that an older version appended after). Losing a line
    costs at most one request asked again; refusing the whole file would lose every answer.
    Raises JsonlError only when the file cannot be opened or read (a folder, an I/O error).
    """
    target = Path(path)
    try:
        fh = open(target, "rb")
    except FileNotFoundError:
        return
    except OSError as exc:
        raise JsonlError(f"cannot read {target}: {exc.strerror or exc}") from exc
    with fh:
        try:
            for number, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                try:
                    value = jsonlines.Reader([raw], loads=json.loads).read(type=dict)  # not orjson, when installed: it refuses what json.dumps writes (NaN, lone surrogates)
                except (jsonlines.InvalidLineError, RecursionError) as exc:
                    _warn_bad_line(target, number, raw, exc)
                    continue
                yield number, value
        except OSError as exc:
            raise JsonlError(f"cannot read {target}: {exc.strerror or exc}") from exc


def _warn_bad_line(target: Path, number: int, raw: bytes, exc: Exception) -> None:
    """Say which line of which file was skipped, and why (no line content: it may be huge or hostile)."""
    if not raw.endswith(b"\n"):
        log.warning("%s: line %d, the last one, is cut short (a run killed mid-write?): dropped; the other lines are kept", target, number)
        return
    if isinstance(exc, RecursionError):
        reason = "nested too deeply"
    else:
        reason = str(exc).split(" (line", 1)[0].split(":", 1)[0]
    log.warning("%s: line %d is not a JSON object (%s): skipped; the other lines are kept", target, number, reason)


def read_jsonl(path: PathLike) -> list[dict[str, Any]]:
    """Every JSON object of a jsonlines file written by `append_jsonl` (see `iter_jsonl` for what is skipped)."""
    return [record for _, record in iter_jsonl(path)]


class RepeatedKeyError(ValueError):
    """A JSON object that names one key twice (json.loads would silently keep the last value)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def refuse_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`object_pairs_hook` for json.loads: a repeated key raises RepeatedKeyError instead of losing a value."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise RepeatedKeyError(key)
        obj[key] = value
    return obj


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    """sha256 of the UTF-8 bytes; a lone surrogate (a hostile server's "\\ud800") hashes instead of crashing."""
    return sha256_bytes(text.encode("utf-8", "surrogatepass"))


def sha256_file(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, streamed (checkpoints can be GBs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def stable_hash(obj: Any) -> str:
    """sha256 of the canonical JSON form of `obj` (sorted keys): a cache key."""
    return sha256_text(json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")))
