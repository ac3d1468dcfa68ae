"""`llmseg compare`: a grid of label sets x presets x datasets, each cell an ordinary evaluate run.

A thin shell over `llmseg.stage2.experiments.compare.compare`; --method, --backbone, --pretrained and --checkpoint
come from MethodConfig (cli.options.with_method_options), every other MethodConfig option is
accepted as `--set FIELD=VALUE` and applies to every cell, `--preset` may be repeated (one variant each).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from llmseg.cli_support import fail
from llmseg.errors import ConfigError
from llmseg.stage2.cli.options import with_method_options
from llmseg.stage2.config import MethodConfig


def _parse_sets(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise fail(f"--set expects FIELD=VALUE, got '{pair}'")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def method_config(fields: Mapping[str, object]) -> MethodConfig:
    """The MethodConfig of the given option values; an unknown field or a bad value is a ConfigError."""
    unknown = sorted(set(fields) - set(MethodConfig.model_fields))
    if unknown:
        raise ConfigError(f"--set: no such setting {', '.join(unknown)} (see llmseg evaluate --help)")
    try:
        return MethodConfig.model_validate(fields)
    except ValueError as exc:  # pydantic's ValidationError: a bad value of a user option
        raise ConfigError(f"invalid settings: {exc}") from None


def register(app: typer.Typer) -> None:
    @app.command("compare")
    @with_method_options(only=("method", "backbone", "pretrained", "checkpoint"))
    def compare_command(
        dataset: Annotated[list[str], typer.Option("--dataset", "-d", help="A benchmark name or dataset folder (repeat for several).")],
        label_set: Annotated[list[str], typer.Option(
            "--label-set", "-l",
            help="'names' (class names only), a label-set file, or NAME=FILE; '{dataset}' in a path is replaced per dataset. Repeat.",
        )],
        preset: Annotated[list[str] | None, typer.Option("--preset", "-p", help="A preset name or file; repeat for one variant each.")] = None,
        sets: Annotated[list[str] | None, typer.Option("--set", help="Any other MethodConfig field as FIELD=VALUE (e.g. --set prob_thd=0.2).")] = None,
        data_root: Annotated[Path, typer.Option(help="Where the datasets are.")] = Path("data"),
        out: Annotated[Path, typer.Option(help="Grid folder: cells/, compare.json, compare.md, pictures.")] = Path("results/compare"),
        limit: Annotated[int | None, typer.Option(help="Only the first N images of each dataset.")] = None,
        device: Annotated[str, typer.Option(help="cpu, cuda, ...")] = "cpu",
        overlays: Annotated[int, typer.Option(help="Side-by-side overlays of this many images per dataset and variant.")] = 4,
        plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Bar charts (needs matplotlib: pip install 'llmseg[plots]').")] = True,
        resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Reuse finished cells (default).")] = True,
        *,
        method_options: dict[str, Any],
    ) -> None:
        """Compare label sets (e.g. several LLMs' against class names) across presets and datasets."""
        # lazy import: start-up time (llmseg --help does not load torch, PIL and the engine)
        from llmseg.stage2.engine import runner
        from llmseg.stage2.experiments.compare import compare, variants_from_presets

        fields = {**method_options, "device": device, **_parse_sets(sets or [])}
        base = method_config(fields)
        variants = variants_from_presets(base, preset or []) if preset else {base.method: base}
        summary = compare(dataset, label_set, variants, data_root, out, run=runner.RunConfig(limit=limit),
                          overlays=overlays, plots=plots, resume=resume, echo=typer.echo)
        typer.echo((out / "compare.md").read_text())
        typer.echo(f"{summary['cells_evaluated']} cells evaluated, {summary['cells_reused']} reused; wrote {out}/compare.json")
