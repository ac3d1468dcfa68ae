"""llmseg: training-free open-vocabulary semantic segmentation supervised by an LLM.

The package root holds what both stages use (atomic I/O, the dataset registry, the label-set
format and its validation); `llmseg.stage1` asks an LLM for subclasses, `llmseg.stage2` segments
with them. The public entry points below are imported lazily, so `import llmseg` (and
`llmseg --help`) stays fast and never pulls in torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_PUBLIC = {
    "Segmenter": "llmseg.stage2.api",
    "SegmentationOutput": "llmseg.stage2.api",
    "evaluate": "llmseg.stage2.engine.runner",
    "score": "llmseg.stage2.engine.runner",
    "generate_label_set": "llmseg.stage1.generate",
    "LabelSet": "llmseg.labelset",
    "load_label_set": "llmseg.labelset",
    "get_dataset": "llmseg.datasets",
    "LlmsegError": "llmseg.errors",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'llmseg' has no attribute '{name}'")
    return getattr(import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
