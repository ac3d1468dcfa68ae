"""Plain helpers of the stage-two data attack tests (importable: conftest puts this folder on sys.path)."""

from __future__ import annotations

import struct
import zlib

# the bundled demo CLIP in its fastest settings: the run is about the files, not the masks
DEMO_FLAGS = ["--backbone", "demo-clip", "--dense-mode", "vanilla", "--templates", "single", "--short-side", "64",
              "--crop", "0", "--logit-scale", "50", "--prob-thd", "0", "--area-thd", "0"]


def header_only_png(width: int, height: int) -> bytes:
    """A PNG that claims `width` x `height` pixels and holds none: PIL refuses it as a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
