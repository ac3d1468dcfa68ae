"""`llmseg segment`: run a method on your own images with your own class names.

A thin shell over `llmseg.stage2.api.Segmenter` (the same code path as the Python API and
`evaluate`). Per image it writes, atomically, `<stem>.png` (palette label map; 16-bit ids past 255 classes),
`<stem>_overlay.png`, `<stem>_subclass.png` (with a label set) and `<stem>.json`, plus one
`segment_run.json` (configuration, the method's full description, images done and failed). Problems with
the whole run (class list, label set, model) stop before anything is written; a problem with one
image is reported, that image gets no files, the others go on, and the exit code is 1. No two images
share an output file (`a.jpg`'s `a_overlay.png` is `a_overlay.jpg`'s label map): the later one is
refused, naming the file. The run record is rewritten after every image, with the sha256 of each
output: an interrupted run started again with the same settings skips the images whose outputs are
still as written (`--no-resume` redoes them).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from tqdm import tqdm

from llmseg.cli_support import fail, option_errors
from llmseg.datasets import DatasetSpec, get_dataset, read_classes_file
from llmseg.errors import LlmsegError
from llmseg.io import atomic_write_json, sha256_file, stable_hash
from llmseg.labelset import LabelSet, LabelSetError, read_label_set_json, save_label_set
from llmseg.resources import resolve_label_set_path
from llmseg.stage1.generate import generate_label_set
from llmseg.stage2.cli import options as opts
from llmseg.stage2.config import MethodConfig
from llmseg.stage2.preflight import check_method_inputs

if TYPE_CHECKING:
    from llmseg.stage2.api import SegmentationOutput

RUN_RECORD = "segment_run"  # <out>/segment_run.json: configuration, method description, images done/failed
# the run's own files (the run record, --subclasses auto's label set, sidecar and answer cache): no image may write them
RUN_FILES = frozenset({f"{RUN_RECORD}.json", "label_set.json", "label_set.meta.json", "subclasses.cache.jsonl"})

# Defaults of the method options are None = "not given": only given ones reach MethodConfig.
_L = "Subclasses"


def _expand_images(images: list[Path]) -> list[Path]:
    """Folders become the images inside them (sorted); files are kept as given, missing ones too."""
    # lazy import: start-up time (llmseg --help does not load PIL and the data readers)
    from llmseg.stage2.data.readers import IMAGE_EXTENSIONS

    out: list[Path] = []
    for item in images:
        if item.is_dir():
            out.extend(sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS))
        else:
            out.append(item)
    return out


def _label_set_keys(label_set: str) -> list[str]:
    """The classes a label-set file names (its keys, in order): the class list when no other is given."""
    # lazy import: start-up time (llmseg --help does not load PIL and the segmentation API)
    from llmseg.stage2.api import SegmentInputError, parse_classes

    try:
        path = resolve_label_set_path(label_set)
        raw = read_label_set_json(path)
    except (FileNotFoundError, LabelSetError) as exc:
        raise SegmentInputError(str(exc)) from exc
    if not isinstance(raw, dict) or not raw:
        raise SegmentInputError(f"{path}: a label set is a non-empty JSON object {{class: [subclasses]}}")
    return parse_classes(list(raw), source=f"{path} (its keys)")


def _read_classes(classes: str | None, dataset: str | None, classes_file: Path | None, label_set: str | None = None):
    """(class names, DatasetSpec or None) from --classes / --dataset / --classes-file, else --label-set's keys."""
    # lazy import: start-up time (llmseg --help does not load PIL and the segmentation API)
    from llmseg.stage2.api import SegmentInputError, parse_classes

    if classes is not None and (dataset is not None or classes_file is not None):
        raise SegmentInputError("give either --classes or --dataset/--classes-file, not both")
    if classes is not None:
        return parse_classes(classes, source="--classes"), None
    if dataset is not None:
        spec = get_dataset(dataset, classes_file=classes_file)
        return list(spec.classes), spec
    if classes_file is not None:
        return parse_classes(read_classes_file(classes_file), source=str(classes_file)), None
    if label_set is not None:
        return _label_set_keys(label_set), None
    raise SegmentInputError("give the class names: --classes 'cat, dog' or --dataset NAME or --classes-file FILE "
                            "(or a --label-set, whose keys are the classes)")


def _auto_label_set(classes: list[str], out: Path, *, backend: str, model: str, k: int, base_url: str | None,
                    api_key_env: str, cache: Path | None, spec):
    """Stage one on the fly for these classes; the label set (and its sidecar) lands in the output folder.

    The answers are logged in `cache` (default OUT/subclasses.cache.jsonl), so a rerun asks nothing again.
    """
    label_set, meta = generate_label_set(
        classes,
        backend=backend,
        model=model,
        k=k,
        base_url=base_url,
        api_key_env=api_key_env,
        cache_path=cache or out / "subclasses.cache.jsonl",
        dataset_name=spec.name if spec is not None else None,
        domain=spec.domain if spec is not None else None,
    )
    save_label_set(out / "label_set.json", label_set, meta)
    return label_set


