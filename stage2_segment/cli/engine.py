"""Engine commands: `llmseg data convert|check`, `llmseg score`, `llmseg evaluate`.

The commands are declared at module level and `register` adds them to the root app. The data
readers and the engine (torch, PIL, worker pools) are imported inside the commands so `llmseg --help` stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from llmseg.cli_support import fail, option_errors
from llmseg.datasets import DatasetSpec, get_dataset
from llmseg.stage2 import methods, preflight
from llmseg.stage2.cli import options as opts
from llmseg.stage2.config import MethodConfig

_R = "Run"

# MethodConfig fields that `evaluate` exposes as options: all of them (cli.options.with_method_options).
METHOD_FIELDS = tuple(opts.OPTION_TYPES)


def _spec(dataset: str, classes_file: Path | None) -> DatasetSpec:
    """The benchmark; an unknown name or a bad class file raises DatasetError (the root app: exit 2)."""
    return get_dataset(dataset, classes_file=classes_file)


def default_run_name(config: Any) -> str:
    """e.g. dense-openclip-ViT-B-16-sclip-top5: readable and distinct for the usual comparisons."""
    parts = [config.method, config.backbone.replace(":", "-").replace("/", "-")]
    if config.preset:
        parts.append(config.preset)
    if config.dense_mode:
        parts.append(config.dense_mode)
    if config.label_set:
        parts.append(Path(config.label_set).stem)
        if config.assembly:
            parts.append(config.assembly)
    if config.pamr:
        parts.append("pamr")
    if config.crf:
        parts.append("crf")
    return "-".join(parts)


def _summary_line(report: dict, out: Path) -> str:
    def fmt(value):
        return "-" if value is None else f"{value:.2f}"

    return (
        f"{report['dataset']}: mIoU {fmt(report['mIoU'])}  mAcc {fmt(report['mAcc'])}  aAcc {fmt(report['aAcc'])}  "
        f"({report['num_images']} images, {report['num_skipped']} skipped) -> {out / 'metrics.json'}"
    )


def register(app: typer.Typer) -> None:
    """Add `data` (with `convert` and `check`), `score` and `evaluate` to the root app."""
    data_app = typer.Typer(help="Prepare and check benchmark datasets (MMSegmentation layout under --data-root).",
                           no_args_is_help=True)
    app.add_typer(data_app, name="data")
    data_app.command("convert")(convert_command)
    data_app.command("check")(check_command)
    app.command("score")(score_command)
    app.command("evaluate")(evaluate_command)


def convert_command(
    kind: Annotated[str, typer.Argument(help="coco_stuff (raw stuffthingmaps -> *_labelTrainIds.png), coco_object "
                                             "(*_labelTrainIds.png -> *_instanceTrainIds.png), ade847 (ADE20K-Full "
                                             "-> *_detectron2) or pc459 (PASCAL Context trainval/*.mat -> "
                                             "annotations_detectron2/pc459_val/*.tif; needs scipy).")],
    root: Annotated[Path, typer.Argument(help="The dataset folder, e.g. data/coco_stuff164k, "
                                              "data/ADE20K_2021_17_01 or data/VOCdevkit/VOC2010.")],
    workers: Annotated[int | None, typer.Option(help="Worker processes (0 = inline; default: CPU count, max 8).")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Derive benchmark label files; idempotent (identical outputs are left alone), atomic per file."""
    # lazy import: start-up time (llmseg --help does not load PIL, OpenCV and the converters' worker pool)
    from llmseg.stage2.data.convert import convert

    report = convert(kind, root, workers=workers, progress=progress)  # DataError: exit 2
    for message in report.errors:
        typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    typer.echo(f"{kind}: {len(report.written)} written, {len(report.skipped)} already up to date, "
               f"{len(report.errors)} errors")
    raise typer.Exit(1 if report.errors else 0)


