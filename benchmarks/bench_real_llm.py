"""Stage one for PASCAL VOC against a real small instruct model served by llama-cpp-python on 127.0.0.1.

    python benchmarks/bench_real_llm.py --gguf /models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf \
        --server-python /venvs/llamacpp/bin/python --prompts subclasses.visual.v1 subclasses.visual.v2

It starts `python -m llama_cpp.server` (from the interpreter given by --server-python, which
needs `llama-cpp-python[server]`; it is not a project dependency) on a free port, runs
`generate_label_set` through the real openai SDK once per prompt template, and prints (and
writes to --out as JSON) per prompt: the label set, the classes that needed a repair turn, the
validation warnings and the share of entries that look like *parts* of the class instead of
subtypes.

The part check is deliberately simple and documented: an entry counts as a part when its last
word, lower-cased and with a plural "s" removed, is in PART_WORDS (body, vehicle and furniture
parts), or when it is "<class>'s ..." / "... of a <class>". Everything else counts as a subtype
(or, for background, as scenery). It over-counts nothing that is a real subtype name ending in
one of these words only rarely ("pickup truck bed" would count as a part).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

PART_WORDS = {
    # animals and people
    "tail", "ear", "eye", "nose", "mouth", "head", "leg", "paw", "hoof", "horn", "wing", "beak", "feather",
    "fur", "whisker", "mane", "claw", "fin", "scale", "skin", "hair", "face", "hand", "arm", "foot", "feet",
    "tooth", "teeth", "neck", "body", "back", "belly", "udder", "wool", "snout", "muzzle",
    # vehicles and objects
    "wheel", "tire", "tyre", "door", "window", "seat", "engine", "handlebar", "pedal", "chain", "frame",
    "saddle", "mirror", "headlight", "bumper", "hull", "sail", "mast", "deck", "propeller", "cockpit",
    "fuselage", "cap", "lid", "label", "base", "screen", "stand", "keyboard", "cable", "cushion",
    "armrest", "backrest", "tabletop", "drawer", "track", "rail",
    # plants
    "leaf", "leave", "stem", "root", "petal", "branch", "soil",
}


def is_part(entry: str, class_name: str) -> bool:
    """True when `entry` names a part of `class_name` rather than a kind of it (see the module docstring)."""
    text = entry.lower().strip()
    if re.search(rf"\b{re.escape(class_name.lower())}'s\b", text) or re.search(rf"\bof an? {re.escape(class_name.lower())}\b", text):
        return True
    words = re.findall(r"[a-z]+", text)
    if not words:
        return False
    last = words[-1]
    singular = last[:-1] if last.endswith("s") and not last.endswith("ss") else last
    return last in PART_WORDS or singular in PART_WORDS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(python: str, gguf: Path, port: int, threads: int, n_ctx: int, log: Path) -> subprocess.Popen:
    command = [
        python, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", str(n_ctx), "--n_threads", str(threads), "--model_alias", gguf.stem,
    ]
    handle = open(log, "w", encoding="utf-8")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1/models"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"llama_cpp.server exited with {process.returncode}; see {log}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return process
        except OSError:
            time.sleep(1)
    process.kill()
    raise SystemExit(f"llama_cpp.server did not answer in 300 s; see {log}")


REPAIR_TEMPERATURE: float | None = None  # set from --repair-temperature


def run_prompt(prompt: str, classes: list[str], k: int, cache: Path, structured: bool, **backend: Any) -> dict:
    from llmseg.stage1.generate import GenerationError, generate_label_set

    started = time.monotonic()
    try:
        label_set, meta = generate_label_set(
            classes, k=k, prompt=prompt, cache_path=cache, concurrency=1, timeout=600, max_retries=3, progress=False,
            structured=structured, dataset_name="pascal_voc", repair_temperature=REPAIR_TEMPERATURE, **backend,
        )
    except GenerationError as exc:
        return {"prompt": prompt, "error": str(exc), "wall_s": round(time.monotonic() - started, 1)}
    root = label_set.root
    scored = [c for c in classes if c != "background"]
    entries = [(c, e) for c in scored for e in root[c]]
    parts = [(c, e) for c, e in entries if is_part(e, c)]
    attempts = meta.per_class_attempts
    extra = meta.model_extra or {}  # the sidecar fields stage one adds beside the schema
    return {
        "prompt": prompt,
        "label_set": root,
        "repaired": {c: n for c, n in attempts.items() if n > 1},
        "warnings": extra.get("warnings"),
        "structured_output": extra.get("structured_output"),
        "stats": extra.get("stats"),
        "entries_scored": len(entries),
        "parts": [f"{c}: {e}" for c, e in parts],
        "part_share": round(len(parts) / max(1, len(entries)), 3),
        "wall_s": round(time.monotonic() - started, 1),
    }


def summarize_cache(cache: Path, classes: list[str], k: int) -> dict:
    """Per class, from a run's cache log (also a run that was stopped early): final answer, tries, parts.

    Uses the answers as logged, parsed the way the run parsed them; a class counts as done when
    one of its answers parsed to exactly K entries.
    """
    from llmseg.io import read_jsonl
    from llmseg.stage1.parse import parse_answer

    done: dict[str, list[str]] = {}
    tries: dict[str, int] = {}
    problems: dict[str, list[str]] = {}
    for record in read_jsonl(cache):
        if record.get("kind") != "answer" or record["class"] in done:
            continue
        name = record["class"]
        tries[name] = tries.get(name, 0) + 1
        parsed = parse_answer(record["text"], k, class_name=name, other_classes=classes)
        if parsed.ok:
            done[name] = parsed.subclasses
        else:
            problems.setdefault(name, []).append(parsed.describe())
    scored = [(c, e) for c, entries in done.items() if c != "background" for e in entries]
    parts = [f"{c}: {e}" for c, e in scored if is_part(e, c)]
    return {
        "cache": str(cache),
        "classes_done": len(done),
        "label_set": done,
        "tries": tries,
        "repair_problems": problems,
        "entries_scored": len(scored),
        "parts": parts,
        "part_share": round(len(parts) / max(1, len(scored)), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", type=Path, required=True)
    parser.add_argument("--server-python", default=sys.executable, help="interpreter with llama-cpp-python[server]")
    parser.add_argument("--prompts", nargs="+", default=["subclasses.visual.v1", "subclasses.visual.v2"])
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--no-structured", action="store_true", help="plain-text JSON instead of json_schema")
    parser.add_argument("--out", type=Path, default=Path("bench_real_llm"))
    parser.add_argument(
        "--backend", choices=["llama-cpp", "hf"], default="llama-cpp",
        help="llama-cpp: llama_cpp.server over HTTP (openai backend); hf: the same GGUF through transformers (gguf_file)",
    )
    parser.add_argument("--repair-temperature", type=float, default=None,
                        help="sample the repair turns at this temperature (llmseg subclasses --repair-temperature)")
    parser.add_argument("--from-cache", type=Path, nargs="+", help="only summarise these cache logs (e.g. of a stopped run)")
    args = parser.parse_args()
    global REPAIR_TEMPERATURE
    REPAIR_TEMPERATURE = args.repair_temperature

    from llmseg.datasets import get_dataset

    classes = list(get_dataset("pascal_voc").classes)
    if args.from_cache:
        summaries = [summarize_cache(path, classes, args.k) for path in args.from_cache]
        common = set.intersection(*(set(s["label_set"]) for s in summaries)) - {"background"}
        for summary in summaries:
            on_common = [(c, e) for c in sorted(common) for e in summary["label_set"][c]]
            summary["common_classes"] = sorted(common)
            summary["part_share_on_common"] = round(sum(is_part(e, c) for c, e in on_common) / max(1, len(on_common)), 3)
        print(json.dumps(summaries, indent=1, ensure_ascii=False))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    server = None
    if args.backend == "hf":
        from llmseg.stage1.backends.hf_local import HFBackend

        engine = HFBackend(str(args.gguf), device="cpu", dtype="float32")
        backend: dict = {"backend": "hf", "model": str(args.gguf), "backend_instance": engine}
    else:
        port = free_port()
        server = start_server(args.server_python, args.gguf, port, args.threads, args.n_ctx, args.out / "llama_server.log")
        backend = {"backend": "openai", "model": args.gguf.stem, "base_url": f"http://127.0.0.1:{port}/v1"}
    results = []
    try:
        for prompt in args.prompts:
            cache = args.out / f"{prompt}.{args.backend}.{'text' if args.no_structured else 'schema'}.jsonl"
            result = run_prompt(prompt, classes, args.k, cache, not args.no_structured, **backend)
            results.append(result)
            print(json.dumps({k: v for k, v in result.items() if k != "label_set"}, indent=1), flush=True)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="minutes"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "model": args.gguf.name,
        "backend": args.backend,
        "command": " ".join(sys.argv),
        "results": results,
    }
    (args.out / "results.json").write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    for result in results:
        if "label_set" in result:
            print(f"\n{result['prompt']}: part share {result['part_share']}, repaired {result['repaired']}")
            for name, entries in result["label_set"].items():
                print(f"  {name}: {', '.join(entries)}")


if __name__ == "__main__":
    main()
