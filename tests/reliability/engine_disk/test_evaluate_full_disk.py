"""Issue 21 item 8, stage two: evaluate and score on a full or read-only disk.

The disk fills up at every write point of a run in turn (each prediction PNG, overlay, checkpoint,
result file and the lock's side file). Each time the run ends in one DiskWriteError naming the
file and the disk error, the checkpoint on disk stays whole and consistent, no temporary is left,
and a rerun once space is free ends with exactly the numbers of a run that never failed.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from disk_faults import ColourGuess, numbers, temporaries

from llmseg.errors import DiskWriteError, LlmsegError
from llmseg.stage2.engine.runner import RunConfig, evaluate, score

DATASET = "pascal_voc"


def _cfg(out: Path, **kw) -> RunConfig:
    return RunConfig(out=str(out), num_workers=0, progress=False, save_pred=True, save_vis=2, checkpoint_every=2, **kw)


def _run(root: Path, out: Path) -> dict:
    from llmseg.datasets import get_dataset

    spec = get_dataset(DATASET)
    return evaluate(ColourGuess(spec.num_classes), spec, root, _cfg(out))


def _writes_of_a_clean_run(root: Path, out: Path, full_disk) -> list[Path]:
    """Every file a clean run writes into `out`, in order (a disk that never fills up records them)."""
    disk = full_disk(out, after=10**6)
    _run(root, out)
    return disk.written


def _checkpoint_is_consistent(out: Path) -> None:
    path = out / "checkpoint.json"
    if not path.exists():
        return
    state = json.loads(path.read_text(encoding="utf-8"))  # whole: atomic writes never leave half a file
    assert state["metric"]["num_images"] == len(state["finished"]) - len(state["skipped"])


def test_every_write_point_of_evaluate_on_a_full_disk(voc, tmp_path, full_disk, monkeypatch):
    clean = tmp_path / "clean"
    writes = _writes_of_a_clean_run(voc, clean, full_disk)
    monkeypatch.undo()
    names = {p.name for p in writes}
    assert {"checkpoint.json", "metrics.json", "metrics.md", "confusion.json"} <= names
    assert any(p.parent.name == "pred" for p in writes) and any(p.parent.name == "vis" for p in writes)
    assert any(p.name.endswith(".holder.json") for p in writes)  # the run-folder lock's side file
    expected = numbers(clean)

    for after in range(len(writes)):
        out = tmp_path / f"full{after}"
        disk = full_disk(out, after)
        with pytest.raises(DiskWriteError) as caught:
            _run(voc, out)
        message = str(caught.value)
        first = disk.refused[0]
        assert caught.value.filename == str(first), (after, message)  # the write that failed first, not a later one
        assert f"cannot write {first}: No space left on device (ENOSPC)" in message
        assert caught.value.errno == errno.ENOSPC
        if (out / "checkpoint.json").exists():
            assert str(out / "checkpoint.json") in message  # what the rerun continues from
        _checkpoint_is_consistent(out)
        monkeypatch.undo()
        assert temporaries(out) == [] if out.exists() else True

        report = _run(voc, out)  # space freed: the same command again
        assert numbers(out) == expected, f"the disk filled up after {after} writes ({first.name})"
        assert report["mIoU"] == expected["mIoU"]


def test_a_read_only_run_folder_is_named(voc, tmp_path, full_disk):
    out = tmp_path / "ro"
    full_disk(out, after=0, err=errno.EROFS)
    with pytest.raises(DiskWriteError) as caught:
        _run(voc, out)
    assert "Read-only file system (EROFS)" in str(caught.value) and str(out) in str(caught.value)
    assert not out.exists()  # nothing was written: no folder left behind


def test_the_failure_stays_the_error_when_the_last_checkpoint_cannot_be_written(voc, tmp_path, full_disk):
    """The prediction PNG of image 2 fails; saving the checkpoint on the way out fails too; the PNG is named."""
    out = tmp_path / "run"
    from llmseg.datasets import get_dataset

    spec = get_dataset(DATASET)
    cfg = RunConfig(out=str(out), num_workers=0, progress=False, save_pred=True, checkpoint_every=100)
    disk = full_disk(out, after=3)  # the lock's side file and two PNGs
    with pytest.raises(DiskWriteError) as caught:
        evaluate(ColourGuess(spec.num_classes), spec, voc, cfg)
    assert disk.refused[0].parent.name == "pred" and len(disk.refused) == 2  # the PNG, then the checkpoint
    assert caught.value.filename == str(disk.refused[0])
    assert "no image was checkpointed yet" in str(caught.value)


def test_score_on_a_full_disk_names_the_file_and_a_rerun_gives_the_same_numbers(voc, tmp_path, full_disk, monkeypatch):
    from llmseg.datasets import get_dataset

    spec = get_dataset(DATASET)
    _run(voc, tmp_path / "run")
    pred = tmp_path / "run" / "pred"
    cfg = RunConfig(out=str(tmp_path / "score"), num_workers=0, progress=False)
    score(spec, voc, pred, cfg)
    expected = numbers(tmp_path / "score")
    assert expected == numbers(tmp_path / "run")

    for after in range(3):  # confusion.json, metrics.md, metrics.json
        out = tmp_path / f"score{after}"
        disk = full_disk(out, after)
        with pytest.raises(LlmsegError) as caught:
            score(spec, voc, pred, cfg.model_copy(update={"out": str(out)}))
        assert isinstance(caught.value, DiskWriteError)
        assert f"cannot write {disk.refused[0]}: No space left on device (ENOSPC)" in str(caught.value)
        assert not (out / "metrics.json").exists()  # written last: no metrics.json without its companions
        monkeypatch.undo()
        score(spec, voc, pred, cfg.model_copy(update={"out": str(out)}))
        assert numbers(out) == expected
