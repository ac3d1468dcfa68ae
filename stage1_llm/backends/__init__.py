"""Stage-one backends: one small interface (`base.Backend`), an OpenAI-compatible one and a local transformers one."""

from __future__ import annotations

from typing import Any

from .base import Backend, BackendError, Completion, FatalBackendError, Sampling

BACKENDS = ("openai", "hf")

__all__ = ["BACKENDS", "Backend", "BackendError", "Completion", "FatalBackendError", "Sampling", "make_backend"]


def make_backend(
    backend: str,
    model: str,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    timeout: float = 60.0,
    device: str | None = None,
    dtype: str = "auto",
    **_: Any,
) -> Backend:
    """Build a backend by name; heavy imports happen here, not at import time."""
    if backend == "openai":
        from .openai_compat import OpenAIBackend

        return OpenAIBackend(model, base_url=base_url, api_key=api_key, api_key_env=api_key_env, timeout=timeout)
    if backend == "hf":
        from .hf_local import HFBackend

        return HFBackend(model, device=device, dtype=dtype)
    raise FatalBackendError(f"unknown backend '{backend}': use one of {', '.join(BACKENDS)}")
