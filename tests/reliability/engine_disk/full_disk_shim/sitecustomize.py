"""Test shim (on PYTHONPATH of a child process): the disk under $LLMSEG_TEST_FULL_UNDER fills up.

The first $LLMSEG_TEST_FULL_AFTER files renamed into place there are written; every later one
fails with ENOSPC, as on a disk that has filled up (every llmseg write ends in os.replace).
"""

import errno
import os
from pathlib import Path

_FOLDER = os.environ.get("LLMSEG_TEST_FULL_UNDER")
if _FOLDER:
    _folder = Path(_FOLDER).resolve()
    _after = int(os.environ.get("LLMSEG_TEST_FULL_AFTER", "0"))
    _real_replace = os.replace
    _written: list[str] = []

    def _replace(src, dst, *args, **kwargs):
        if Path(dst).resolve().is_relative_to(_folder):
            if len(_written) >= _after:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            _written.append(str(dst))
        return _real_replace(src, dst, *args, **kwargs)

    os.replace = _replace
