"""Time `llmseg demo run` (what `make demo` runs) from a fresh result folder and record its table.

    python benchmarks/bench_demo.py                # fresh folder, default size (200 images)
    python benchmarks/bench_demo.py --n-images 60  # smaller
    python benchmarks/bench_demo.py --train        # also time `llmseg demo train` (about 3-6 min on 2 cores)

Prints the table and appends a section to benchmarks/RESULTS.md (append-only).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from _results import append_results, cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def run(args: list[str]) -> tuple[float, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "llmseg.cli", *args], capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"llmseg {' '.join(args)} failed with exit code {proc.returncode}")
    return seconds, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-images", type=int, default=None)
    parser.add_argument("--train", action="store_true", help="also time `llmseg demo train` (into a temp file)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to RESULTS.md")
    opts = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="llmseg-demo-bench-") as tmp:
        out = Path(tmp) / "demo"
        args = ["demo", "run", "--out", str(out), "--no-progress"]
        if opts.n_images:
            args += ["--n-images", str(opts.n_images)]
        fresh, stdout = run(args)
        warm, _ = run(args)
        table = (out / "table.txt").read_text(encoding="utf-8").rstrip()
        train_line = ""
        if opts.train:
            seconds, train_out = run(["demo", "train", "--out", str(Path(tmp) / "w.safetensors")])
            train_line = f"- `llmseg demo train` (400 steps, default config): {seconds:.0f} s wall; {train_out.strip().splitlines()[-1]}\n"
    print(table)
    print(f"\nllmseg demo run: {fresh:.1f} s from a fresh folder, {warm:.1f} s again (benchmark kept, weights cached)")

    command = "python benchmarks/bench_demo.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    section = (
        "\n## The offline demo (`make demo` = `llmseg demo run`)\n\n"
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC\n"
        f"- device: {cpu_name()}, {os.cpu_count()} cores, float32 on the CPU, offline; 1-min load average {os.getloadavg()[0]:.1f} at the end\n"
        f"- command: `{command}` (runs `llmseg demo {' '.join(args[1:])}` twice)\n"
        f"- total wall time of `llmseg demo run`: {fresh:.1f} s from a fresh folder (writes the benchmark, "
        f"expands the shipped weights, stage one via the scripted server, 8 evaluations, pictures); {warm:.1f} s again\n"
        f"{train_line}"
        "- mIoU in percent (last column); `names` = class names only, `subclasses` = the stage-one label set\n\n"
        "```\n" + table + "\n```\n"
    )
    if not opts.no_write:
        append_results(section)


if __name__ == "__main__":
    main()
