"""`llmseg segment`: run a method on your own images with your own class names.

A thin shell over `stage2_segment.api.Segmenter` (the same code path as the Python API and
`evaluate`). Per image it writes, atomically, `<stem>.png` (palette label map),
`<stem>_overlay.png`, `<stem>_subclass.png` (with a label set) and `<stem>.json`, plus one
`segment_run.json` (configuration, the method's full description, images done and failed). Problems with
the whole run (class list, label set, model) stop before anything is written; a problem with one
image is reported, that image gets no files, the others go on, and the exit code is 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

RUN_RECORD = "segment_run"  # <out>/segment_run.json: configuration, method description, images done/failed
# stems whose outputs would overwrite the run's own files (the run record, --subclasses auto's label set)
RESERVED_STEMS = frozenset({RUN_RECORD, "label_set", "label_set.meta"})

# Defaults of the method options are None = "not given": only given ones reach MethodConfig.
_M = "Method"
_P = "Dense protocol"
_L = "Subclasses"


def _expand_images(images: list[Path]) -> list[Path]:
    """Folders become the images inside them (sorted); files are kept as given, missing ones too."""
    from .data.readers import IMAGE_EXTENSIONS

    out: list[Path] = []
    for item in images:
        if item.is_dir():
            out.extend(sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS))
        else:
            out.append(item)
    return out


def _read_classes(classes: str | None, dataset: str | None, classes_file: Path | None):
    """(class names, DatasetSpec or None) from --classes / --dataset / --classes-file."""
    from shared.datasets import get_dataset, read_classes_file

    from .api import parse_classes

    if classes is not None and (dataset is not None or classes_file is not None):
        raise ValueError("give either --classes or --dataset/--classes-file, not both")
    if classes is not None:
        return parse_classes(classes, source="--classes"), None
    if dataset is not None:
        spec = get_dataset(dataset, classes_file=classes_file)
        return list(spec.classes), spec
    if classes_file is not None:
        return parse_classes(read_classes_file(classes_file), source=str(classes_file)), None
    raise ValueError("give the class names: --classes 'cat, dog' or --dataset NAME or --classes-file FILE")


def _auto_label_set(classes: list[str], out: Path, *, backend: str, model: str, k: int, base_url: str | None,
                    api_key_env: str, cache: Path | None, spec):
    """Stage one on the fly for these classes; the label set (and its sidecar) lands in the output folder.

    The answers are logged in `cache` (default OUT/subclasses.cache.jsonl), so a rerun asks nothing again.
    """
    from shared.labelset import save_label_set
    from stage1_llm.generate import generate_label_set

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
        llm_cache: Annotated[Path | None, typer.Option(help="Stage-one answer cache (default OUT/subclasses.cache.jsonl).", rich_help_panel=_L)] = None,
        method: Annotated[str, typer.Option(help="dense | llm-supervision.", rich_help_panel=_M)] = "dense",
        backbone: Annotated[str, typer.Option(help="openclip:<arch> or simseg.", rich_help_panel=_M)] = "openclip:ViT-B-16",
        pretrained: Annotated[str | None, typer.Option(help="open_clip weights tag or local weights file.", rich_help_panel=_M)] = None,
        checkpoint: Annotated[str | None, typer.Option(help="SimSeg checkpoint (.pth).", rich_help_panel=_M)] = None,
        text_tokenizer: Annotated[str | None, typer.Option(help="SimSeg text tokenizer (HF id or folder).", rich_help_panel=_M)] = None,
        preset: Annotated[str | None, typer.Option(help="sclip | clearclip | naclip.", rich_help_panel=_M)] = None,
        dense_mode: Annotated[str | None, typer.Option(help="vanilla | maskclip | sclip | clearclip | naclip.", rich_help_panel=_M)] = None,
        assembly: Annotated[str | None, typer.Option(help="Subclass assembly: none | max | mean | softmax | chils.", rich_help_panel=_M)] = None,
        include_class_name: Annotated[bool, typer.Option(help="Add each class name to its own subclasses.", rich_help_panel=_M)] = False,
        templates: Annotated[str | None, typer.Option(help="openai80 | seed13 | single | a file.", rich_help_panel=_M)] = None,
        top_cls_num: Annotated[int | None, typer.Option(help="llm-supervision: classes in the threshold statistics.", rich_help_panel=_M)] = None,
        candidates: Annotated[int | None, typer.Option(help="llm-supervision: candidate classes per image.", rich_help_panel=_M)] = None,
        short_side: Annotated[int | None, typer.Option(help="Resize so the short side is this.", rich_help_panel=_P)] = None,
        crop: Annotated[int | None, typer.Option(help="Sliding-window crop (0 = whole image).", rich_help_panel=_P)] = None,
        stride: Annotated[int | None, typer.Option(help="Sliding-window stride.", rich_help_panel=_P)] = None,
        logit_scale: Annotated[float | None, typer.Option(help="Temperature of the softmax over names.", rich_help_panel=_P)] = None,
        prob_thd: Annotated[float | None, typer.Option(help="Background threshold on the top probability.", rich_help_panel=_P)] = None,
        area_thd: Annotated[float | None, typer.Option(help="Drop classes under this share of the foreground.", rich_help_panel=_P)] = None,
        pamr: Annotated[bool | None, typer.Option("--pamr/--no-pamr", help="PAMR refinement (default: the preset's).", rich_help_panel=_P)] = None,
        crf: Annotated[bool | None, typer.Option("--crf/--no-crf", help="Dense CRF refinement (default: the method's; on for llm-supervision).", rich_help_panel=_P)] = None,
        crf_iterations: Annotated[int | None, typer.Option(help="Dense CRF iterations.", rich_help_panel=_P)] = None,
        device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
        precision: Annotated[str, typer.Option(help="fp32 | bf16 | fp16.")] = "fp32",
        text_cache_dir: Annotated[str | None, typer.Option(help="Folder for cached text embeddings.")] = None,
    ) -> None:
        """Segment your own images: label map, overlay with legend, subclass map and a JSON summary per image."""
        from shared.cli import fail

        fields: dict[str, Any] = dict(
            text_tokenizer=text_tokenizer, dense_mode=dense_mode, assembly=assembly, templates=templates,
            top_cls_num=top_cls_num, candidates=candidates, short_side=short_side, crop=crop, stride=stride,
            logit_scale=logit_scale, prob_thd=prob_thd, area_thd=area_thd, pamr=pamr, crf=crf,
            crf_iterations=crf_iterations, text_cache_dir=text_cache_dir,
        )
        fields = {name: value for name, value in fields.items() if value is not None}
        fields.update(include_class_name=include_class_name, precision=precision)
        code = run_segment(
            images, out, classes=classes, dataset=dataset, classes_file=classes_file, label_set=label_set,
            subclasses=subclasses, backend=backend, model=model, base_url=base_url, api_key_env=api_key_env,
            k=k, llm_cache=llm_cache, method=method, backbone=backbone, pretrained=pretrained,
            checkpoint=checkpoint, preset=preset, device=device, config_fields=fields, fail=fail,
        )
        raise typer.Exit(code)


def run_segment(images: list[Path], out: Path, *, classes, dataset, classes_file, label_set, subclasses, backend,
                model, base_url, api_key_env, k, llm_cache, method, backbone, pretrained, checkpoint, preset, device,
                config_fields: dict[str, Any], fail) -> int:
    """The body of `llmseg segment`; returns the exit code (0 all done, 1 some images failed)."""
    from pydantic import ValidationError
    from tqdm import tqdm

    from shared.datasets import DatasetError
    from shared.io import atomic_write_json
    from shared.labelset import LabelSetError

    from .api import Segmenter, SegmentInputError, resolve_label_set
    from .data import DataError
    from .interface import MethodConfig

    # 1. everything that concerns the whole run, before any LLM is asked, model loaded or file written
    try:
        names, spec = _read_classes(classes, dataset, classes_file)
        if label_set is not None and subclasses is not None:
            raise ValueError("give either --label-set or --subclasses auto, not both")
        if subclasses is not None and subclasses != "auto":
            raise ValueError(f"--subclasses takes 'auto' (stage one on the fly), got '{subclasses}'")
        resolved = resolve_label_set(label_set, names) if label_set is not None else None
        paths = _expand_images(images)
        if not paths:
            raise ValueError("no images given (the folders hold no images)")
        config = MethodConfig(backbone=backbone, pretrained=pretrained, checkpoint=checkpoint, method=method,
                              preset=preset, device=device, **config_fields)
    except ValidationError as exc:
        problems = "; ".join(f"--{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in exc.errors())
        raise fail(f"bad method options: {problems}") from exc
    except (SegmentInputError, DatasetError, LabelSetError, ValueError, FileNotFoundError) as exc:
        raise fail(str(exc)) from exc
    if subclasses == "auto":
        try:
            generated = _auto_label_set(names, out, backend=backend, model=model, k=k, base_url=base_url,
                                        api_key_env=api_key_env, cache=llm_cache, spec=spec)
            resolved = resolve_label_set(generated, names)
        except Exception as exc:  # stage one's errors (network, parse, validation) all stop the run here
            raise fail(f"--subclasses auto: stage one failed: {exc}") from exc
    try:
        segmenter = Segmenter(config)
        method = segmenter.method_for(names, resolved, spec)[0]  # builds the method (text embeddings) once, up front
    except (SegmentInputError, ValueError, FileNotFoundError, OSError, RuntimeError) as exc:
        raise fail(str(exc)) from exc

    # 2. one image at a time; a failure skips that image only
    failures: list[tuple[Path, str]] = []
    owners: dict[str, Path] = {}
    done = 0
    for path in tqdm(paths, desc="segment", unit="img", disable=None):
        stem = path.stem
        if stem in owners:
            failures.append((path, f"output name '{stem}' is already taken by {owners[stem]}"))
            continue
        if stem in RESERVED_STEMS:
            failures.append((path, f"output name '{stem}' is reserved for the run's own files; rename the image"))
            continue
        try:
            output = segmenter(path, names, resolved, spec)
            output.save(out, stem)
        except (SegmentInputError, DataError, ValueError, OSError, RuntimeError) as exc:  # RuntimeError: e.g. out of memory
            failures.append((path, str(exc) or type(exc).__name__))
            continue
        owners[stem] = path
        done += 1
    atomic_write_json(out / f"{RUN_RECORD}.json", {
        "command": "llmseg segment",
        "classes": names,
        "dataset": spec.name if spec is not None else None,
        "label_set": resolved.root if resolved is not None else None,
        "label_set_source": "stage one (--subclasses auto)" if subclasses == "auto" else label_set,
        "config": json.loads(config.model_dump_json()),
        "method": method.describe(),
        "images": {stem: str(path) for stem, path in owners.items()},
        "failed": {str(path): reason for path, reason in failures},
    })
    typer.echo(f"segmented {done} of {len(paths)} images into {out}")
    if failures:
        typer.secho(f"{len(failures)} image(s) failed:", err=True, fg=typer.colors.RED)
        for path, reason in failures:
            typer.secho(f"  {path}: {reason}", err=True, fg=typer.colors.RED)
        return 1
    return 0
