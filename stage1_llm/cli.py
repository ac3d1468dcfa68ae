"""`llmseg subclasses`: stage one's commands, a thin layer over `llmseg.stage1.generate`.

    llmseg subclasses DATASET [OPTIONS]        generate (the default sub-command: `generate` may be omitted)
    llmseg subclasses diff A.json B.json       compare two label sets class by class
    llmseg subclasses refine L.json -d D --backbone B   (or --refine L.json) re-ask for subclasses CLIP confuses
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from llmseg.cli_support import echo, fail, safe_text
from llmseg.datasets import DatasetSpec, get_dataset
from llmseg.labelset import (
    LabelSet,
    LabelSetError,
    LabelSetMeta,
    load_label_set,
    load_meta,
    read_label_set_json,
    save_label_set,
)
from llmseg.locks import hold_label_set
from llmseg.redact import redact_url, redact_urls
from llmseg.resources import label_sets_output_dir, resolve_label_set_path

from .backends import BACKENDS
from .batch import BatchOptions, BatchReport
from .diff import diff_label_sets, format_diff
from .generate import GenerateSettings, GenerationError, generate_label_set, model_slug
from .options import with_settings_options
from .pacing import Backoff
from .prompts import load_prompt
from .refine import RefineResult, refine_label_set
from .session import RunStats

GENERATE_HELP = """Ask an LLM for K visually distinct subclasses of every class of DATASET and write a validated label set.

Writes label_sets/DATASET/top<K>.<model-slug>.json (or --out) and its .meta.json sidecar, atomically, once every class has a usable answer.

Every request and answer goes to a jsonlines cache (default: label_sets/DATASET/.cache/<name>.jsonl): rerun the same command after an interruption (even a kill) and it resumes where it stopped.

Examples:

llmseg subclasses coco_stuff --k 5 --backend openai --model gpt-4o-mini

llmseg subclasses pascal_voc --base-url http://localhost:8000/v1 --model Qwen/Qwen2.5-7B-Instruct

llmseg subclasses ade20k --backend hf --model /models/Llama-3.1-8B-Instruct --device cuda

llmseg subclasses my_dataset --classes-file my_classes.txt --k 8 --out label_sets/my_dataset/top8.json
"""

GROUP_HELP = """Stage one: subclass label sets from any LLM.

llmseg subclasses DATASET [OPTIONS] generates a label set: the same as llmseg subclasses generate DATASET [OPTIONS]; see llmseg subclasses generate --help for every option.

