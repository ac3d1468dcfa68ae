"""Stage-one throughput: a whole dataset's classes against the scripted server with a fixed latency per answer.

    python benchmarks/bench_stage1.py                     # COCO-Stuff (171 classes), 1 s per answer, concurrency 1 and 16
    python benchmarks/bench_stage1.py --concurrency 16 --classes 40 --no-record

Measures the wall time of `generate_label_set` (the real openai SDK over HTTP to
`llmseg.stage1.testing.server`, JSON parsing, normalisation, the fsync'ed cache log, validation)
and compares it with the ideal ceil(N / concurrency) x latency. Appends a section to
benchmarks/RESULTS.md unless --no-record.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _results import append_results, cpu_name  # noqa: E402

from llmseg.datasets import get_dataset  # noqa: E402
from llmseg.stage1.generate import generate_label_set  # noqa: E402
from llmseg.stage1.testing.server import ScriptedLLMServer  # noqa: E402


def run_once(classes: list[str], concurrency: int, latency: float, k: int, folder: Path) -> dict:
    import openai  # noqa: F401  (imported once, outside the timed region: ~1 s, paid once per process)

    cache = folder / f"c{concurrency}.jsonl"
    with ScriptedLLMServer(latency=latency) as server:
        started = time.perf_counter()
        label_set, meta = generate_label_set(
            classes, backend="openai", model="scripted", base_url=server.base_url, k=k, concurrency=concurrency,
            cache_path=cache, progress=sys.stderr.isatty(),
        )  # fmt: skip
        wall = time.perf_counter() - started
        requests = server.request_count
    assert label_set.classes == classes
    ideal = math.ceil(len(classes) / concurrency) * latency
    return {"concurrency": concurrency, "classes": len(classes), "requests": requests, "wall_s": wall, "ideal_s": ideal}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="coco_stuff")
    parser.add_argument("--classes", type=int, default=None, help="only the first N classes")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--latency", type=float, default=1.0, help="seconds per answer")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)

    classes = list(get_dataset(args.dataset).classes)[: args.classes]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for concurrency in args.concurrency:
            rows.append(run_once(classes, concurrency, args.latency, args.k, Path(tmp)))
            row = rows[-1]
            print(f"concurrency {concurrency:>3}: {row['wall_s']:.1f} s wall (ideal {row['ideal_s']:.1f} s)", file=sys.stderr)

    header = "| concurrency | classes | requests | wall time (s) | ideal (s) | overhead (s) | speed-up vs first row |"
    lines = [header, "|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(
            f"| {row['concurrency']} | {row['classes']} | {row['requests']} | {row['wall_s']:.1f} | {row['ideal_s']:.1f} "
            f"| {row['wall_s'] - row['ideal_s']:.1f} | {rows[0]['wall_s'] / row['wall_s']:.1f}x |"
        )
    table = "\n".join(lines)
    print(table)
    if not args.no_record:
        command = "python benchmarks/bench_stage1.py" + (" " + shlex.join(argv if argv is not None else sys.argv[1:]) if (argv or sys.argv[1:]) else "")
        section = (
            f"\n## Stage one: {args.dataset} label set against the scripted server ({args.latency:g} s per answer)\n\n"
            f"- device: {cpu_name()}, 2 cores (no GPU used)\n"
            f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}\n"
            f"- command: `{command}`\n"
            f"- what: `generate_label_set` with K={args.k}, the real openai SDK over HTTP to `llmseg.stage1.testing.server`, "
            "json_schema structured output, parsing, normalisation, the fsync'ed jsonl cache and validation; "
            "ideal = ceil(classes / concurrency) x latency\n\n"
            f"{table}\n"
        )
        append_results(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
