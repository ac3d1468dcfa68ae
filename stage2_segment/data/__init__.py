"""Datasets on disk: benchmark readers (MMSeg layout), user-image folders, converters and checks."""

from .layouts import LAYOUTS, LayoutReader, layout_reader
from .readers import (
    BenchmarkDataset,
    DataError,
    FolderDataset,
    SampleRef,
    list_samples,
    load_image,
    load_label,
)

__all__ = [
    "BenchmarkDataset",
    "DataError",
    "FolderDataset",
    "LAYOUTS",
    "LayoutReader",
    "SampleRef",
    "list_samples",
    "load_image",
    "layout_reader",
    "load_label",
]
