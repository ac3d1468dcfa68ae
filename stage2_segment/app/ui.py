"""The Gradio page over `SegmentApp` (the one module of llmseg that imports Gradio).

Offline by design: analytics off, no share link, no server-side rendering (no Node), and a theme
with system fonts so the browser fetches nothing from a font CDN.
"""

from __future__ import annotations

import html
import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmseg.errors import LlmsegError

from .core import (
    DEMO,
    LABEL_MODES,
    LABEL_SET,
    NAMES_ONLY,
    AppSettings,
    Example,
    SegmentApp,
    method_names,
    prepare_examples,
    preset_names,
    read_image,
)

INSTALL_HINT = "pip install 'llmseg[app]'"
NO_PRESET = "(method default)"

CSS = """
.llmseg-legend { border-collapse: collapse; width: 100%; }
.llmseg-legend th, .llmseg-legend td { padding: 4px 8px; border-bottom: 1px solid #ddd; text-align: left; }
.llmseg-swatch { display: inline-block; width: 14px; height: 14px; border: 1px solid #555; vertical-align: middle; }
#message .ok { color: #176b2c; }
#message .error { color: #b00020; font-weight: 600; }
"""


class AppUnavailable(LlmsegError, RuntimeError):
    """Gradio (the `app` extra) is not installed."""


def import_gradio():
    """Gradio with its analytics off, or a clear error naming the extra to install."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("GRADIO_SSR_MODE", "False")
    try:
        import gradio as gr  # lazy import: optional dependency (gradio, the `app` extra)
    except ImportError as exc:
        raise AppUnavailable(f"the web page needs Gradio, which is not installed: {INSTALL_HINT}") from exc
    return gr


def _message_html(ok: bool, text: str) -> str:
    return f'<p class="{"ok" if ok else "error"}">{html.escape(text)}</p>'


def _offline_theme(gr):
    system = ["ui-sans-serif", "system-ui", "sans-serif"]
    mono = ["ui-monospace", "monospace"]
    return gr.themes.Default(font=system, font_mono=mono)


def _supported(function, **kwargs: Any) -> dict[str, Any]:
    """The keyword arguments this Gradio version's `function` takes (the API moved between 4, 5 and 6)."""
    names = inspect.signature(function).parameters
    return {k: v for k, v in kwargs.items() if k in names}


INTRO = (
    "## llmseg: segment an image into your classes\n"
    "Upload an image (or pick an example below), type the classes, press **Segment**. "
    "With a label set, or subclasses from an LLM, each class is scored through its subclasses."
)
# The components the Segment button reads and fills, in the order of `segment`'s parameters and return values.
SEGMENT_INPUTS = ("image", "classes", "label_mode", "label_set", "label_set_file", "backbone", "weights", "method",
                  "preset", "preset_file")
SEGMENT_OUTPUTS = ("message", "overlay", "subclass", "legend", "files")


def build_page(app: SegmentApp):
    """The Blocks page; `app` holds the models, so building the page loads nothing."""
    gr = import_gradio()
    s = app.settings
    examples = prepare_examples(s.cache_dir)
    looks = {"theme": _offline_theme(gr), "css": CSS}
    blocks_kwargs = _supported(gr.Blocks.__init__, title="llmseg", analytics_enabled=False, **looks)
    with gr.Blocks(**blocks_kwargs) as page:
        page.llmseg_launch_looks = {k: v for k, v in looks.items() if k not in blocks_kwargs}
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1):
                inputs = _input_column(gr, s)
            with gr.Column(scale=2):
                outputs = _output_column(gr)
        _examples(gr, examples, inputs)
        _wire_events(app, inputs, outputs)
    return page


def _input_column(gr, s: AppSettings) -> dict[str, Any]:
    """The left column: image, classes, subclass choice, the model accordion and the Segment button, by name."""
    fields = {
        "image": gr.File(label="Image", type="filepath", elem_id="image-file"),
        "preview": gr.Image(label="Input", interactive=False, height=240, elem_id="preview"),
        "classes": gr.Textbox(label="Classes (comma-separated)", placeholder="background, cat, dog", elem_id="classes"),
        "label_mode": gr.Radio(list(LABEL_MODES), value=NAMES_ONLY, label="Subclasses", elem_id="label-mode"),
        "label_set": gr.Textbox(label="Label set: paste JSON {class: [subclasses]}", lines=4, elem_id="label-set"),
        "label_set_file": gr.File(label="... or upload a label-set JSON file (used instead of the box)",
                                  type="binary", file_types=[".json"], elem_id="label-set-file"),
    }
    with gr.Accordion("Model", open=False):
        fields.update(_model_fields(gr, s))
    fields["run"] = gr.Button("Segment", variant="primary", elem_id="run")
    return fields


