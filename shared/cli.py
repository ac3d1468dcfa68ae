"""The `llmseg` command: a typer root that mounts both stages' sub-commands.

Each stage exposes `register(app)`; heavy imports (torch, open_clip) happen inside the
commands, so `llmseg --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from llmseg.stage1.cli import register as register_stage1
from llmseg.stage2.cli.commands import register as register_stage2

from . import __version__
from .cli_help import apply as _fix_help
from .cli_support import LlmsegGroup, echo, fail
from .datasets import get_dataset
from .io import atomic_write_json
from .labelset import ValidationReport, clip_token_counter, read_label_set_json, validate_label_set
from .resources import resolve_label_set_path
from .templates import load_templates

_fix_help()  # flags without "<bool>", help text without rich markup

app = typer.Typer(
    name="llmseg",
    cls=LlmsegGroup,  # an LlmsegError from any command: `error: <message>`, exit 2; anything else is a bug
    help="Training-free open-vocabulary semantic segmentation supervised by an LLM.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # `llmseg --install-completion` (bash, zsh, fish, PowerShell)
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"llmseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = False,
) -> None:
    """Stage one asks an LLM for subclasses; stage two segments with them and scores mIoU."""


@app.command("validate")
def validate_command(
    label_set: Annotated[Path, typer.Argument(help="The label-set JSON file to check.")],
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="Dataset whose classes the keys must match.")] = None,
    classes_file: Annotated[Path | None, typer.Option(help="A classes.txt instead of (or overriding) --dataset.")] = None,
    fix: Annotated[Path | None, typer.Option("--fix", help="Write a cleaned copy here (atomically).")] = None,
    check_length: Annotated[bool, typer.Option(help="Warn about entries too long for the CLIP text encoder.")] = True,
    context_length: Annotated[int, typer.Option(help="Text encoder context length in tokens.")] = 77,
    templates: Annotated[str, typer.Option(help="Template set whose longest template is used for the length check.")] = "openai80",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the summary line.")] = False,
    backbone: Annotated[str | None, typer.Option(help="Also embed every subclass with this backbone's text encoder "
                                                      "(family[:arg], e.g. openclip:ViT-B-16) and report ambiguous, "
                                                      "near-duplicate and far-spread subclasses (on --templates).")] = None,
    pretrained: Annotated[str | None, typer.Option(help="--backbone: open_clip weights tag or local weights file.")] = None,
    checkpoint: Annotated[str | None, typer.Option(help="--backbone simseg: the SimSeg checkpoint.")] = None,
    random_weights: Annotated[bool, typer.Option("--random-weights", help="--backbone with seeded random weights (tests only).")] = False,
    device: Annotated[str, typer.Option(help="--backbone: torch device.")] = "cpu",
    duplicate_threshold: Annotated[float, typer.Option(help="--backbone: two subclasses of a class at or above this cosine are near-duplicates.")] = 0.95,
    spread_threshold: Annotated[float, typer.Option(help="--backbone: a class whose subclasses' mean cosine to its name is below this spreads too far.")] = 0.7,
    margin: Annotated[float, typer.Option(help="--backbone: a subclass is ambiguous when another class is nearer than its own by more than this cosine.")] = 0.0,
) -> None:
    """Check a label set against a dataset's classes. Exit 0 clean, 1 warnings only, 2 errors.

    With --backbone, also the CLIP-aware checks (llmseg.stage2.experiments.label_check); their findings are warnings.
    """
    dataset_name = _dataset_name(dataset, classes_file)
    if fix is not None and fix.is_dir():
        raise fail(f"--fix {fix} is a folder; give the file to write, e.g. {fix / 'clean.json'}")
    # a missing file, unknown dataset or bad template set raises an LlmsegError: `error: ...`, exit 2
    path = resolve_label_set_path(label_set)
    spec = get_dataset(dataset_name, classes_file=classes_file)
    raw = read_label_set_json(path)
    counter = longest = None
    if check_length:
        counter = clip_token_counter()
        longest = max(load_templates(templates), key=len)
    report = validate_label_set(
        raw,
        spec.classes,
        source=str(path),
        token_counter=counter,
        context_length=context_length,
        longest_template=longest or "a photo of a {}.",
    )
    if not quiet:
        _print_issues(path, report)
    clip_lines: list[str] = []
    if backbone is not None:
        clip_lines = _clip_findings(
            path, report, raw, quiet=quiet, backbone=backbone, pretrained=pretrained, checkpoint=checkpoint,
            random_weights=random_weights, device=device, templates=templates,
            duplicate_threshold=duplicate_threshold, spread_threshold=spread_threshold, margin=margin,
        )
    counts = {s: sum(1 for i in report.issues if i.severity == s) for s in ("error", "warning", "info")}
    counts["warning"] += len(clip_lines)
    echo(f"{path}: {counts['error']} errors, {counts['warning']} warnings, {counts['info']} notes ({spec.name}, {spec.num_classes} classes)")
    if fix is not None:
        _write_fixed(fix, report)
    raise typer.Exit(report.exit_code or (1 if clip_lines else 0))


def _dataset_name(dataset: str | None, classes_file: Path | None) -> str:
    """The dataset whose classes the keys must match: --dataset, else the --classes-file's folder name."""
    if classes_file is None:  # an empty --dataset "" names nothing either
        if not dataset:
            raise fail("give --dataset NAME or --classes-file FILE")
        return dataset
    return dataset or classes_file.parent.name


