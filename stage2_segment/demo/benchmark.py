"""The demo benchmark: generated scenes in the PASCAL VOC on-disk layout with coarse classes.

Classes (assets/classes.txt): background, "warm-coloured shape", "cool-coloured shape"; the rest
of the dataset's facts (VOC layout, palette: black / orange / blue) are in assets/dataset.json,
so `--dataset demo` in the CLI is this dataset. The
demo CLIP never read those words: its captions name colours, textures, shapes and
backgrounds only. The curated label set (assets/label_set.json) maps each coarse class to the
fine-grained names the model knows. Writing is idempotent: a manifest records what was written.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from llmseg.datasets import DatasetSpec, load_dataset_folder
from llmseg.io import atomic_path, atomic_write_json, atomic_write_text
from llmseg.labelset import LabelSetMeta, save_label_set
from llmseg.stage2.pictures.palettes import voc_palette
from llmseg.stage2.pictures.visualize import save_label_png

from .generator import BACKGROUNDS, COLOURS, FAMILIES, RENDER_SIZE, boundary, family_labels, render_scene

ASSETS = Path(__file__).resolve().parent / "assets"
CLASSES_FILE = ASSETS / "classes.txt"
DATASET_FILE = ASSETS / "dataset.json"
CURATED_LABEL_SET = ASSETS / "label_set.json"
DATASET_NAME = "demo"
BENCHMARK_SEED = 2024  # training scenes use other seeds (TrainConfig.world_seed)
MANIFEST = "demo_manifest.json"
FORMAT_VERSION = 1


def demo_spec() -> DatasetSpec:
    """The demo as a dataset: assets/classes.txt plus assets/dataset.json (VOC layout, palette)."""
    return load_dataset_folder(ASSETS, name=DATASET_NAME, classes_file=CLASSES_FILE, facts_file=DATASET_FILE)


def curated_subclasses() -> dict[str, list[str]]:
    """Each coarse class -> the fine-grained words the demo CLIP was trained on: colours; backgrounds."""
    spec = demo_spec()
    out = {spec.classes[0]: list(BACKGROUNDS)}
    for name, family in zip(spec.classes[1:], FAMILIES, strict=True):
        out[name] = [colour for colour, (_, fam) in COLOURS.items() if fam == family]
    return out


def write_curated_label_set(path: str | Path = CURATED_LABEL_SET) -> Path:
    """(Re)write the shipped curated label set and its sidecar (generator 'curated')."""
    subclasses = curated_subclasses()
    meta = LabelSetMeta(
        generator="curated",
        dataset=DATASET_NAME,
        k=len(next(iter(subclasses.values()))),
        notes="hand-written for the demo world: each coarse class -> the colour (or background) words "
        "the demo CLIP's captions use; stage2_segment/demo/benchmark.py:curated_subclasses",
    )
    return save_label_set(path, subclasses, meta)


def label_map(scene, ignore_border: int = 1) -> np.ndarray:
    """[H, W] uint8 coarse labels with a VOC-style 255 band on every object's outline."""
    labels = family_labels(scene)
    if ignore_border > 0:
        for mask in scene.masks:
            labels[boundary(mask, ignore_border)] = 255
    return labels


def split_seed(split: str) -> int:
    """The scene seed of a demo split: BENCHMARK_SEED for val, a fixed other one per split name."""
    return BENCHMARK_SEED if split == "val" else BENCHMARK_SEED + 1 + zlib.crc32(split.encode()) % 100_000


def _manifest(n_images: int, seed: int, size: int) -> dict:
    return {"dataset": DATASET_NAME, "format": FORMAT_VERSION, "n_images": n_images, "seed": seed, "size": size}


def write_benchmark(
    data_root: str | Path,
    n_images: int = 60,
    seed: int | None = None,
    size: int = RENDER_SIZE,
    progress: bool = True,
    split: str = "val",
) -> DatasetSpec:
    """Write (or keep, if the manifest matches) the demo benchmark under `data_root` in the VOC layout.

    `split` other than "val" writes another split beside it (ImageSets/Segmentation/<split>.txt,
    stems demo_<split>_NNNNN, so the files never collide with val's): e.g. a tuning split for
    `llmseg tune`. `seed` None: BENCHMARK_SEED for val, a seed of the split's own otherwise
    (`split_seed`), so a train split never repeats val's scenes.
    """
    if seed is None:
        seed = split_seed(split)
    spec = demo_spec()
    layout = spec.layout
    assert layout is not None and layout.split_file is not None  # the demo's dataset.json gives both
    base = spec.data_dir(data_root)
    manifest_path = base / (MANIFEST if split == "val" else f"demo_manifest_{split}.json")
    wanted = _manifest(n_images, seed, size)
    prefix = "demo_" if split == "val" else f"demo_{split}_"
    split_path = base / (layout.split_file if split == "val" else Path(layout.split_file).with_name(f"{split}.txt"))
    stems = [f"{prefix}{i:05d}" for i in range(n_images)]
    if manifest_path.is_file() and split_path.is_file():
        try:
            same = json.loads(manifest_path.read_text(encoding="utf-8")) == wanted
        except json.JSONDecodeError:
            same = False
        complete = all(
            (base / layout.img_dir / f"{stem}{layout.img_suffix}").is_file()
            and (base / layout.ann_dir / f"{stem}{layout.seg_map_suffix}").is_file()
            for stem in stems
        )
        if same and complete:
            return spec
    palette = voc_palette(256)  # the stored label PNGs mimic VOC's files; pictures use the dataset's palette
    for i, stem in enumerate(tqdm(stems, desc="writing demo benchmark", disable=not progress, leave=False)):
        scene = render_scene(seed, i, size=size)
        with atomic_path(base / layout.img_dir / f"{stem}{layout.img_suffix}") as tmp:
            Image.fromarray(scene.image).save(tmp, format="JPEG", quality=95)
        save_label_png(base / layout.ann_dir / f"{stem}{layout.seg_map_suffix}", label_map(scene), palette)
    atomic_write_text(split_path, "".join(f"{stem}\n" for stem in stems))
    atomic_write_json(manifest_path, wanted)
    return spec
