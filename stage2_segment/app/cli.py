"""`llmseg app`: registered without importing Gradio or torch, so `llmseg --help` stays fast without the extra."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from llmseg.errors import LlmsegError
from llmseg.stage2.cli.options import with_method_options

_M = "Model"
_L = "Subclasses from an LLM"
_S = "Server"
# The model options are the MethodConfig fields of the same names (help and registered names from cli.options).
MODEL_FIELDS = ("backbone", "pretrained", "checkpoint", "method", "preset", "device")
MODEL_DEFAULTS = {"backbone": "demo", "method": "dense", "device": "cpu"}
MODEL_NOTES = {"backbone": "In the app, 'demo' is the bundled demo CLIP (offline, no downloads)."}


def register(app: typer.Typer) -> None:
    """Add `app` to the root `llmseg` app."""

    @app.command("app")
    @with_method_options(only=MODEL_FIELDS, defaults=MODEL_DEFAULTS, notes=MODEL_NOTES)
    def app_command(
        host: Annotated[str, typer.Option(help="Address to serve on (keep 127.0.0.1 unless you mean to expose it).", rich_help_panel=_S)] = "127.0.0.1",
        port: Annotated[int, typer.Option(min=0, max=65535, help="Port.", rich_help_panel=_S)] = 7860,
        base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible server for 'subclasses from an LLM'.", rich_help_panel=_L)] = None,
        llm_model: Annotated[str, typer.Option(help="The LLM to ask.", rich_help_panel=_L)] = "gpt-4o-mini",
        llm_backend: Annotated[str, typer.Option(help="Stage-one backend: openai | hf.", rich_help_panel=_L)] = "openai",
        api_key_env: Annotated[str, typer.Option(help="Environment variable holding the API key.", rich_help_panel=_L)] = "OPENAI_API_KEY",
        k: Annotated[int, typer.Option(min=1, help="Subclasses per class.", rich_help_panel=_L)] = 5,
        cache_dir: Annotated[Path | None, typer.Option(help="Demo weights, examples, stage-one answers and outputs (default ~/.cache/llmseg).", rich_help_panel=_S)] = None,
        max_pixels: Annotated[int, typer.Option(min=1, help="Largest image accepted, in pixels.", rich_help_panel=_S)] = 4096 * 4096,
        allow_local_weights: Annotated[bool, typer.Option("--allow-local-weights", help="Let the page's Weights box load weight files and checkpoints from this machine (off: bundled names and open_clip pretrained tags only).", rich_help_panel=_M)] = False,
        max_file_mb: Annotated[float, typer.Option(min=0.1, help="Largest upload accepted, in MB.", rich_help_panel=_S)] = 50.0,
        keep_outputs: Annotated[int, typer.Option(min=0, help="Downloads of the newest N requests kept in CACHE_DIR/app/outputs; older ones are removed (0: keep all).", rich_help_panel=_S)] = 200,
        *,
        method_options: dict[str, Any],
    ) -> None:
        """A local web page: upload an image, type classes, see the overlay, legend and downloads (needs the app extra: llmseg\\[app])."""
        # lazy import: start-up time (`llmseg --help` loads neither the page's modules nor the Python API they import)
        from .core import AppSettings, user_cache_dir

        backbone, method = method_options["backbone"], method_options["method"]
        try:
            # lazy import: start-up time (`llmseg --help` loads neither the page's modules nor the Python API they import)
            from .ui import import_gradio, launch

            import_gradio()
            settings = AppSettings(
                backbone=backbone,
                weights=method_options.get("checkpoint") if backbone == "simseg" else method_options.get("pretrained"),
                method=method,
                preset=method_options.get("preset"),
                device=method_options["device"],
                cache_dir=cache_dir or user_cache_dir(),
                max_pixels=max_pixels,
                max_file_mb=max_file_mb,
                keep_outputs=keep_outputs,
                allow_local_weights=allow_local_weights,
                llm_backend=llm_backend,
                llm_model=llm_model,
                base_url=base_url,
                api_key_env=api_key_env,
                k=k,
            )
            typer.echo(f"llmseg app: loading {backbone} ({method}) ...")
            launch(settings, host=host, port=port)
        except (LlmsegError, OSError, ValueError) as exc:
            typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
            raise typer.Exit(2) from exc
