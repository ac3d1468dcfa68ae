"""Stage-one backends: one small interface (`base.Backend`) and a registry of implementations.

Built in: `openai` (any OpenAI-compatible server) and `hf` (a local transformers model); more
register themselves in `BACKENDS` (see `registry.py`).
"""

from __future__ import annotations

from .base import Backend, BackendError, Completion, FatalBackendError, Sampling
from .registry import BACKENDS, backend_settings, make_backend

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendError",
    "Completion",
    "FatalBackendError",
    "Sampling",
    "backend_settings",
    "make_backend",
]