def register(app: typer.Typer) -> None:
    """Add `segment` to the root app."""

    @app.command("segment")
    @opts.with_method_options(exclude=("label_set", "k"), defaults={"device": "cpu"})  # segment's own --label-set, --k
    def segment_command(
        images: Annotated[list[Path], typer.Argument(help="Image files (or folders of images) to segment.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("out"),
        classes: Annotated[str | None, typer.Option(help="Comma-separated class names, e.g. 'cat, dog, sofa'.")] = None,
        dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="Use a registered dataset's classes, palette and defaults.")] = None,
        classes_file: Annotated[Path | None, typer.Option(help="A classes.txt (one name per line) instead of --classes.")] = None,
        label_set: Annotated[str | None, typer.Option(help="Label-set JSON (class -> list of subclasses) whose keys are the classes.", rich_help_panel=_L)] = None,
        subclasses: Annotated[str | None, typer.Option(help="'auto': ask an LLM for the subclasses now (stage one), cached.", rich_help_panel=_L)] = None,
        backend: Annotated[str, typer.Option(help="Stage-one backend for --subclasses auto.", rich_help_panel=_L)] = "openai",
        model: Annotated[str, typer.Option(help="LLM for --subclasses auto.", rich_help_panel=_L)] = "gpt-4o-mini",
        base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible server URL for --subclasses auto.", rich_help_panel=_L)] = None,
        api_key_env: Annotated[str, typer.Option(help="Environment variable holding the API key.", rich_help_panel=_L)] = "OPENAI_API_KEY",
        k: Annotated[int, typer.Option(help="Subclasses per class for --subclasses auto.", rich_help_panel=_L)] = 5,
        resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Skip images a previous run with the same settings finished.")] = True,
        progress: Annotated[bool | None, typer.Option("--progress/--no-progress", help="Progress bar (default: on a terminal).")] = None,
        llm_cache: Annotated[Path | None, typer.Option(help="Stage-one answer cache (default OUT/subclasses.cache.jsonl).", rich_help_panel=_L)] = None,
        *,
        method_options: dict[str, Any],
    ) -> None:
        """Segment your own images: label map, overlay with legend, subclass map and a JSON summary per image."""
        fields = dict(method_options)
        device = fields.pop("device", "cpu")
        code = run_segment(
            images, out, classes=classes, dataset=dataset, classes_file=classes_file, label_set=label_set,
            subclasses=subclasses, backend=backend, model=model, base_url=base_url, api_key_env=api_key_env,
            k=k, llm_cache=llm_cache, device=device, config_fields=fields, resume=resume, progress=progress,
        )
        raise typer.Exit(code)


def _out_of_memory_error() -> type[BaseException]:
    """torch's out-of-memory exception (a RuntimeError subclass), the one failure besides bad input that skips an image."""
    # lazy import: start-up time (llmseg --help does not load torch)
    import torch

    return getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError


def _release_device_memory() -> None:
    """Hand the failed image's cached GPU memory back before the next image."""
    # lazy import: start-up time (llmseg --help does not load torch)
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def plan_outputs(paths: list[Path], subclass: bool) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(images to segment, [(image, why refused)]): no two images, and no image and the run, share an output file.

    Collisions are checked on every output file name of every input, not on stems: `a.jpg` writes
    `a_overlay.png`, which is also the label map of `a_overlay.jpg`. The first image (in the given
    order) to claim a name keeps it; a later one is refused, naming the file and its owner. Names are
    compared case-folded, as a macOS or Windows disk would.
    """
    # lazy import: start-up time (llmseg --help does not load PIL and the segmentation API)
    from llmseg.stage2.api import output_names

    claimed: dict[str, Path | None] = {name.casefold(): None for name in RUN_FILES}
    planned: list[Path] = []
    refused: list[tuple[Path, str]] = []
    for path in paths:
        names = output_names(path.stem, subclass)
        clash = next((name for name in names if name.casefold() in claimed), None)
        if clash is None:
            claimed.update((name.casefold(), path) for name in names)
            planned.append(path)
            continue
        owner = claimed[clash.casefold()]
        if owner is None:
            refused.append((path, f"its output file '{clash}' is reserved for the run's own files; rename the image"))
        else:
            refused.append((path, f"its output file '{clash}' is already taken by {owner}; rename one of them "
                                  "or segment them into separate --out folders"))
    return planned, refused


def _output_hashes(out: Path, names: list[str]) -> dict[str, str]:
    """{file name: sha256} of an image's written outputs, for the run record."""
    return {name: sha256_file(out / name) for name in names}


