"""`llmseg tune`: choose a method's free numbers on a held-out split, write a preset, evaluate val once.

A thin shell over `llmseg.stage2.experiments.tune.tune`; any other MethodConfig field is `--set FIELD=VALUE`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from llmseg.errors import ConfigError
from llmseg.stage2.cli.compare import _parse_sets, method_config
from llmseg.stage2.cli.options import with_method_options


def register(app: typer.Typer) -> None:
    @app.command("tune")
    @with_method_options(only=("method", "backbone", "pretrained", "checkpoint", "preset", "label_set"))
    def tune_command(
        dataset: Annotated[str, typer.Option("--dataset", "-d", help="A benchmark name or dataset folder.")],
        grid: Annotated[list[str] | None, typer.Option(
            "--grid", "-g", help="FIELD=V1,V2,... to search (repeat; 'none' = unset). Fields: prob_thd, logit_scale, "
            "area_thd, top_cls_num, assembly, k. Default: a small grid for the method.")] = None,
        sets: Annotated[list[str] | None, typer.Option("--set", help="Any other MethodConfig field as FIELD=VALUE, fixed in every trial.")] = None,
        tune_split: Annotated[str, typer.Option(help="The held-out split the numbers are chosen on (never the evaluation split).")] = "train",
        tune_images: Annotated[int, typer.Option(help="Images drawn (seeded) from the tuning split; 0 = all of them.")] = 500,
        seed: Annotated[int, typer.Option(help="Seed of the image draw and of --search random.")] = 0,
        search: Annotated[str, typer.Option(help="grid (every point) or random (--trials points of the grid).")] = "grid",
        trials: Annotated[int | None, typer.Option(help="Points drawn by --search random.")] = None,
        max_trials: Annotated[int, typer.Option(help="Refuse a grid larger than this.")] = 64,
        final: Annotated[bool, typer.Option("--final/--no-final", help="Evaluate the evaluation split once with the choice (default).")] = True,
        limit: Annotated[int | None, typer.Option(help="Final run: only the first N evaluation images.")] = None,
        name: Annotated[str | None, typer.Option(help="Name of the preset written (default <preset>-tuned-<dataset>).")] = None,
        data_root: Annotated[Path, typer.Option(help="Where the datasets are.")] = Path("data"),
        out: Annotated[Path, typer.Option(help="Tuning folder: trials/, the preset, final/, tune.json, tune.md.")] = Path("results/tune"),
        device: Annotated[str, typer.Option(help="cpu, cuda, ...")] = "cpu",
        batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 1,
        num_workers: Annotated[int, typer.Option(help="DataLoader decoding processes.")] = 2,
        resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Reuse finished trials and continue interrupted ones (default).")] = True,
        progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars.")] = True,
        *,
        method_options: dict[str, Any],
    ) -> None:
        """Tune thresholds, temperature, assembly and K on a held-out split; write a preset; evaluate val once."""
        # lazy import: start-up time (llmseg --help does not load torch, PIL and the engine)
        from llmseg.stage2.engine.runner import RunConfig
        from llmseg.stage2.experiments.tune import tune

        fields = {**method_options, "device": device, **_parse_sets(sets or [])}
        config = method_config(fields)
        try:
            run = RunConfig(device=device, batch_size=batch_size, num_workers=num_workers, progress=progress)
        except ValueError as exc:  # pydantic's ValidationError: a bad value of a user option
            raise ConfigError(f"invalid settings: {exc}") from None
        summary = tune(
            config, dataset, data_root, out, space=grid or None, tune_split=tune_split,
            tune_images=tune_images or None, seed=seed, search=search, trials=trials, max_trials=max_trials,
            final=final, limit=limit, preset_name=name, run=run, resume=resume, echo=typer.echo,
        )
        typer.echo((out / "tune.md").read_text())
        typer.echo(f"wrote {out}/tune.json and {out}/{summary['preset']}")
