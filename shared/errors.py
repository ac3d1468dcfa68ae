"""The one base class of every error llmseg reports to a user.

Each stage subclasses `LlmsegError` with a message that names the file, class, field or URL at
fault and, where there is one, the command that fixes it. The CLIs catch `LlmsegError` only and
turn it into `error: ...` with exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import os


class LlmsegError(Exception):
    """A user-facing error: bad input, a missing file, an unreachable server."""


class ConfigError(LlmsegError, ValueError):
    """A setting that does not exist, does not apply to the chosen method, or has a bad value."""


class BackboneError(LlmsegError, ValueError):
    """A backbone that cannot be built or loaded; the message names the file / architecture."""


class MissingFileError(LlmsegError, FileNotFoundError):
    """A file or folder the user named does not exist; the message names it (and where else was looked)."""


class PluginImportError(LlmsegError, ImportError):
    """A registered entry's module failed to import: names the entry, the module and the underlying error."""


class DiskWriteError(LlmsegError, OSError):
    """A file or folder could not be written: a full or read-only disk, no permission, an I/O error.

    The message names the path and the operating system's reason with its errno name, e.g.
    `cannot write results/x/metrics.json: No space left on device (ENOSPC); ...`. It stays an
    OSError (errno, strerror and filename are set), so code that handles OSError keeps working,
    and it pickles (a worker process may raise it).
    """

    def __init__(self, errno_: int | None, strerror: str | None, filename: str, hint: str | None = None) -> None:
        super().__init__(errno_, strerror, filename)
        self.hint = hint if hint is not None else "free some space or make it writable (or write elsewhere), then rerun"

    @classmethod
    def from_os_error(cls, path: object, exc: OSError, hint: str | None = None) -> DiskWriteError:
        """The error for `exc`, met while writing `path` (a DiskWriteError already is one: kept, hint replaced if given)."""
        if isinstance(exc, DiskWriteError):
            return exc if hint is None else cls(exc.errno, exc.strerror, exc.filename, hint)
        return cls(exc.errno, exc.strerror or str(exc), str(path), hint)

    def reason(self) -> str:
        """'No space left on device (ENOSPC)': the OS's words and the errno's name."""
        words = self.strerror or (os.strerror(self.errno) if self.errno else "unknown error")
        name = errno.errorcode.get(self.errno) if self.errno is not None else None
        return f"{words} ({name})" if name else words

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.reason()}; {self.hint}"

    def __reduce__(self):
        return (type(self), (self.errno, self.strerror, self.filename, self.hint))