def _finished_images(out: Path, fingerprint: str) -> dict[str, tuple[str, dict[str, str]]]:
    """{stem: (source path, {output file: sha256})} of the images an earlier run into `out` finished
    with the same settings; an image without recorded hashes (an older record) counts as not finished."""
    path = out / f"{RUN_RECORD}.json"
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # no earlier run, or a record we cannot trust: redo everything
        return {}
    if not isinstance(previous, dict) or previous.get("fingerprint") != fingerprint:
        return {}
    images, outputs = previous.get("images"), previous.get("outputs")
    if not isinstance(images, dict) or not isinstance(outputs, dict):
        return {}
    finished: dict[str, tuple[str, dict[str, str]]] = {}
    for stem, source in images.items():
        hashes = outputs.get(stem)
        if isinstance(hashes, dict) and all(isinstance(v, str) for v in hashes.values()):
            finished[str(stem)] = (str(source), {str(k): v for k, v in hashes.items()})
    return finished


def _still_finished(out: Path, path: Path, names: list[str], earlier: tuple[str, dict[str, str]] | None) -> bool:
    """Whether an earlier run's outputs of this image are there untouched: same source, same files, same bytes.

    A file another input (or anything else) wrote over since has another hash, so the image is redone.
    """
    if earlier is None or earlier[0] != str(path) or sorted(earlier[1]) != sorted(names):
        return False
    try:
        return _output_hashes(out, names) == earlier[1]
    except OSError:  # a missing or unreadable output
        return False


def run_segment(images: list[Path], out: Path, *, classes, dataset, classes_file, label_set, subclasses, backend,
                model, base_url, api_key_env, k, llm_cache, device,
                config_fields: dict[str, Any], fail=fail, resume: bool = True, progress: bool | None = None) -> int:
    """The body of `llmseg segment`; returns the exit code (0 all done, 1 some images failed).

    Whole-run problems raise (or `fail` reports) an LlmsegError before anything is written; any
    other exception is a bug and propagates with its traceback.
    """
    # lazy import: start-up time (llmseg --help does not load PIL and the segmentation API)
    from llmseg.stage2.api import Segmenter, resolve_label_set

    # 1. everything that concerns the whole run, before any LLM is asked, model loaded or file written
    try:
        names, spec, resolved, paths, config = _whole_run_inputs(
            images, classes=classes, dataset=dataset, classes_file=classes_file, label_set=label_set,
            subclasses=subclasses, device=device, config_fields=config_fields,
        )
    except ValidationError as exc:
        raise fail(str(option_errors(exc, "bad method options"))) from exc
    except LlmsegError as exc:  # the class list, label set or images: nothing is written
        raise fail(str(exc)) from exc
    if subclasses == "auto":
        try:
            generated = _auto_label_set(names, out, backend=backend, model=model, k=k, base_url=base_url,
                                        api_key_env=api_key_env, cache=llm_cache, spec=spec)
            resolved = resolve_label_set(generated, names)
        except LlmsegError as exc:  # stage one's errors (server, answers, validation) all stop the run here
            raise fail(f"--subclasses auto: stage one failed: {exc}") from exc
    try:
        segmenter = Segmenter(config)
        method = segmenter.method_for(names, resolved, spec)[0]  # builds the method (text embeddings) once, up front
    except LlmsegError as exc:  # the backbone, checkpoint, templates or label set cannot be used
        raise fail(str(exc)) from exc

    # 2. one image at a time; a failure skips that image only. The run record is rewritten after each
    # image, so a rerun with the same settings (same fingerprint) skips what an interrupted run finished.
    source = "stage one (--subclasses auto)" if subclasses == "auto" else label_set
    settings = _run_settings(names, spec, resolved, source, config, method.describe())
    finished = _finished_images(out, settings["fingerprint"]) if resume else {}
    out_of_memory = _out_of_memory_error()
    planned, failures = plan_outputs(paths, subclass=resolved is not None)
    record = _RunRecord(out, settings, failures)
    done, skipped = _segment_each(planned, lambda path: segmenter(path, names, resolved, spec), resolved is not None,
                                  record, finished, out_of_memory, progress)
    record.save(complete=True)
    return _report(done, len(paths), out, skipped, record.failures)


