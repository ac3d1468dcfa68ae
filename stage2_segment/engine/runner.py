"""The evaluation runner: stream a benchmark through a method, score it, write the results.

    DataLoader (worker processes decode images + labels)
      -> method.forward(batch)          device work, batched
      -> PendingResult.finish()         CPU post-processing, in a spawn process pool
      -> SegMetric.update               confusion matrix on the device
      -> checkpoint every N images      confusion matrix + finished stems, atomically
      -> metrics.json / metrics.md      rank 0, atomically

A run killed at any point and started again with the same settings continues from its last
checkpoint and ends with exactly the metrics of an uninterrupted run: the confusion matrix and
the list of images it contains are written together in one atomic file, and integer counts do
not depend on the order in which images are added.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing as mp
import os
import shutil
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from llmseg.datasets import DatasetSpec
from llmseg.errors import DiskWriteError, LlmsegError
from llmseg.io import atomic_write_json, ensure_folder, stable_hash
from llmseg.locks import FOLDER_LOCK, LockedError, hold_folder, lock_files
from llmseg.stage2.data.readers import BenchmarkDataset, DataError, SampleRef, list_samples, load_label
from llmseg.stage2.engine import distributed
from llmseg.stage2.engine.metrics import SegMetric
from llmseg.stage2.engine.results import build_report, save_overlay, save_prediction, write_results
from llmseg.stage2.engine.worker_life import orphan_safe_pool
from llmseg.stage2.protocols import SegmentationMethod, SegResult

CHECKPOINT_VERSION = 1
log = logging.getLogger(__name__)


class RunError(LlmsegError, RuntimeError):
    """A run cannot start or continue (bad checkpoint, method output of the wrong shape, ...)."""


class RunConfig(BaseModel):
    """Engine settings of one evaluation (the method's own settings live in MethodConfig)."""

    model_config = ConfigDict(extra="forbid")

    out: str | None = Field(default=None, description="Result folder; default results/<dataset>/<run_name>/")
    run_name: str = "run"
    limit: int | None = Field(default=None, ge=0, description="Evaluate the first N images only")
    batch_size: int = Field(default=1, ge=1)
    num_workers: int = Field(default=2, ge=0, description="DataLoader decoding processes (spawn)")
    post_workers: int = Field(default=0, ge=0, description="Processes for PendingResult.finish; 0 = inline")
    save_pred: bool = False
    save_vis: int = Field(default=0, ge=0, description="Write colour overlays of the first N images")
    skip_bad: bool = False
    checkpoint_every: int = Field(default=100, ge=1, description="Checkpoint after this many images")
    checkpoint_seconds: float = Field(
        default=30.0, ge=0, le=86400, allow_inf_nan=False,
        description="Also checkpoint once this many seconds have passed since the last checkpoint",
    )
    resume: bool = True
    device: str = "cpu"
    progress: bool = True
    max_in_flight: int | None = Field(default=None, ge=1, description="Images waiting for post-processing")

    def out_dir(self, dataset: str) -> Path:
        return Path(self.out) if self.out else Path("results") / dataset / self.run_name


def clock() -> float:
    """The checkpoint timer's clock (monotonic; a module function so a test can substitute a fake one)."""
    return time.monotonic()


def _collate(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Images differ in size: a batch is just the list of items."""
    return items


def _finish(pending: Any) -> SegResult:
    """Runs in a pool worker: the CPU half of a method's work."""
    return pending.finish()


def _checkpoint_path(out: Path, info: distributed.DistInfo) -> Path:
    return out / ("checkpoint.json" if not info.enabled else f"checkpoint.rank{info.rank}.json")


def _fingerprint(spec: DatasetSpec, data_root: str | os.PathLike, cfg: RunConfig, description: dict, info) -> str:
    """What must not change between a run and its resumption."""
    return stable_hash(
        json.loads(
            json.dumps(
                {
                    "dataset": spec.name,
                    "split": spec.split,
                    "layout": dataclasses.asdict(spec.layout) if spec.layout else None,  # which files: a subset is a split file
                    "classes": list(spec.classes),
                    "reduce_zero_label": spec.reduce_zero_label,
                    "data_root": str(Path(data_root).resolve()),
                    "limit": cfg.limit,
                    "rank": info.rank,
                    "world_size": info.world_size,
                    "method": description,
                },
                default=str,
            )
        )
    )


class _Checkpoint:
    """Confusion matrix + finished stems + skipped files, written together atomically."""

    def __init__(self, path: Path, fingerprint: str) -> None:
        self.path = path
        self.fingerprint = fingerprint

    def load(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        try:
            state = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise RunError(f"cannot read checkpoint {self.path}: {exc}; delete it or pass --no-resume") from exc
        if state.get("version") != CHECKPOINT_VERSION or state.get("fingerprint") != self.fingerprint:
            raise RunError(
                f"checkpoint {self.path} was written by a run with other settings (dataset, data root, limit, "
                "method or number of ranks); pass --no-resume to start over or choose another --out"
            )
        return state

    def save(self, metric: SegMetric, finished: list[str], skipped: list[dict], wall: float, complete: bool) -> None:
        atomic_write_json(
            self.path,
            {
                "version": CHECKPOINT_VERSION,
                "fingerprint": self.fingerprint,
                "metric": metric.state_dict(),
                "finished": finished,
                "skipped": skipped,
                "wall_time_s": wall,
                "complete": complete,
            },
            indent=None,
        )


def _describe(method: Any) -> dict[str, Any]:
    try:
        description = method.describe()
    except AttributeError:
        description = {"name": type(method).__name__}
    return json.loads(json.dumps(description, default=str))


@dataclass
class _Session:
    """What one run of `evaluate` on one rank has done so far (the checkpoint holds the durable part)."""

    finished: list[str]
    skipped: list[dict[str, str]]
    wall_before: float  # seconds spent by earlier, interrupted sessions of the same run
    start: float = field(default_factory=time.perf_counter)
    images: int = 0  # images scored in this session (skipped files excluded)
    since_checkpoint: int = 0
    last_checkpoint: float = field(default_factory=lambda: clock())  # when the checkpoint was last written
    first_done: float | None = None
    last_done: float | None = None

    def wall(self) -> float:
        return self.wall_before + time.perf_counter() - self.start

    def steady_rate(self) -> float | None:
        """Images per second after the first one (start-up of worker processes excluded)."""
        if self.images >= 3 and self.last_done is not None and self.first_done is not None and self.last_done > self.first_done:
            return (self.images - 1) / (self.last_done - self.first_done)
        return None


class _RankLoop:
    """One rank's pass over its images: forward in batches, CPU finish (inline or pooled), score, checkpoint.

    Invariant: the metric's confusion matrix holds exactly the images in `session.finished`, so a
    checkpoint written at any moment (also from an exception) is a consistent resumption point.
    """

    def __init__(self, method: SegmentationMethod, spec: DatasetSpec, cfg: RunConfig, out: Path, metric: SegMetric,
                 checkpoint: _Checkpoint, session: _Session, global_index: dict[str, int], bar: Any,
                 pool: ProcessPoolExecutor | None) -> None:
        self.method, self.spec, self.cfg = method, spec, cfg
        self.metric, self.checkpoint, self.session = metric, checkpoint, session
        self.global_index, self.bar, self.pool = global_index, bar, pool
        self.pred_dir, self.vis_dir = out / "pred", out / "vis"
        self.suffix = spec.layout.seg_map_suffix if spec.layout else ".png"
        self.max_in_flight = cfg.max_in_flight or (2 * cfg.post_workers + cfg.batch_size)
        self.inflight: deque[tuple[dict[str, Any], Future | SegResult]] = deque()

    def run(self, loader: Any) -> None:
        try:
            for batch in loader:
                self._batch(batch)
            self._drain(everything=True)
        except BaseException as failure:
            # progress to resume from (none: leave nothing); an inconsistent state (interrupted between an
            # image's count and its mark) is not saved: the last checkpoint stays the resumption point
            if (self.session.finished or self.session.skipped) and self.consistent():
                self._save_while_failing(failure)
            raise

    def _save_while_failing(self, failure: BaseException) -> None:
        """Checkpoint on the way out of `failure`; if the disk refuses that too, `failure` stays the error.

        The last checkpoint on disk is then still the resumption point (atomic writes leave it whole).
        """
        try:
            self.save_checkpoint(complete=False)
        except OSError as exc:
            if not isinstance(failure, DiskWriteError):  # a full disk is said once, by the error itself
                log.warning("could not checkpoint on the way out (%s); %s stays the resumption point",
                            exc.strerror or exc, self.checkpoint.path)

    def consistent(self) -> bool:
        """The invariant: the metric counts exactly the finished images that were not skipped."""
        s = self.session
        return self.metric.num_images == len(s.finished) - len(s.skipped)

    def save_checkpoint(self, complete: bool) -> None:
        s = self.session
        self.checkpoint.save(self.metric, s.finished, s.skipped, s.wall(), complete=complete)

    def _batch(self, batch: list[dict[str, Any]]) -> None:
        good = []
        for item in batch:
            if "error" not in item:
                good.append(item)
                continue
            if not self.cfg.skip_bad:
                raise DataError(f"{item['error']} (pass --skip-bad to skip such files)")
            self.session.skipped.append({"stem": item["stem"], "error": item["error"]})
            self._mark_done(item["stem"])
        if not good:
            return
        with torch.inference_mode():
            pendings = self.method.forward([item["image"] for item in good])
        if len(pendings) != len(good):
            raise RunError(f"method returned {len(pendings)} results for a batch of {len(good)} images")
        for item, pending in zip(good, pendings, strict=True):
            if self.pool is not None and getattr(pending, "needs_cpu", True):
                self.inflight.append((item, self.pool.submit(_finish, pending)))
            else:
                self.inflight.append((item, pending.finish()))
        self._drain()
        elapsed = time.perf_counter() - self.session.start
        self.bar.set_postfix_str(_postfix(self.metric, self.session.images, elapsed), refresh=False)

    def _drain(self, everything: bool = False) -> None:
        inflight = self.inflight
        while inflight and (everything or len(inflight) > self.max_in_flight or _ready(inflight[0][1])):
            item, job = inflight.popleft()
            self._consume(item, job.result() if isinstance(job, Future) else job)

    def _consume(self, item: dict[str, Any], result: SegResult) -> None:
        labels = np.asarray(result.labels)
        target = item["label"]
        if labels.shape != target.shape:
            raise RunError(
                f"prediction for {item['image_path']} is {labels.shape[1]}x{labels.shape[0]} but its label "
                f"{item['label_path']} is {target.shape[1]}x{target.shape[0]} (WxH)"
            )
        # The files first: a write that fails (full disk, Ctrl-C) leaves the image neither counted nor
        # finished, so a resumption scores it once. Its count and its "finished" mark are committed together.
        if self.cfg.save_pred:
            save_prediction(self.pred_dir, item["stem"], labels, self.suffix)
        if self.global_index[item["stem"]] < self.cfg.save_vis:
            save_overlay(self.vis_dir / f"{item['stem']}.png", item["image"], labels, self.spec.classes, self.spec.name,
                         truth=target)
        try:
            self.metric.update(torch.from_numpy(np.ascontiguousarray(labels)), torch.from_numpy(target))
        except ValueError as exc:
            raise RunError(f"{item['image_path']} / {item['label_path']}: {exc}") from exc
        self._mark_done(item["stem"])
        s = self.session
        s.images += 1
        now = time.perf_counter()
        if s.first_done is None:
            s.first_done = now
        s.last_done = now

    def _mark_done(self, stem: str) -> None:
        s = self.session
        s.finished.append(stem)
        self.bar.update(1)
        s.since_checkpoint += 1
        # by count or by time: a kill on slow images (CRF, large models) loses at most checkpoint_seconds of work
        if s.since_checkpoint >= self.cfg.checkpoint_every or clock() - s.last_checkpoint >= self.cfg.checkpoint_seconds:
            self.save_checkpoint(complete=False)
            s.since_checkpoint = 0
            s.last_checkpoint = clock()


def _check_method_device(method: Any, device: str, info: distributed.DistInfo) -> None:
    """Under torchrun every rank must compute on its own GPU: a backbone built elsewhere is refused."""
    built_on = str(getattr(getattr(method, "backbone", None), "device", "") or "")
    if info.enabled and built_on.startswith("cuda") and built_on != device:
        raise RunError(
            f"rank {info.rank}: the method's backbone is on {built_on} but this rank computes on {device}; build it "
            "with device=distributed.this_rank_device(...) before loading (the CLI does)"
        )


def _resume_session(checkpoint: _Checkpoint, metric: SegMetric, resume: bool) -> tuple[_Session, bool]:
    """A fresh session, or one continuing the checkpoint (its metric loaded); and whether it resumed."""
    state = checkpoint.load() if resume else None
    if state is None:
        return _Session(finished=[], skipped=[], wall_before=0.0), False
    metric.load_state_dict(state["metric"])
    session = _Session(list(state["finished"]), list(state["skipped"]), float(state["wall_time_s"]))
    return session, True


def _loader(spec: DatasetSpec, data_root: str | os.PathLike, todo: list[SampleRef], cfg: RunConfig) -> Any:
    """Decoding in spawn worker processes (none when nothing is left to do)."""
    workers = cfg.num_workers if todo else 0
    return torch.utils.data.DataLoader(
        # torch takes any map-style dataset (__getitem__, __len__); its stub asks for a Dataset subclass
        BenchmarkDataset(spec, data_root, errors="report", samples=todo),  # type: ignore[arg-type]
        batch_size=cfg.batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        multiprocessing_context=mp.get_context("spawn") if workers > 0 else None,
    )


def evaluate(
    method: SegmentationMethod,
    spec: DatasetSpec,
    data_root: str | os.PathLike,
    cfg: RunConfig,
    extra_info: dict | None = None,
) -> dict[str, Any]:
    """Evaluate `method` on benchmark `spec` under `data_root`; returns the metrics.json document."""
    info = distributed.init_distributed(cfg.device)
    try:
        return _evaluate_rank(method, spec, data_root, cfg, info, extra_info)
    finally:
        distributed.shutdown(info)


def _evaluate_rank(method: SegmentationMethod, spec: DatasetSpec, data_root: str | os.PathLike, cfg: RunConfig,
                   info: distributed.DistInfo, extra_info: dict | None) -> dict[str, Any]:
    """This rank's share of the run, then the summed metrics (rank 0 writes them)."""
    device = distributed.rank_device(cfg.device, info)
    _check_method_device(method, device, info)
    out = cfg.out_dir(spec.name)
    description = _describe(method)
    if int(getattr(method, "num_classes", spec.num_classes)) != spec.num_classes:
        raise RunError(f"method predicts {method.num_classes} classes but {spec.name} has {spec.num_classes}")

    all_samples = list_samples(spec, data_root, cfg.limit)
    existed = out.exists()  # a run that fails before writing anything leaves no folder behind
    ensure_folder(out)
    try:
        with hold_folder(out, "run folder", name=_lock_name(info)):  # one run at a time writes here
            return _run_in_folder(method, spec, data_root, cfg, info, extra_info, device, description, out,
                                  all_samples)
    except LockedError:
        raise  # the folder belongs to the run that holds it
    except BaseException as exc:
        if not existed:
            _remove_if_empty(out)
        if isinstance(exc, DiskWriteError):  # full or read-only disk: say what is kept and how to go on
            raise DiskWriteError.from_os_error(exc.filename, exc, hint=_after_disk_error(_checkpoint_path(out, info), cfg.resume)) from exc
        raise


def _after_disk_error(checkpoint: Path, resume: bool) -> str:
    """What a failed write left behind, read from the checkpoint on disk: what a rerun continues from."""
    fix = "free some space (or make the folder writable) and rerun " + ("the same command" if resume else "without --no-resume")
    try:
        state = json.loads(checkpoint.read_text(encoding="utf-8"))
        finished, complete = len(state["finished"]), bool(state.get("complete"))
    except (OSError, ValueError, KeyError, TypeError):
        return f"no image was checkpointed yet: {fix}"
    if complete:
        return f"every image is scored and kept in {checkpoint}: {fix} to write the results"
    images = "image" if finished == 1 else "images"
    return f"{checkpoint} keeps the {finished} {images} finished so far: {fix}, it continues from there"


def _lock_name(info: distributed.DistInfo) -> str:
    """Rank 0 (or a single process) takes the folder's lock; other ranks of the same run their own."""
    return FOLDER_LOCK if not info.enabled or info.rank == 0 else f".llmseg.rank{info.rank}.lock"


def _run_in_folder(method: SegmentationMethod, spec: DatasetSpec, data_root: str | os.PathLike, cfg: RunConfig,
                   info: distributed.DistInfo, extra_info: dict | None, device: str, description: dict, out: Path,
                   all_samples: list[SampleRef]) -> dict[str, Any]:
    """The run proper, while this process holds the run folder."""
    global_index = {ref.stem: i for i, ref in enumerate(all_samples)}
    mine = distributed.shard(all_samples, info)
    metric = SegMetric(spec.num_classes, spec.ignore_index, device=device)
    checkpoint = _Checkpoint(_checkpoint_path(out, info), _fingerprint(spec, data_root, cfg, description, info))
    session, resumed = _resume_session(checkpoint, metric, cfg.resume)
    done = set(session.finished)
    todo = [ref for ref in mine if ref.stem not in done]

    loader = _loader(spec, data_root, todo, cfg)
    pool = None
    if cfg.post_workers > 0 and todo:
        pool = orphan_safe_pool(cfg.post_workers)  # its workers die with this process, also on SIGKILL
    session.start = time.perf_counter()
    session.last_checkpoint = clock()
    bar = tqdm(
        total=len(mine),
        initial=len(mine) - len(todo),
        desc=f"{spec.name} {out.name}" + (f" [rank {info.rank}]" if info.enabled else ""),  # several runs: which is which
        unit="img",
        disable=not cfg.progress,
        position=info.rank if info.enabled else None,
        dynamic_ncols=True,
    )
    loop = _RankLoop(method, spec, cfg, out, metric, checkpoint, session, global_index, bar, pool)
    try:
        loop.run(loader)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    session_time = time.perf_counter() - session.start
    loop.save_checkpoint(complete=True)
    return _final_report(
        spec, data_root, cfg, info, metric, session, session_time, global_index, description, extra_info, device,
        resumed, out,
    )


def _remove_if_empty(folder: Path) -> None:
    """Delete `folder` (and its empty subfolders) if no file was written under it."""
    if folder.is_dir() and not any(p.is_file() for p in folder.rglob("*") if p not in lock_files(folder)):
        shutil.rmtree(folder, ignore_errors=True)


def _final_report(spec: DatasetSpec, data_root: str | os.PathLike, cfg: RunConfig, info: distributed.DistInfo,
                  metric: SegMetric, session: _Session, session_time: float, global_index: dict[str, int],
                  description: dict, extra_info: dict | None, device: str, resumed: bool, out: Path) -> dict[str, Any]:
    """All ranks: sum the counts and gather the timings; rank 0 writes metrics.json / metrics.md."""
    metric.all_reduce()
    gathered = distributed.gather_objects(
        {"skipped": session.skipped, "images": session.images, "wall": session.wall(), "session": session_time,
         "steady": session.steady_rate()},
        info,
    )
    all_skipped = sorted((s for g in gathered for s in g["skipped"]), key=lambda s: global_index.get(s["stem"], 0))
    report = build_report(
        spec=spec,
        summary=metric.compute(),
        method_description=description,
        settings={
            "run": cfg.model_dump(mode="json"),
            "data_root": str(data_root),
            "world_size": info.world_size,
            "out": str(out),
        },
        extra_info=extra_info,
        skipped=all_skipped,
        wall_time_s=max(g["wall"] for g in gathered),
        images_this_session=sum(g["images"] for g in gathered),
        device=device,
        resumed=resumed,
    )
    longest = max(g["session"] for g in gathered)
    if longest > 0:
        report["images_per_s"] = round(report["images_this_session"] / longest, 4)
    rates = [g["steady"] for g in gathered]
    # throughput after the first image (start-up of worker processes excluded), summed over ranks
    report["images_per_s_steady"] = round(sum(rates), 4) if all(r is not None for r in rates) else None
    if info.is_main:
        write_results(out, report, metric.confusion.cpu().numpy())
    distributed.barrier(info)
    if info.is_main:
        remove_stale_temporaries(out)
    return report


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Delete the temporaries (`.NAME.*.tmp`) that a killed writer left in a run folder; returns them.

    Called after a successful run, while the run holds the folder, so no writer of ours is still
    using one. Only the folders evaluate writes (the run folder, pred/, vis/) are searched.
    """
    removed = []
    for folder, recursive in ((out, False), (out / "pred", True), (out / "vis", True)):
        if not folder.is_dir():
            continue
        for path in folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp"):
            if path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def _ready(job: Future | SegResult) -> bool:
    return not isinstance(job, Future) or job.done()


def _postfix(metric: SegMetric, images: int, seconds: float) -> str:
    miou = metric.compute()["mIoU"]
    rate = images / seconds if seconds > 0 else 0.0
    return f"mIoU {100 * miou:.2f} | {rate:.2f} img/s" if miou == miou else f"{rate:.2f} img/s"


# --- scoring saved predictions ------------------------------------------------------------------


def prediction_candidates(pred_dir: Path, ref: SampleRef, seg_map_suffix: str) -> list[Path]:
    """Names under which a prediction PNG of `ref` is accepted, in order of preference."""
    stem = ref.stem
    base = stem.rsplit("/", 1)[-1]
    names = [f"{stem}{seg_map_suffix}", f"{stem}.png", f"{base}{seg_map_suffix}", f"{base}.png"]
    seen: list[Path] = []
    for name in names:
        path = pred_dir / name
        if path not in seen:
            seen.append(path)
    return seen


class _ScoreDataset:
    """Items: label (as evaluated) and prediction (class ids as saved), or an error message."""

    def __init__(self, spec: DatasetSpec, samples: list[SampleRef], pred_dir: Path) -> None:
        self.spec, self.samples, self.pred_dir = spec, samples, pred_dir
        self.suffix = spec.layout.seg_map_suffix if spec.layout else ".png"

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ref = self.samples[index]
        item: dict[str, Any] = {"stem": ref.stem, "label_path": str(ref.label_path)}
        try:
            assert ref.label_path is not None  # a benchmark's samples have labels
            label = load_label(ref.label_path, self.spec.reduce_zero_label, self.spec.ignore_index)
            candidates = prediction_candidates(self.pred_dir, ref, self.suffix)
            path = next((p for p in candidates if p.is_file()), None)
            if path is None:
                raise DataError(f"no prediction for {ref.stem}: looked for {', '.join(map(str, candidates))}")
            pred = load_label(path)
            if pred.shape != label.shape:
                raise DataError(
                    f"size mismatch: prediction {path} is {pred.shape[1]}x{pred.shape[0]} but label "
                    f"{ref.label_path} is {label.shape[1]}x{label.shape[0]} (WxH)"
                )
            item.update(label=label, pred=pred, pred_path=str(path))
        except DataError as exc:
            item["error"] = str(exc)
        return item


def score(
    spec: DatasetSpec,
    data_root: str | os.PathLike,
    pred_dir: str | os.PathLike,
    cfg: RunConfig,
) -> dict[str, Any]:
    """Score saved prediction PNGs (pixel value = class id) with the same metric; writes the same files.

    Predicted values outside 0..C-1 (e.g. 255) count for no class, as in MMSegmentation.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise DataError(f"prediction folder not found: {pred_dir}")
    samples = list_samples(spec, data_root, cfg.limit)
    metric = SegMetric(spec.num_classes, spec.ignore_index, device=cfg.device, strict=False)
    loader: torch.utils.data.DataLoader[dict[str, Any]] = torch.utils.data.DataLoader(
        # torch takes any map-style dataset (__getitem__, __len__); its stub asks for a Dataset subclass
        _ScoreDataset(spec, samples, pred_dir),  # type: ignore[arg-type]
        batch_size=max(1, cfg.batch_size),
        num_workers=cfg.num_workers,
        collate_fn=_collate,
        multiprocessing_context=mp.get_context("spawn") if cfg.num_workers > 0 else None,
    )
    out = cfg.out_dir(spec.name) if cfg.out else pred_dir.parent / "score"
    with hold_folder(out, "score folder"):  # a run or another score writing the same metrics.json is refused
        report = _score_into(spec, data_root, pred_dir, cfg, loader, metric, len(samples), out)
    return report


def _score_into(spec: DatasetSpec, data_root: str | os.PathLike, pred_dir: Path, cfg: RunConfig, loader: Any,
                metric: SegMetric, total: int, out: Path) -> dict[str, Any]:
    """Score every batch of `loader` into `metric`, then write the report to `out` (held by the caller)."""
    skipped: list[dict[str, str]] = []
    start = time.perf_counter()
    with tqdm(total=total, desc=f"score {spec.name}", unit="img", disable=not cfg.progress) as bar:
        for batch in loader:
            for item in batch:
                if "error" in item:
                    if not cfg.skip_bad:
                        raise DataError(f"{item['error']} (pass --skip-bad to skip such files)")
                    skipped.append({"stem": item["stem"], "error": item["error"]})
                else:
                    metric.update(torch.from_numpy(item["pred"]), torch.from_numpy(item["label"]))
                bar.update(1)
    seconds = time.perf_counter() - start
    report = build_report(
        spec=spec,
        summary=metric.compute(),
        method_description={"name": "score", "pred_dir": str(pred_dir.resolve())},
        settings={"run": cfg.model_dump(mode="json"), "data_root": str(data_root), "world_size": 1, "out": str(out)},
        extra_info=None,
        skipped=skipped,
        wall_time_s=seconds,
        images_this_session=metric.num_images,
        device=cfg.device,
        resumed=False,
    )
    write_results(out, report, metric.confusion.cpu().numpy())
    return report
