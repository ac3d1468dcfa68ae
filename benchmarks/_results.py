"""What every benchmark script shares: naming the device and appending a section to RESULTS.md."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def cpu_name() -> str:
    """The CPU model, as `metrics.json` records it (benchmarks record the device they ran on)."""
    from llmseg.stage2.engine.results import cpu_model

    return cpu_model()


def append_results(section: str) -> Path:
    """Append a Markdown section to benchmarks/RESULTS.md atomically (re-read just before: others append too)."""
    from llmseg.io import atomic_write_text

    existing = RESULTS.read_text(encoding="utf-8") if RESULTS.is_file() else "# Benchmark results\n"
    atomic_write_text(RESULTS, existing.rstrip("\n") + "\n" + section)
    print(f"appended to {RESULTS}")
    return RESULTS
