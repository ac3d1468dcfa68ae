"""The one base class of every error llmseg reports to a user.

Each stage subclasses `LlmsegError` with a message that names the file, class, field or URL at
fault and, where there is one, the command that fixes it. The CLIs catch `LlmsegError` only and
turn it into `error: ...` with exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class LlmsegError(Exception):
    """A user-facing error: bad input, a missing file, an unreachable server."""


class ConfigError(LlmsegError, ValueError):
    """A setting that does not exist, does not apply to the chosen method, or has a bad value."""


class MissingFileError(LlmsegError, FileNotFoundError):
    """A file or folder the user named does not exist; the message names it (and where else was looked)."""


class PluginImportError(LlmsegError, ImportError):
    """A registered entry's module failed to import: names the entry, the module and the underlying error."""
