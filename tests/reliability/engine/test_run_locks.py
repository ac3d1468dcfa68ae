"""Issue 21 item 5: one run at a time writes into a run folder (evaluate, compare, tune); the second is refused."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from rel_engine_support import build

from llmseg.locks import LockedError, hold, hold_folder, holder_path
from llmseg.stage2.data.readers import list_samples
from llmseg.stage2.engine.runner import RunConfig, evaluate, score

HERE = Path(__file__).resolve().parent
DATASET = "ade20k"


def _cfg(out: Path, **kw) -> RunConfig:
    return RunConfig(out=str(out), num_workers=0, progress=False, **kw)


def _start_holder(root: Path, out: Path, go: Path) -> subprocess.Popen:
    """A real `evaluate` into `out` in another process, held at its first image until `go` exists."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(HERE)!r})
        from pathlib import Path
        from rel_engine_support import WaitsForGo, build
        from llmseg.stage2.engine.runner import RunConfig, evaluate
        spec, method = build({DATASET!r}, Path({str(root)!r}), WaitsForGo, go=Path({str(go)!r}), noise=0.1)
        report = evaluate(method, spec, {str(root)!r}, RunConfig(out={str(out)!r}, num_workers=0, progress=False))
        print("MIOU", report["mIoU"])
    """)
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_holder(lock: Path, proc: subprocess.Popen) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            return json.loads(holder_path(lock).read_text())
        except (OSError, ValueError):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
    raise AssertionError("the first run never took the folder")


def test_second_evaluate_into_a_busy_folder_is_refused_and_names_the_first(synthetic, tmp_path):
    root = synthetic(DATASET, n=3)
    out, go = tmp_path / "out", tmp_path / "go"
    proc = _start_holder(root, out, go)
    try:
        info = _wait_for_holder(out / ".llmseg.lock", proc)
        assert info["pid"] == proc.pid and info["host"] == socket.gethostname()
        spec, method = build(DATASET, root, noise=0.4)  # other numbers than the first run's
        started = time.monotonic()
        with pytest.raises(LockedError) as err:
            evaluate(method, spec, root, _cfg(out))
        assert time.monotonic() - started < 10  # refused at once, not after waiting
        assert f"pid {proc.pid}" in str(err.value) and str(out) in str(err.value) and method.seen == 0
    finally:
        go.touch()
        stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    first = float(stdout.split("MIOU")[1])
    assert json.loads((out / "metrics.json").read_text())["mIoU"] == first  # the file holds the first run's numbers
    assert not holder_path(out / ".llmseg.lock").exists()
    spec, method = build(DATASET, root, noise=0.1)
    assert evaluate(method, spec, root, _cfg(out))["mIoU"] == first  # free again once the first run is done


def test_score_into_a_busy_run_folder_is_refused_and_leaves_its_metrics(synthetic, tmp_path):
    """`llmseg score --out` into a folder an evaluate is writing: refused at once, the run's metrics.json stays."""
    root = synthetic(DATASET, n=3)
    out, go = tmp_path / "out", tmp_path / "go"
    spec, _ = build(DATASET, root, noise=0.4)
    labels = list_samples(spec, root)[0].label_path.parent  # label PNGs as prediction PNGs: any readable folder will do
    proc = _start_holder(root, out, go)
    try:
        _wait_for_holder(out / ".llmseg.lock", proc)
        with pytest.raises(LockedError, match=rf"pid {proc.pid}"):
            score(spec, root, labels, _cfg(out))
        assert not (out / "metrics.json").exists()
    finally:
        go.touch()
        stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert json.loads((out / "metrics.json").read_text())["mIoU"] == float(stdout.split("MIOU")[1])
    report = score(spec, root, labels, _cfg(out))  # free once the run is done: now the score's numbers are written
    assert json.loads((out / "metrics.json").read_text())["mIoU"] == report["mIoU"] != float(stdout.split("MIOU")[1])