def check_command(
    dataset: Annotated[str, typer.Argument(help="Benchmark name, e.g. pascal_voc, or a dataset folder (classes.txt + dataset.json).")],
    data_root: Annotated[Path, typer.Option(help="Folder holding the datasets.")] = Path("data"),
    classes_file: Annotated[Path | None, typer.Option(help="Override the class list.")] = None,
    limit: Annotated[int | None, typer.Option(help="Check the first N samples only.")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (0 = inline).")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Every listed image has a readable label of the same size with values in the classes or 255."""
    # lazy import: start-up time (llmseg --help does not load PIL and the checker's worker pool)
    from llmseg.stage2.data.check import check_dataset

    spec = _spec(dataset, classes_file)
    report = check_dataset(spec, data_root, limit=limit, workers=workers, progress=progress)
    for path, message in report.problems:
        typer.secho(f"{path}: {message}", err=True, fg=typer.colors.RED)
    status = "OK" if report.ok else f"{len(report.problems)} problems"
    typer.echo(f"{spec.name}: {report.num_samples} samples checked under {spec.data_dir(data_root)}: {status}")
    raise typer.Exit(0 if report.ok else 1)


def score_command(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Benchmark whose labels to score against.")],
    pred_dir: Annotated[Path, typer.Option(help="Folder of prediction PNGs (pixel value = class id, named like "
                                                "the label file or the image stem).")],
    data_root: Annotated[Path, typer.Option(help="Folder holding the datasets.")] = Path("data"),
    out: Annotated[Path | None, typer.Option(help="Result folder (default: PRED_DIR/../score).")] = None,
    classes_file: Annotated[Path | None, typer.Option(help="Override the class list.")] = None,
    limit: Annotated[int | None, typer.Option(help="Score the first N images only.")] = None,
    skip_bad: Annotated[bool, typer.Option(help="Skip (and list) images whose prediction or label is missing/bad.")] = False,
    num_workers: Annotated[int, typer.Option(help="Decoding processes.")] = 2,
    device: Annotated[str, typer.Option(help="Where the confusion matrix lives.")] = "cpu",
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Score saved prediction PNGs with the same metric as `evaluate`; writes metrics.json / metrics.md."""
    # lazy import: start-up time (llmseg --help does not load torch, PIL and the engine)
    from llmseg.stage2.data.readers import DataError
    from llmseg.stage2.engine.runner import RunConfig, score

    spec = _spec(dataset, classes_file)
    cfg = RunConfig(out=str(out) if out else None, limit=limit, skip_bad=skip_bad, num_workers=num_workers,
                    device=device, progress=progress, run_name="score")
    try:
        report = score(spec, data_root, pred_dir, cfg)
    except DataError as exc:  # a missing/bad prediction or label: the run failed, exit 1
        raise fail(str(exc), 1) from exc
    typer.echo(_summary_line(report, Path(report["settings"]["out"])))


@opts.with_method_options(defaults={"device": "cpu"})
def evaluate_command(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Benchmark name.", rich_help_panel=_R)],
    data_root: Annotated[Path, typer.Option(help="Folder holding the datasets (MMSeg layout).", rich_help_panel=_R)] = Path("data"),
    classes_file: Annotated[Path | None, typer.Option(help="Override the class list.", rich_help_panel=_R)] = None,
    out: Annotated[Path | None, typer.Option(help="Result folder (default results/<dataset>/<run-name>/).", rich_help_panel=_R)] = None,
    run_name: Annotated[str | None, typer.Option(help="Name of the run (default: from the method settings).", rich_help_panel=_R)] = None,
    limit: Annotated[int | None, typer.Option(help="Evaluate the first N images.", rich_help_panel=_R)] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward call.", rich_help_panel=_R)] = 1,
    num_workers: Annotated[int, typer.Option(help="DataLoader decoding processes.", rich_help_panel=_R)] = 2,
    post_workers: Annotated[int, typer.Option(help="Processes for CPU post-processing (CRF); 0 = inline.", rich_help_panel=_R)] = 0,
    save_pred: Annotated[bool, typer.Option(help="Write prediction PNGs (re-scorable with `llmseg score`).", rich_help_panel=_R)] = False,
    save_vis: Annotated[int, typer.Option(help="Write colour overlays of the first N images.", rich_help_panel=_R)] = 0,
    skip_bad: Annotated[bool, typer.Option(help="Skip (and list) corrupt/missing images or labels.", rich_help_panel=_R)] = False,
    checkpoint_every: Annotated[int, typer.Option(help="Checkpoint the metric every N images.", rich_help_panel=_R)] = 100,
    checkpoint_seconds: Annotated[float, typer.Option(help="Also checkpoint once this many seconds have passed since the last checkpoint.", rich_help_panel=_R)] = 30.0,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from a checkpoint in --out.", rich_help_panel=_R)] = True,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.", rich_help_panel=_R)] = True,
    *,
    method_options: dict[str, Any],
) -> None:
    """Evaluate a method on a benchmark: mIoU / mAcc / aAcc as MMSegmentation computes them."""
    # lazy import: start-up time (llmseg --help does not load torch)
    from llmseg.stage2.engine.distributed import this_rank_device

    spec = _spec(dataset, classes_file)
    # under torchrun each rank builds its model on its own GPU: settle the device before anything is built
    device = this_rank_device(method_options.get("device", "cpu"))
    config = _method_config({**method_options, "device": device})
    # lazy import: start-up time (llmseg --help does not load torch, PIL and the engine)
    from llmseg.stage2.data.readers import DataError
    from llmseg.stage2.engine.runner import RunConfig, RunError, evaluate

    try:
        run_cfg = RunConfig(
            out=str(out) if out else None, run_name=run_name or default_run_name(config), limit=limit,
            batch_size=batch_size, num_workers=num_workers, post_workers=post_workers, save_pred=save_pred,
            save_vis=save_vis, skip_bad=skip_bad, checkpoint_every=checkpoint_every,
            checkpoint_seconds=checkpoint_seconds, resume=resume, device=device,
            progress=progress,
        )
    except ValidationError as exc:
        raise option_errors(exc, "invalid run settings") from exc
    preflight.check_dataset(spec, data_root)  # every input before any model is built: LlmsegError, exit 2
    preflight.check_method_inputs(config, spec.classes)
    built = methods.build_method(config, classes=spec.classes, dataset=spec.name)  # bad settings/files: LlmsegError, exit 2
    try:
        report = evaluate(built, spec, data_root, run_cfg, extra_info={"method_config": config.model_dump(mode="json")})
    except (DataError, RunError) as exc:  # the data or the run failed part-way: exit 1
        raise fail(str(exc), 1) from exc
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports (and writes)
        typer.echo(_summary_line(report, run_cfg.out_dir(spec.name)))


def _method_config(given: dict[str, Any]) -> MethodConfig:
    """The method settings `evaluate` was given; a bad value is reported per option (exit 2)."""
    try:
        return MethodConfig(**given)
    except ValidationError as exc:
        raise option_errors(exc, "invalid method settings") from exc
