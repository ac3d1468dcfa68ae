"""Draw the README pictures: `python docs/images/make_overlay.py` -> docs/images/{overlay,segment_demo}.png.

- overlay.png: a procedurally generated street scene (sky, hills, trees, a house, a road, a car,
  grass) and its exact class masks, drawn by the project's own `llmseg.stage2.visualize.overlay`
  (blend, boundaries, legend with area shares).
- segment_demo.png: a real segmentation, exactly what `llmseg segment` writes: a scene of the
  offline demo world segmented by the shipped demo CLIP through `llmseg.stage2.Segmenter` with
  the demo's subclass label set (class overlay | subclass overlay).
Both inputs are pure functions of their seeds, so the PNGs are reproducible.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from llmseg.stage2.visualize import overlay, save_image

CLASSES = ["sky", "hill", "tree", "house", "road", "car", "grass"]
HERE = Path(__file__).resolve().parent


def _textured(rng: np.random.Generator, h: int, w: int, colour, spread: float) -> np.ndarray:
    coarse = rng.normal(0.0, spread, size=((h + 3) // 4, (w + 3) // 4, 1)).round()
    noise = np.repeat(np.repeat(coarse, 4, axis=0), 4, axis=1)[:h, :w]  # 4x4 grain: compresses well
    return np.clip(np.asarray(colour, np.float64)[None, None] + noise, 0, 255)


def scene(width: int = 384, height: int = 256, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 [H, W, 3], class ids [H, W]) of a small street scene."""
    rng = np.random.default_rng(seed)
    labels = Image.new("L", (width, height), CLASSES.index("sky"))
    draw = ImageDraw.Draw(labels)
    horizon = int(height * 0.55)
    xs = np.arange(0, width + 8, 8)
    ridge = horizon - 30 - 22 * np.sin(xs / width * 5.0 + 1.0) - 10 * np.sin(xs / width * 13.0)
    draw.polygon([(0, height)] + [(int(x), int(y)) for x, y in zip(xs, ridge, strict=True)] + [(width, height)],
                 fill=CLASSES.index("hill"))
    draw.rectangle([0, horizon, width, height], fill=CLASSES.index("grass"))
    draw.polygon([(int(width * 0.42), horizon), (int(width * 0.58), horizon), (width, height), (int(width * 0.1), height)],
                 fill=CLASSES.index("road"))
    house = CLASSES.index("house")
    draw.rectangle([int(width * 0.62), horizon - 60, int(width * 0.86), horizon + 6], fill=house)
    draw.polygon([(int(width * 0.60), horizon - 60), (int(width * 0.74), horizon - 100), (int(width * 0.88), horizon - 60)],
                 fill=house)
    tree = CLASSES.index("tree")
    for cx, r in ((0.12, 34), (0.25, 26), (0.93, 22)):
        x = int(width * cx)
        draw.rectangle([x - 4, horizon - 20, x + 4, horizon + 12], fill=tree)
        draw.ellipse([x - r, horizon - 20 - 2 * r, x + r, horizon - 20], fill=tree)
    car = CLASSES.index("car")
    cx, cy = int(width * 0.40), int(height * 0.80)
    draw.rounded_rectangle([cx - 48, cy - 16, cx + 48, cy + 14], radius=6, fill=car)
    draw.rounded_rectangle([cx - 28, cy - 34, cx + 24, cy - 14], radius=6, fill=car)
    for wx in (cx - 28, cx + 28):
        draw.ellipse([wx - 11, cy + 2, wx + 11, cy + 24], fill=car)
    ids = np.asarray(labels, dtype=np.int64)

    colours = {
        "hill": ((96, 128, 88), 10),
        "tree": ((40, 100, 45), 16),
        "house": ((190, 120, 90), 8),
        "road": ((90, 90, 95), 12),
        "car": ((200, 40, 40), 10),
        "grass": ((90, 160, 70), 14),
    }
    image = np.zeros((height, width, 3), np.float64)
    rows = np.linspace(0.0, 1.0, height)[:, None, None]
    sky = (1 - rows) * np.array([70, 130, 215]) + rows * np.array([185, 215, 240])
    image[:] = np.broadcast_to(sky, image.shape)
    for name, (colour, spread) in colours.items():
        mask = ids == CLASSES.index(name)
        image[mask] = _textured(rng, height, width, colour, spread)[mask]
    windows = (ids == house) & (np.arange(width)[None, :] % 22 < 9) & ((np.arange(height)[:, None] - horizon + 50) % 26 < 11)
    image[windows & (np.arange(height)[:, None] < horizon - 4)] = (235, 225, 160)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), ids


def _row(*pictures: Image.Image, gap: int = 8) -> Image.Image:
    canvas = Image.new("RGB", (sum(p.width for p in pictures) + gap * (len(pictures) - 1), max(p.height for p in pictures)),
                       (255, 255, 255))
    x = 0
    for picture in pictures:
        canvas.paste(picture.convert("RGB"), (x, 0))
        x += picture.width + gap
    return canvas


def demo_segmentation(index: int = 5, size: int = 256) -> Image.Image:
    """Scene `index` of the demo benchmark's world, segmented by the demo CLIP with subclasses."""
    import os
    import tempfile

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from llmseg.stage2 import Segmenter
    from llmseg.stage2.demo.benchmark import BENCHMARK_SEED, CURATED_LABEL_SET, demo_spec
    from llmseg.stage2.demo.generator import COLOURS, render_scene
    from llmseg.stage2.demo.run import DEMO_COLOURS, LOGIT_SCALE, TEMPLATES
    from llmseg.stage2.demo.train import WEIGHTS_PATH, materialize, model_input_size, register_model_config

    name = register_model_config()
    side = model_input_size(name)
    with tempfile.TemporaryDirectory() as tmp:
        weights = materialize(WEIGHTS_PATH, tmp)
        seg = Segmenter.create(f"openclip:{name}", pretrained=str(weights), dense_mode="vanilla", templates=TEMPLATES,
                               short_side=side, crop=0, logit_scale=LOGIT_SCALE, prob_thd=0.0, area_thd=0.0, crf=True)
        image = render_scene(BENCHMARK_SEED, index, size=size).image
        result = seg(image, classes=list(demo_spec().classes), label_set=CURATED_LABEL_SET)
    result.palette = np.array(DEMO_COLOURS, np.uint8)  # background black, warm orange, cool blue
    # subclasses in their own colour where they name one; backgrounds in greys
    greys = {"grey noise": (150, 150, 150), "beige paper": (225, 205, 160), "dark grid": (60, 60, 60)}
    sub_palette = np.array([COLOURS[n][0] if n in COLOURS else greys.get(n, (255, 255, 255)) for n in result.subclass_names],
                           np.uint8)
    from llmseg.stage2.visualize import subclass_overlay

    sub = subclass_overlay(result.image, result.subclass, result.subclass_names, result.subclass_owners, result.classes,
                           palette=sub_palette)
    # 256 colours keep the README light (the demo world's pixel noise does not compress)
    return _row(result.overlay(), sub).quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--demo-index", type=int, default=5, help="which demo-world scene to segment")
    args = parser.parse_args()
    image, labels = scene()
    pictures = {
        "overlay.png": _row(Image.fromarray(image), overlay(image, labels, CLASSES), gap=0),
        "segment_demo.png": demo_segmentation(args.demo_index),
    }
    for name, picture in pictures.items():
        path = save_image(args.out / name, picture)
        print(f"wrote {path} ({path.stat().st_size} bytes, {picture.width}x{picture.height})")


if __name__ == "__main__":
    main()