def test_a_killed_holder_leaves_no_stale_lock(synthetic, tmp_path):
    root = synthetic(DATASET, n=2)
    out, go = tmp_path / "out", tmp_path / "go"
    proc = _start_holder(root, out, go)
    _wait_for_holder(out / ".llmseg.lock", proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    spec, method = build(DATASET, root)
    report = evaluate(method, spec, root, _cfg(out))
    assert report["num_images"] == 2


def test_evaluate_command_refuses_a_held_folder(tmp_path):
    from typer.testing import CliRunner

    from llmseg.cli import app
    from llmseg.stage2.demo.benchmark import write_benchmark

    root = tmp_path / "data"
    write_benchmark(root, n_images=1, progress=False)
    out = tmp_path / "out"
    with hold_folder(out, "run folder"):
        result = CliRunner().invoke(app, ["evaluate", "--dataset", "demo", "--backbone", "demo-clip", "--data-root",
                                          str(root), "--out", str(out), "--no-progress", "--num-workers", "0"])
    assert result.exit_code == 2, result.output
    assert f"pid {os.getpid()}" in result.output and "Traceback" not in result.output
    assert not (out / "metrics.json").exists()


def test_compare_and_tune_refuse_a_held_output_folder(tmp_path):
    from llmseg.stage2.config import MethodConfig
    from llmseg.stage2.demo.benchmark import write_benchmark
    from llmseg.stage2.engine import runner
    from llmseg.stage2.experiments.compare import compare
    from llmseg.stage2.experiments.tune import tune

    root = tmp_path / "data"
    write_benchmark(root, n_images=2, progress=False)
    write_benchmark(root, n_images=2, split="train", progress=False)
    config = MethodConfig(backbone="demo-clip", dense_mode="vanilla", templates="single", short_side=64, crop=0,
                          logit_scale=50, prob_thd=0.0, area_thd=0.0)
    run = runner.RunConfig(num_workers=0, progress=False)
    out = tmp_path / "shared"
    with hold_folder(out, "run folder"):
        with pytest.raises(LockedError, match=f"pid {os.getpid()}"):
            compare(["demo"], ["names"], config, root, out, run=run, overlays=0, plots=False)
        with pytest.raises(LockedError, match=f"pid {os.getpid()}"):
            tune(config.model_copy(update={"logit_scale": None}), "demo", root, out, space=["logit_scale=40,50"], run=run)
    assert not (out / "cells").exists() and not (out / "tune_images.txt").exists()
    summary = compare(["demo"], ["names"], config, root, out, run=run, overlays=0, plots=False)
    assert summary["cells_evaluated"] == 1  # the folder is free again


def test_a_cell_folder_in_use_stops_the_grid(tmp_path):
    """compare's cells are evaluate folders: another run inside one of them is refused too."""
    from llmseg.stage2.config import MethodConfig
    from llmseg.stage2.demo.benchmark import write_benchmark
    from llmseg.stage2.engine import runner
    from llmseg.stage2.experiments.compare import compare

    root = tmp_path / "data"
    write_benchmark(root, n_images=2, progress=False)
    config = MethodConfig(backbone="demo-clip", dense_mode="vanilla", templates="single", short_side=64, crop=0,
                          logit_scale=50, prob_thd=0.0, area_thd=0.0)
    out = tmp_path / "grid"
    with hold_folder(out / "cells" / "demo" / "dense" / "names", "run folder"):
        with pytest.raises(LockedError):
            compare(["demo"], ["names"], config, root, out, run=runner.RunConfig(num_workers=0, progress=False),
                    overlays=0, plots=False)


def test_two_holders_of_one_lock(tmp_path):
    lock = tmp_path / "x.lock"
    with hold(lock, "thing x") as held:
        assert held == lock and json.loads(holder_path(lock).read_text())["pid"] == os.getpid()
        with pytest.raises(LockedError, match=r"thing x is in use by pid \d+ on host"):
            with hold(lock, "thing x"):
                pass
    with hold(lock, "thing x"):  # released: free again
        pass


def test_the_recorded_command_holds_no_option_values(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["llmseg", "subclasses", "voc", "--base-url", "http://u:pw@h/v1?api_key=SECRET"])
    with hold(tmp_path / "x.lock", "x"):
        text = holder_path(tmp_path / "x.lock").read_text()
    assert "SECRET" not in text and "pw" not in text and json.loads(text)["command"] == "llmseg subclasses voc"
