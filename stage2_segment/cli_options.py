"""The `MethodConfig` fields as typer options, defined once for `evaluate` and `segment`.

Every option defaults to None, meaning "not given": `method_config` then leaves the field to the
preset's or the method's default, so the CLI and the Python API resolve defaults in one place.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

METHOD_PANEL = "Method"
PROTOCOL_PANEL = "Dense protocol and refinement"


def _opt(help_text: str, *flags: str, panel: str = METHOD_PANEL) -> Any:
    return typer.Option(*flags, help=help_text, rich_help_panel=panel)


Method = Annotated[str | None, _opt("dense | llm-supervision (default dense).")]
Backbone = Annotated[str | None, _opt("openclip:<arch> or simseg (default openclip:ViT-B-16).")]
Pretrained = Annotated[str | None, _opt("open_clip weights tag or local weights file.")]
Checkpoint = Annotated[str | None, _opt("SimSeg checkpoint (.pth).")]
TextTokenizer = Annotated[str | None, _opt("SimSeg text tokenizer (HF id or folder).")]
DenseMode = Annotated[str | None, _opt("vanilla | maskclip | sclip | clearclip | naclip.")]
Preset = Annotated[str | None, _opt("sclip | clearclip | naclip | a preset JSON file: every number of that paper for the dataset.")]
LabelSetPath = Annotated[str | None, _opt("Label-set JSON {class: [subclasses]}; none = class names only.")]
Assembly = Annotated[str | None, _opt("none | max | mean | softmax | chils.")]
IncludeClassName = Annotated[
    bool | None, _opt("Add each class name to its own subclasses.", "--include-class-name/--no-include-class-name")
]
Templates = Annotated[str | None, _opt("openai80 | seed13 | single | a file.")]
TopClsNum = Annotated[int | None, _opt("llm-supervision: classes in the threshold statistics.")]
Candidates = Annotated[int | None, _opt("llm-supervision: candidate classes per image.")]
ShortSide = Annotated[int | None, _opt("Resize so the short side is this.", panel=PROTOCOL_PANEL)]
Crop = Annotated[int | None, _opt("Sliding-window crop (0 = whole image).", panel=PROTOCOL_PANEL)]
Stride = Annotated[int | None, _opt("Sliding-window stride.", panel=PROTOCOL_PANEL)]
LogitScale = Annotated[float | None, _opt("Temperature of the softmax over names.", panel=PROTOCOL_PANEL)]
ProbThd = Annotated[float | None, _opt("Background threshold on the top probability.", panel=PROTOCOL_PANEL)]
AreaThd = Annotated[float | None, _opt("Drop classes under this share of the foreground.", panel=PROTOCOL_PANEL)]
Pamr = Annotated[bool | None, _opt("PAMR refinement (default: the preset's).", "--pamr/--no-pamr", panel=PROTOCOL_PANEL)]
Crf = Annotated[
    bool | None,
    _opt("Dense CRF (default: the method's: off for dense, the seed's binary CRF on for llm-supervision).",
         "--crf/--no-crf", panel=PROTOCOL_PANEL),
]
CrfIterations = Annotated[int | None, _opt("Dense CRF iterations.", panel=PROTOCOL_PANEL)]
Device = Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ... (under torchrun 'cuda' = this rank's GPU).")]
Precision = Annotated[str | None, typer.Option(help="fp32 | bf16 | fp16 (autocast on GPU).")]
TextCacheDir = Annotated[str | None, typer.Option(help="Folder for cached text embeddings.")]


def method_fields(**given: Any) -> dict[str, Any]:
    """The options the user gave (not None), as MethodConfig keyword arguments."""
    return {name: value for name, value in given.items() if value is not None}