def _model_fields(gr, s: AppSettings) -> dict[str, Any]:
    """The model accordion's fields (backbone, weights, method, preset), starting from what the app was started with."""
    backbones = list(dict.fromkeys([s.backbone, DEMO, "openclip:ViT-B-16", "simseg"]))
    presets = list(dict.fromkeys([NO_PRESET, *preset_names(), *([s.preset] if s.preset else [])]))
    methods = list(dict.fromkeys([s.method, *method_names()]))
    weights_label = ("Weights (open_clip pretrained tag, weights file, or SimSeg checkpoint)"
                     if s.allow_local_weights else "Weights (open_clip pretrained tag, e.g. 'openai')")
    return {
        "backbone": gr.Dropdown(backbones, value=s.backbone, allow_custom_value=True, label="Backbone",
                                info="'demo' = the bundled demo CLIP (offline); open_clip: 'openclip:ARCH'",
                                elem_id="backbone"),
        "weights": gr.Textbox(value=s.weights or "", label=weights_label, elem_id="weights"),
        "method": gr.Dropdown(methods, value=s.method, label="Method", elem_id="method"),
        "preset": gr.Dropdown(presets, value=s.preset or NO_PRESET, allow_custom_value=False, label="Preset",
                              elem_id="preset"),
        "preset_file": gr.File(label="... or upload a preset JSON file (used instead of the list)",
                               type="binary", file_types=[".json"], elem_id="preset-file"),
    }


def _output_column(gr) -> dict[str, Any]:
    """The right column: the message, both overlays, the legend and the downloads, by name."""
    outputs = {"message": gr.HTML(elem_id="message")}
    with gr.Row():
        outputs["overlay"] = gr.Image(label="Classes (overlay with legend)", type="pil", interactive=False, elem_id="overlay")
        outputs["subclass"] = gr.Image(label="Winning subclass", type="pil", interactive=False, elem_id="subclass")
    outputs["legend"] = gr.HTML(elem_id="legend")
    outputs["files"] = gr.File(label="Downloads: label PNG (pixel = class id) and JSON summary", file_count="multiple",
                               interactive=False, elem_id="downloads")
    return outputs


def _examples(gr, examples: list[Example], inputs: dict[str, Any]) -> None:
    """The example table under the page: clicking one fills the image, classes and subclass fields."""
    gr.Examples(
        examples=[[e.path, e.classes, e.label_mode, e.label_set_text] for e in examples],
        inputs=[inputs["image"], inputs["classes"], inputs["label_mode"], inputs["label_set"]],
        label="Examples",
        **_supported(gr.Examples, example_labels=[e.label for e in examples]),
    )


def _wire_events(app: SegmentApp, inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
    """A new image shows its preview; the Segment button runs one request through `app.handle`."""
    run = inputs["run"]
    inputs["image"].change(_preview(app.settings), inputs=inputs["image"], outputs=inputs["preview"])
    run.click(
        _segment(app),
        inputs=[inputs[name] for name in SEGMENT_INPUTS],
        outputs=[outputs[name] for name in SEGMENT_OUTPUTS],
        **_supported(run.click, api_name="segment"),
    )


def _preview(s: AppSettings) -> Callable[[Any], Any]:
    """The image change handler: the upload as the page will read it, or nothing (the Segment button says why)."""

    def show(path):
        if not path:
            return None
        try:
            return read_image(path, s.max_pixels, s.max_file_mb)[0]
        except (LlmsegError, ValueError, OSError):
            return None  # the Segment button reports why

    return show


def _segment(app: SegmentApp) -> Callable[..., tuple[Any, ...]]:
    """The Segment button's handler: the fields (SEGMENT_INPUTS) -> the page's outputs (SEGMENT_OUTPUTS)."""

    def segment(path, names, mode, text, set_upload, backbone_name, weights_text, method_name, preset_name,
                preset_upload):
        result = app.handle(
            path,
            names,
            backbone=backbone_name,
            weights=weights_text,
            method=method_name,
            preset=None if preset_name in (None, "", NO_PRESET) else preset_name,
            label_mode=mode,
            label_set_text=text if mode == LABEL_SET else None,
            label_set_file=set_upload if mode == LABEL_SET else None,
            preset_file=preset_upload,
        )
        return (_message_html(result.ok, result.message), result.overlay, result.subclass_overlay,
                result.legend_html, result.files or None)

    return segment


def launch(settings: AppSettings, host: str = "127.0.0.1", port: int = 7860, warm: bool = True) -> None:
    """Build the default model (unless `warm` is off), then serve the page until interrupted."""
    gr = import_gradio()
    app = SegmentApp(settings)
    if warm:
        app.warm_up()
    page = build_page(app)
    settings.outputs.mkdir(parents=True, exist_ok=True)
    page.queue(default_concurrency_limit=1)
    kwargs = _supported(
        page.launch,
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        show_error=True,
        quiet=False,
        ssr_mode=False,
        mcp_server=False,
        max_file_size=f"{int(settings.max_file_mb)}mb",
        allowed_paths=[str(settings.outputs), str(Path(settings.cache_dir) / "app" / "examples")],
        **getattr(page, "llmseg_launch_looks", {}),
    )
    del gr
    page.launch(**kwargs)