llmseg subclasses diff A.json B.json shows per class what differs between two label sets.
"""


class DefaultToGenerate(TyperGroup):
    """A group whose first token, when it is not a sub-command name, goes to `generate`.

    So `llmseg subclasses coco_stuff --k 5` means `llmseg subclasses generate coco_stuff --k 5`,
    while `llmseg subclasses diff ...` and `--help` keep their usual meaning.
    """

    default_command = "generate"

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] == "--refine":  # `llmseg subclasses --refine LABEL_SET ...` = `... refine LABEL_SET ...`
            args = ["refine", *args[1:]]
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


subclasses_app = typer.Typer(
    cls=DefaultToGenerate,
    help=GROUP_HELP,
    no_args_is_help=True,
    subcommand_metavar="[generate] DATASET [OPTIONS] | diff A.json B.json",
    pretty_exceptions_enable=False,
)


def _hold_until_done(ctx: typer.Context, out: Path) -> None:
    """Lock the label set `out` until the command ends (however it ends): a second run on it is refused."""
    ctx.with_resource(hold_label_set(out))


def _command_line(dataset: str, options: dict[str, Any]) -> str:
    """The command that regenerates this label set: never with an API key, URL credentials or key-like
    query values (`--base-url http://user:pw@host/v1?api_key=K` is recorded as `http://***@host/v1?api_key=***`)."""
    parts = ["llmseg", "subclasses", dataset]
    for name, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        parts += [flag] if value is True else [flag, redact_url(str(value)) if name == "base_url" else str(value)]
    return redact_urls(shlex.join(parts))


# the order `--help` lists generate's options in: its own parameters among GenerateSettings' fields
GENERATE_ORDER = (
    "ctx", "dataset", "k", "backend", "model", "base_url", "api_key_env", "api_key", "prompt", "classes_file", "domain",
    "other_classes", "out", "concurrency", "rpm", "max_retries", "timeout", "temperature", "repair_temperature", "seed",
    "max_tokens", "max_answer_chars", "include_class_name", "allow_shared", "structured", "device", "dtype", "cache",
    "refresh", "force", "quiet", "backoff_base", "batch", "batch_poll_interval", "batch_timeout", "batch_prices", "gguf_file",
)


@subclasses_app.command("generate", help=GENERATE_HELP, no_args_is_help=True)
@with_settings_options(GenerateSettings, order=GENERATE_ORDER)
def generate_command(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="A registered dataset (pascal_voc, coco_stuff, ...), a dataset folder, or any name with --classes-file.")],
    classes_file: Annotated[Path | None, typer.Option(help="classes.txt (one class per line) instead of the dataset's.")] = None,
    out: Annotated[Path | None, typer.Option(help="Output label set (default: label_sets/DATASET/top<K>.<model-slug>.json).")] = None,
    cache: Annotated[Path | None, typer.Option(help="Request/answer log for resuming (default: label_sets/DATASET/.cache/<out name>.jsonl).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    backoff_base: Annotated[float, typer.Option(hidden=True, help="Seconds of the first retry backoff.")] = 1.0,
    batch_poll_interval: Annotated[float, typer.Option(help="--batch: seconds between the first status polls (doubling up to 300).")] = 10.0,
    batch_timeout: Annotated[float, typer.Option(help="--batch: give up waiting after this many seconds (rerun to resume the same batch).")] = 86400.0,
    batch_prices: Annotated[str | None, typer.Option(help="--batch: 'IN,OUT' USD per million prompt and completion tokens, for a cost line.")] = None,
    **options: Any,
) -> None:
    """`llmseg subclasses generate`: the options are GenerateSettings' fields (`options`) plus the file and run options here."""
    settings = GenerateSettings.build(**options)  # the command-line values, checked; completed below
    model = _model_or_fail(settings.backend, settings.model, settings.api_key)
    # DatasetError / PromptError (and a FatalBackendError below) are LlmsegErrors: the root app reports them
    spec = get_dataset(dataset, classes_file=classes_file)
    template = load_prompt(str(settings.prompt))
    out = out or label_sets_output_dir() / spec.name / f"top{settings.k}.{model_slug(model)}.json"
    _claim_output(ctx, out, force)
    cache_path = cache or out.parent / ".cache" / f"{out.name[: -len('.json')]}.jsonl"
    if not quiet:
        echo(f"{spec.name}: {spec.num_classes} classes, K={settings.k}, {settings.backend}:{model}, prompt {template.id} -> {out}", err=True)
    run_settings = settings.model_copy(update={
        "model": model, "prompt": template, "domain": settings.domain or spec.domain, "cache_path": cache_path,
        "dataset_name": spec.name, "backoff": Backoff(base=backoff_base), "progress": not quiet,
        "batch_options": _batch_options(batch_poll_interval, batch_timeout, batch_prices) if settings.batch else None,
    })
    try:
        label_set, meta = generate_label_set(spec.classes, run_settings)
    except GenerationError as exc:  # some classes got no usable answer: exit 1, the rest is cached
        echo(str(exc), err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from exc
    regenerate = _command_line(spec.name, _regenerate_options(settings, model, classes_file, out))
    meta = meta.model_copy(update={"command": regenerate, "classes_file": str(spec.classes_file) if spec.classes_file else None})
    save_label_set(out, label_set, meta)
    try:
        load_label_set(out, spec.classes)  # the file on disk must load as a label set of exactly these classes
    except LabelSetError as exc:  # pragma: no cover - generate_label_set already validated it
        raise fail(f"wrote an invalid label set: {exc}") from exc
    echo(f"wrote {out} ({spec.num_classes} classes x {settings.k}{' + class name' if settings.include_class_name else ''})")
    _print_summaries(meta)


def _model_or_fail(backend: str, model: str | None, api_key: str | None) -> str:
    """The model to ask (gpt-4o-mini unless the hf backend, which needs one); warns about a key on the command line."""
    if backend not in BACKENDS:
        raise fail(f"unknown backend '{backend}': use one of {', '.join(BACKENDS)}")
    if model is None:
        if backend == "hf":
            raise fail("--backend hf needs --model (a hub id or a local folder)")
        model = "gpt-4o-mini"
    if api_key:
        typer.secho(
            "warning: --api-key puts the key in your shell history and process list; prefer --api-key-env NAME",
            err=True,
            fg=typer.colors.YELLOW,
        )
    return model


def _claim_output(ctx: typer.Context, out: Path, force: bool) -> None:
    """Refuse an output that is not .json or exists (without --force); lock it until the command ends."""
    if out.suffix != ".json":
        raise fail(f"--out must end in .json: {out}")
    _hold_until_done(ctx, out)
    if out.exists() and not force:
        raise fail(f"{out} exists; pass --force to overwrite it (or --out elsewhere)")


def _regenerate_options(settings: GenerateSettings, model: str, classes_file: Path | None, out: Path) -> dict[str, Any]:
    """The options the sidecar's command records: those that change the answers, never a key (see _command_line)."""
    return {
        "k": settings.k,
        "backend": settings.backend,
        "model": model,
        "base_url": settings.base_url,
        "api_key_env": settings.api_key_env if settings.api_key_env != "OPENAI_API_KEY" else None,
        "prompt": settings.prompt,
        "classes_file": classes_file,
        "domain": settings.domain,
        "no_other_classes": not settings.other_classes,
        "temperature": settings.temperature,
        "repair_temperature": settings.repair_temperature,
        "seed": settings.seed,
        "max_tokens": settings.max_tokens,
        "include_class_name": settings.include_class_name,
        "no_structured": not settings.structured,
        "device": settings.device,
        "dtype": settings.dtype if settings.backend == "hf" else None,
        "gguf_file": settings.gguf_file,
        "batch": settings.batch,
        "out": out,
    }


def _print_summaries(meta: LabelSetMeta) -> None:
    """The run's counters (and the batch's, if one ran) from the sidecar, on stdout."""
    extra = meta.model_extra or {}
    typer.echo(RunStats(**dict(extra.get("stats", {}))).summary())
    if extra.get("batch"):
        typer.echo(BatchReport(**extra["batch"]).summary())


def _batch_options(poll_interval: float, timeout: float, prices: str | None) -> BatchOptions:
    """--batch-*: polling and the prices ('IN,OUT' USD per million tokens), checked."""
    parsed = None
    if prices:
        try:
            low, high = (float(p) for p in prices.split(","))
        except ValueError as exc:
            raise fail(f"--batch-prices takes 'IN,OUT' (USD per million tokens), got {prices!r}") from exc
        parsed = (low, high)
    return BatchOptions(poll_interval=poll_interval, timeout=timeout, prices=parsed)


@subclasses_app.command("diff", no_args_is_help=True)
def diff_command(
    a: Annotated[Path, typer.Argument(help="First label set (JSON).")],
    b: Annotated[Path, typer.Argument(help="Second label set (JSON).")],
    show_all: Annotated[bool, typer.Option("--all", help="Also list classes whose subclasses are identical.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show per class which subclasses only A has (-), only B has (+) and both have (=).

    Entries are compared after normalisation, ignoring case. Exit 0 identical, 1 different, 2 error.
    """
    path_a, path_b = resolve_label_set_path(a), resolve_label_set_path(b)  # MissingFileError / LabelSetError: exit 2
    raw_a, raw_b = read_label_set_json(path_a), read_label_set_json(path_b)
    for path, raw in ((path_a, raw_a), (path_b, raw_b)):
        if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
            raise fail(f"{path}: not a label set (a JSON object of lists)")
    result = diff_label_sets(raw_a, raw_b)
    if as_json:
        typer.echo(safe_text(json.dumps(result.as_dict(), indent=2, ensure_ascii=False), as_json=True))
    else:
        for line in format_diff(result, str(a), str(b), show_all=show_all):
            echo(line)
    raise typer.Exit(0 if result.identical else 1)


@subclasses_app.command("refine", no_args_is_help=True)
def refine_command(
    ctx: typer.Context,
    label_set: Annotated[Path, typer.Argument(help="The label set to refine (JSON).")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset whose classes the label set has (for the other classes and the domain).")],
    backbone: Annotated[str, typer.Option(help="The text encoder that judges the subclasses, family[:arg] (e.g. openclip:ViT-B-16).")],
    pretrained: Annotated[str | None, typer.Option(help="--backbone: open_clip weights tag or local weights file.")] = None,
    checkpoint: Annotated[str | None, typer.Option(help="--backbone simseg: the SimSeg checkpoint.")] = None,
    random_weights: Annotated[bool, typer.Option("--random-weights", help="--backbone with seeded random weights (tests only).")] = False,
    clip_device: Annotated[str, typer.Option(help="Torch device of the text encoder.")] = "cpu",
    templates: Annotated[str, typer.Option(help="Prompt templates the subclasses are embedded with (as in segmentation).")] = "openai80",
    duplicate_threshold: Annotated[float, typer.Option(help="Near-duplicate cosine (see llmseg validate --backbone).")] = 0.95,
    spread_threshold: Annotated[float, typer.Option(help="Mean cosine to the class name below which a class spreads too far.")] = 0.7,
    margin: Annotated[float, typer.Option(help="Ambiguity margin in cosine.")] = 0.0,
    rounds: Annotated[int, typer.Option(min=1, help="Re-ask and re-check at most this many times.")] = 2,
    backend: Annotated[str, typer.Option(help="LLM backend: openai (any OpenAI-compatible server), hf, or a registered one.")] = "openai",
    model: Annotated[str | None, typer.Option(help="LLM (openai; default gpt-4o-mini) or hub id / local folder (hf).")] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible server URL.")] = None,
    api_key_env: Annotated[str, typer.Option(help="Name of the environment variable holding the API key.")] = "OPENAI_API_KEY",
    prompt: Annotated[str, typer.Option(help="Prompt template the re-asks are derived from.")] = "subclasses.visual.v1",
    max_retries: Annotated[int, typer.Option(min=0, help="Retries per request and re-asks per class.")] = 5,
    timeout: Annotated[float, typer.Option(help="Seconds before a request times out.")] = 60.0,
    seed: Annotated[int | None, typer.Option(help="Sampling seed sent with every request.")] = 0,
    device: Annotated[str | None, typer.Option(help="hf: torch device of the LLM.")] = None,
    out: Annotated[Path | None, typer.Option(help="Output label set (default: LABEL_SET with .refined.json).")] = None,
    cache: Annotated[Path | None, typer.Option(help="Request/answer log for resuming (default: beside --out in .cache/).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    backoff_base: Annotated[float, typer.Option(hidden=True, help="Seconds of the first retry backoff.")] = 1.0,
) -> None:
    """Re-ask the LLM for the subclasses the text encoder confuses (see llmseg validate --backbone), naming each clash.

    Writes the refined label set and a sidecar recording every round. Exit 0 when the final check is clean, 1 when findings remain.
    """
    # lazy import: start-up time (the text encoders import torch and open_clip, which only this command needs)
    from llmseg.stage2.experiments.label_check import check_label_set_clip, load_text_backbone

    path, spec, original, out = _refine_inputs(ctx, label_set, dataset, out, force)
    model = model or ("gpt-4o-mini" if backend != "hf" else None)
    if model is None:
        raise fail("--backend hf needs --model (a hub id or a local folder)")
    encoder = load_text_backbone(backbone, pretrained, random_weights=random_weights, checkpoint=checkpoint, device=clip_device)

    def check(current):
        return check_label_set_clip(current, encoder, templates=templates, duplicate_threshold=duplicate_threshold,
                                    spread_threshold=spread_threshold, margin=margin)

    options = {"base_url": base_url, "api_key_env": api_key_env, "timeout": timeout, "device": device}
    result = refine_label_set(
        original.root, check, backend=backend, model=model, prompt=prompt, rounds=rounds, domain=spec.domain,
        cache_path=cache or out.parent / ".cache" / f"{out.name[: -len('.json')]}.jsonl",
        backend_options={k_: v for k_, v in options.items() if v is not None},
        max_retries=max_retries, seed=seed, backoff=Backoff(base=backoff_base), progress=not quiet,
    )
    remaining = _save_refined(path, spec, out, result, {
        "backbone": backbone, "pretrained": pretrained, "templates": templates, "llm": f"{backend}:{model}",
        "duplicate_threshold": duplicate_threshold, "spread_threshold": spread_threshold, "margin": margin,
    })
    raise typer.Exit(1 if remaining else 0)


def _refine_inputs(ctx: typer.Context, label_set: Path, dataset: str, out: Path | None, force: bool) -> tuple[Path, DatasetSpec, LabelSet, Path]:
    """The label set's path, its dataset, the label set (checked against the classes) and the output, claimed."""
    path = resolve_label_set_path(label_set)
    spec = get_dataset(dataset)
    original = load_label_set(path, spec.classes)  # errors (wrong classes, bad file) stop here: exit 2
    out = out or path.with_name(path.name[: -len(".json")] + ".refined.json")
    _claim_output(ctx, out, force)
    return path, spec, original, out


def _save_refined(path: Path, spec: DatasetSpec, out: Path, result: RefineResult, details: dict[str, Any]) -> int:
    """Print the rounds, write the refined label set with its sidecar (read back as a check), print what remains; the count left."""
    _echo_rounds(result)
    meta = _refined_meta(path, spec.name, result, details)
    save_label_set(out, result.label_set, meta)
    load_label_set(out, spec.classes)
    remaining = result.remaining.lines()
    for line in remaining:
        echo(line, fg=typer.colors.YELLOW)
    echo(f"wrote {out}: {len(result.rounds)} rounds, {len(remaining)} findings remain")
    return len(remaining)


def _echo_rounds(result: RefineResult) -> None:
    """Per round: every flagged subclass with why, and what each class asked again got."""
    for number, record in enumerate(result.rounds, start=1):
        for name, reasons in record.flagged.items():
            for reason in reasons.values():
                echo(f"round {number}: class '{name}': {reason}")
            if name in record.replaced:
                echo(f"round {number}: class '{name}': asked again, new: " + ", ".join(record.replaced[name]))


def _refined_meta(path: Path, dataset: str, result: RefineResult, details: dict[str, Any]) -> LabelSetMeta:
    """The original's sidecar (its command redacted) plus where the refined set came from and every round."""
    meta = load_meta(path) or LabelSetMeta(generator="refined", dataset=dataset)
    if isinstance(command := (meta.model_extra or {}).get("command"), str):  # a sidecar written before commands were redacted
        meta = meta.model_copy(update={"command": redact_urls(command)})
    return meta.model_copy(update={"refined_from": str(path), "refine": {**result.as_dict(), **details}})


def register(app: typer.Typer) -> None:
    """Add stage one's commands to the root app."""
    app.add_typer(subclasses_app, name="subclasses")


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # hf backend in worker threads: no fork warnings