def _whole_run_inputs(images: list[Path], *, classes, dataset, classes_file, label_set, subclasses, device,
                      config_fields: dict[str, Any]) -> tuple[list[str], DatasetSpec | None, LabelSet | None, list[Path], MethodConfig]:
    """(class names, dataset, label set, image paths, method settings), every one checked before the run starts.

    Raises an LlmsegError (or pydantic's ValidationError for the method options) naming the bad input.
    """
    # lazy import: start-up time (llmseg --help does not load PIL and the segmentation API)
    from llmseg.stage2.api import SegmentInputError, resolve_label_set

    names, spec = _read_classes(classes, dataset, classes_file, label_set)
    if label_set is not None and subclasses is not None:
        raise SegmentInputError("give either --label-set or --subclasses auto, not both")
    if subclasses is not None and subclasses != "auto":
        raise SegmentInputError(f"--subclasses takes 'auto' (stage one on the fly), got '{subclasses}'")
    resolved = resolve_label_set(label_set, names) if label_set is not None else None
    paths = _expand_images(images)
    if not paths:
        raise SegmentInputError("no images given (the folders hold no images)")
    config = MethodConfig(device=device, **config_fields)
    check_method_inputs(config)  # weights, checkpoint, tokenizer: before stage one is asked or a model built
    return names, spec, resolved, paths, config


def _run_settings(names: list[str], spec: DatasetSpec | None, resolved: LabelSet | None, label_set_source: str | None,
                  config: MethodConfig, method: dict[str, Any]) -> dict[str, Any]:
    """The run record's settings and their fingerprint: a rerun with the same fingerprint may skip finished images."""
    settings: dict[str, Any] = {
        "command": "llmseg segment",
        "classes": names,
        "dataset": spec.name if spec is not None else None,
        "label_set": resolved.root if resolved is not None else None,
        "label_set_source": label_set_source,
        "config": json.loads(config.model_dump_json()),
        "method": method,
    }
    settings["fingerprint"] = stable_hash(json.loads(json.dumps(settings, default=str)))
    return settings


@dataclass
class _RunRecord:
    """`<out>/segment_run.json` as the run goes: its settings, the images done (with output hashes) and failed."""

    out: Path
    settings: dict[str, Any]
    failures: list[tuple[Path, str]]  # (image, why), the refused ones first
    owners: dict[str, Path] = field(default_factory=dict)  # stem -> the image whose outputs carry it
    hashes: dict[str, dict[str, str]] = field(default_factory=dict)  # stem -> {output file: sha256}

    def save(self, complete: bool) -> None:
        """Rewrite the record atomically, so an interrupted run leaves a readable one behind."""
        atomic_write_json(self.out / f"{RUN_RECORD}.json", {
            **self.settings,
            "complete": complete,
            "images": {stem: str(path) for stem, path in self.owners.items()},
            "outputs": self.hashes,
            "failed": {str(path): reason for path, reason in self.failures},
        })


def _segment_each(planned: list[Path], segment: Callable[[Path], SegmentationOutput], subclass: bool,
                  record: _RunRecord, finished: dict[str, tuple[str, dict[str, str]]],
                  out_of_memory: type[BaseException], progress: bool | None) -> tuple[int, int]:
    """Segment and save each image, unless an earlier run's outputs of it are intact; returns (done, skipped).

    An unreadable image or one too large for the device is recorded as failed and the others go on.
    """
    # lazy import: start-up time (llmseg --help does not load PIL and the segmentation API)
    from llmseg.stage2.api import SegmentInputError, output_names

    out = record.out
    done = skipped = 0
    for path in tqdm(planned, desc="segment", unit="img", disable=None if progress is None else not progress):
        stem = path.stem
        files = output_names(stem, subclass)
        earlier = finished.get(stem)
        if earlier is not None and _still_finished(out, path, files, earlier):
            record.owners[stem], record.hashes[stem] = path, earlier[1]
            done += 1
            skipped += 1
            continue
        try:
            output = segment(path)
            output.save(out, stem)
        except SegmentInputError as exc:  # a missing or unreadable image: reported, the others go on
            record.failures.append((path, str(exc)))
            continue
        except out_of_memory as exc:  # deliberate: one image too large for the device does not stop the run
            _release_device_memory()
            record.failures.append((path, f"out of memory ({exc}); try a smaller --short-side or --crop"))
            continue
        record.owners[stem], record.hashes[stem] = path, _output_hashes(out, files)
        done += 1
        record.save(complete=False)
    return done, skipped


def _report(done: int, total: int, out: Path, skipped: int, failures: list[tuple[Path, str]]) -> int:
    """Print the run's outcome; the exit code: 0 every image done, 1 some failed."""
    resumed = f" ({skipped} finished by an earlier run with the same settings)" if skipped else ""
    typer.echo(f"segmented {done} of {total} images into {out}{resumed}")
    if failures:
        typer.secho(f"{len(failures)} image(s) failed:", err=True, fg=typer.colors.RED)
        for path, reason in failures:
            typer.secho(f"  {path}: {reason}", err=True, fg=typer.colors.RED)
        return 1
    return 0