def _print_issues(path: Path, report: ValidationReport) -> None:
    """One line per issue, errors red and warnings yellow."""
    for issue in report.issues:
        colour = {"error": typer.colors.RED, "warning": typer.colors.YELLOW}.get(issue.severity)
        echo(f"{path}: {issue}", fg=colour)  # keys and entries come from the file: control characters escaped


def _clip_findings(
    path: Path, report: ValidationReport, raw: Any, *, quiet: bool, backbone: str, pretrained: str | None,
    checkpoint: str | None, random_weights: bool, device: str, templates: str,
    duplicate_threshold: float, spread_threshold: float, margin: float,
) -> list[str]:
    """--backbone: the CLIP-aware findings (printed unless --quiet); none when the label set has errors to fix first."""
    if report.errors:
        typer.secho(f"{path}: not running the --backbone checks: fix the errors above first", err=True, fg=typer.colors.RED)
        return []
    # lazy import: start-up time (label_check loads torch and open_clip; `llmseg --help` and `import llmseg.cli` do not)
    from llmseg.stage2.experiments.label_check import check_label_set_clip, load_text_backbone

    encoder = load_text_backbone(backbone, pretrained, random_weights=random_weights, checkpoint=checkpoint, device=device)
    clip_report = check_label_set_clip(
        report.fixed if report.fixed is not None else raw, encoder, templates=templates,
        duplicate_threshold=duplicate_threshold, spread_threshold=spread_threshold, margin=margin,
    )
    clip_lines = clip_report.lines()
    if not quiet:
        for line in clip_lines:
            echo(f"{path}: {line}", fg=typer.colors.YELLOW)
    return clip_lines


def _write_fixed(fix: Path, report: ValidationReport) -> None:
    """--fix: write the cleaned copy atomically, or say why there is none."""
    if report.fixed is None:
        typer.secho(f"not writing {fix}: the errors above cannot be fixed automatically", err=True, fg=typer.colors.RED)
        return
    try:
        atomic_write_json(fix, report.fixed)
    except OSError as exc:  # read-only or full disk, a file where a folder should be...
        raise fail(f"cannot write --fix {fix}: {exc.strerror or exc}") from exc
    echo(f"wrote cleaned copy to {fix}")


def _mount_stages() -> None:
    register_stage1(app)
    register_stage2(app)
    __import__("llmseg.stage2.app.cli", fromlist=["register"]).register(app)  # `llmseg app`: Gradio loads lazily


_mount_stages()


def main() -> None:  # console-script entry point
    app()


if __name__ == "__main__":
    main()
