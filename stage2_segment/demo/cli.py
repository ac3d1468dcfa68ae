"""`llmseg demo train`, `llmseg demo run` (what `make demo` calls) and `llmseg demo data` (a split of its benchmark)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from llmseg.cli_support import fail

from .train import TrainConfig, default_train_out, save_compact, train

demo_app = typer.Typer(
    name="demo",
    help="The offline demo world: a small CLIP trained on generated shapes, names vs LLM subclasses.",
    no_args_is_help=True,
    add_completion=False,
)


@demo_app.command("train")
def train_command(
    out: Annotated[Path | None, typer.Option(help="Where to write the compact weights (default: ./llmseg-demo-clip.safetensors in the working directory; the shipped weights in the installed package are never overwritten). Use them with: llmseg demo run --weights PATH.")] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Training steps (default 400).")] = None,
    batch_size: Annotated[int | None, typer.Option(min=2, help="Batch size (default 128).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for initialisation and batch order.")] = 0,
    pool_size: Annotated[int | None, typer.Option(min=8, help="Distinct generated training scenes (default 4096).")] = None,
) -> None:
    """Train the demo CLIP contrastively (open_clip.ClipLoss) on generated image/caption pairs."""
    cfg = TrainConfig(seed=seed)
    if steps is not None:
        cfg.steps = steps
    if batch_size is not None:
        cfg.batch_size = batch_size
    if pool_size is not None:
        cfg.pool_size = pool_size
    target = out or default_train_out()
    if target.suffix != ".safetensors":
        raise fail(f"--out must end in .safetensors: {target}")
    result = train(cfg)
    save_compact(result, target, cfg)
    typer.echo(
        f"trained {cfg.steps} steps in {result.seconds:.0f} s: contrastive loss {result.losses[0]:.3f} -> "
        f"{result.losses[-1]:.3f}; weights: {target} (use them: llmseg demo run --weights {target})"
    )


@demo_app.command("run")
def run_command(
    out: Annotated[Path, typer.Option(help="Result folder.")] = Path("results/demo"),
    n_images: Annotated[int | None, typer.Option("--n-images", min=1, help="Benchmark images (default 200).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="A smoke run on a few images.")] = False,
    weights: Annotated[Path | None, typer.Option(help="Compact demo weights (default: shipped, else trained now).")] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Training steps if the weights must be trained.")] = None,
    crf: Annotated[bool, typer.Option(help="Also run every setting with CRF refinement.")] = True,
    save_vis: Annotated[int, typer.Option(min=0, help="Overlays per run.")] = 6,
    progress: Annotated[bool, typer.Option(help="Progress bars.")] = True,
) -> None:
    """Benchmark -> demo CLIP -> stage one (scripted server, offline) -> stage two -> mIoU table."""
    # lazy import: start-up time (llmseg --help does not load the engine and torch that the demo run needs)
    from .run import DEFAULT_IMAGES, QUICK_IMAGES, run_demo

    count = n_images or (QUICK_IMAGES if quick else DEFAULT_IMAGES)
    # a missing or bad --weights file raises an LlmsegError: the root app reports it (exit 2)
    result = run_demo(
        out,
        count,
        weights=weights,
        steps=steps,
        crf=crf,
        save_vis=min(save_vis, count),
        progress=progress,
        echo=typer.echo,
    )
    typer.echo("")
    typer.echo(result.table)
    typer.echo("")
    typer.echo(f"done in {result.seconds:.0f} s. Results: {result.out}/ (table.txt, summary.json)")
    if result.pictures:
        typer.echo(f"side-by-side pictures (picture | ground truth | names | subclasses): {result.out}/overlays/*.png")
    typer.echo(f"per-run metrics and overlays: {result.out}/runs/<run>/metrics.json and {result.out}/runs/<run>/vis/*.png")


@demo_app.command("data")
def data_command(
    data_root: Annotated[Path, typer.Option(help="Data root to write the demo benchmark under (VOC layout).")] = Path("results/demo/data"),
    split: Annotated[str, typer.Option(help="val (what `demo run` scores) or another split, e.g. train for `llmseg tune`.")] = "val",
    n_images: Annotated[int, typer.Option("--n-images", min=1, help="Images in the split.")] = 200,
    progress: Annotated[bool, typer.Option(help="Progress bar.")] = True,
) -> None:
    """Write one split of the demo benchmark (other splits are drawn with seeds of their own, never val's scenes)."""
    # lazy import: start-up time (llmseg --help does not load PIL and the picture writers)
    from .benchmark import split_seed, write_benchmark

    spec = write_benchmark(data_root, n_images=n_images, split=split, progress=progress)
    typer.echo(f"demo '{split}': {n_images} images (seed {split_seed(split)}) under {spec.data_dir(data_root)}")


def register(app: typer.Typer) -> None:
    """Mount `demo` on the root `llmseg` app."""
    app.add_typer(demo_app, name="demo")
