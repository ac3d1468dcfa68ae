"""A seeded procedural world: textured shapes on textured neutral backgrounds, with exact masks.

Every object has a fine-grained identity (colour x texture x shape, e.g. "red striped circle")
that training captions name; the demo benchmark's coarse classes ("warm-coloured shape",
"cool-coloured shape") group colours into families whose names never appear in a caption.
A scene is a pure function of (seed, index, size): same inputs, identical bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# name -> (RGB, family). Families are the demo benchmark's coarse classes (never caption words).
COLOURS: dict[str, tuple[tuple[int, int, int], str]] = {
    "red": ((215, 35, 35), "warm"),
    "orange": ((245, 135, 20), "warm"),
    "yellow": ((240, 215, 35), "warm"),
    "blue": ((35, 80, 225), "cool"),
    "green": ((35, 165, 70), "cool"),
    "purple": ((135, 55, 195), "cool"),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
TEXTURES: tuple[str, ...] = ("plain", "striped", "dotted")
BACKGROUNDS: tuple[str, ...] = ("grey noise", "beige paper", "dark grid")
FAMILIES: tuple[str, ...] = ("warm", "cool")

RENDER_SIZE = 128  # benchmark images; the model sees them resized to its own input size


@dataclass(frozen=True)
class Identity:
    """The fine-grained identity of one object: what captions call it."""

    colour: str
    texture: str
    shape: str

    @property
    def family(self) -> str:
        return COLOURS[self.colour][1]

    def name(self, with_texture: bool = True) -> str:
        return f"{self.colour} {self.texture} {self.shape}" if with_texture else f"{self.colour} {self.shape}"


@dataclass
class Scene:
    """One rendered image with one boolean mask per object (objects never overlap)."""

    image: np.ndarray  # [H, W, 3] uint8
    background: str
    objects: list[Identity] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)  # [H, W] bool each

    def instance_map(self) -> np.ndarray:
        """[H, W] int: 0 background, i+1 for object i."""
        out = np.zeros(self.image.shape[:2], dtype=np.int64)
        for i, mask in enumerate(self.masks):
            out[mask] = i + 1
        return out


def all_identities() -> list[Identity]:
    return [Identity(c, t, s) for c in COLOURS for t in TEXTURES for s in SHAPES]


def _rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(index), int(stream)])


def _background(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    scale = size / RENDER_SIZE
    if kind == "grey noise":
        base = np.full((size, size, 3), 128.0, np.float32)
        base += rng.normal(0.0, 22.0, (size, size, 1)).astype(np.float32)
    elif kind == "beige paper":
        base = np.empty((size, size, 3), np.float32)
        base[:] = (222.0, 205.0, 168.0)
        base += rng.normal(0.0, 6.0, (size, size, 1)).astype(np.float32)
    elif kind == "dark grid":
        base = np.empty((size, size, 3), np.float32)
        base[:] = (48.0, 48.0, 54.0)
        period = 12.0 * scale
        offset = rng.uniform(0, period, 2)
        lines = (np.mod(yy + offset[0], period) < max(1.0, 1.5 * scale)) | (np.mod(xx + offset[1], period) < max(1.0, 1.5 * scale))
        base[lines] = (120.0, 120.0, 128.0)
    elif kind == "white tiles":
        base = np.empty((size, size, 3), np.float32)
        base[:] = (238.0, 238.0, 236.0)
        period = 24.0 * scale
        offset = rng.uniform(0, period, 2)
        lines = (np.mod(yy + offset[0], period) < max(1.0, 2.0 * scale)) | (np.mod(xx + offset[1], period) < max(1.0, 2.0 * scale))
        base[lines] = (170.0, 170.0, 175.0)
    else:
        raise ValueError(f"unknown background '{kind}': one of {', '.join(BACKGROUNDS)}")
    return base


def _shape_mask(shape: str, size: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dx, dy = xx + 0.5 - cx, yy + 0.5 - cy
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        half = 0.8 * r
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if shape == "diamond":
        return np.abs(u) / (0.8 * r) + np.abs(v) / (1.05 * r) <= 1.0
    if shape == "triangle":
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):  # three half-planes of an equilateral triangle with circumradius r
            theta = angle + np.pi / 2 + k * 2 * np.pi / 3
            inside &= dx * np.cos(theta) + dy * np.sin(theta) <= 0.5 * r
        return inside
    raise ValueError(f"unknown shape '{shape}': one of {', '.join(SHAPES)}")


def _texture(texture: str, colour: tuple[int, int, int], size: int, rng: np.random.Generator) -> np.ndarray:
    """A full-frame RGB layer of the object's paint; the mask cuts it out."""
    rgb = np.array(colour, np.float32)
    dark = rgb * 0.5
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    scale = size / RENDER_SIZE
    layer = np.empty((size, size, 3), np.float32)
    layer[:] = rgb
    if texture == "striped":
        period = 8.0 * scale
        angle = rng.uniform(0, np.pi)
        t = np.mod(xx * np.cos(angle) + yy * np.sin(angle) + rng.uniform(0, period), period)
        layer[t < period / 2] = dark
    elif texture == "dotted":
        period = 7.0 * scale
        oy, ox = rng.uniform(0, period, 2)
        ry, rx = np.mod(yy + oy, period) - period / 2, np.mod(xx + ox, period) - period / 2
        layer[ry * ry + rx * rx <= (0.28 * period) ** 2] = dark
    elif texture != "plain":
        raise ValueError(f"unknown texture '{texture}': one of {', '.join(TEXTURES)}")
    layer += rng.normal(0.0, 4.0, (size, size, 1)).astype(np.float32)
    return layer


def render_scene(
    seed: int,
    index: int,
    size: int = RENDER_SIZE,
    max_objects: int = 4,
    radius: tuple[float, float] = (0.13, 0.22),
    identities: list[Identity] | None = None,
) -> Scene:
    """Scene `index` of world `seed`: 1..max_objects non-overlapping objects, sizes relative to `size`."""
    rng = _rng(seed, index)
    pool = identities or all_identities()
    background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    wanted = int(rng.integers(1, max_objects + 1))
    placed: list[tuple[float, float, float]] = []
    for _ in range(60):
        if len(placed) == wanted:
            break
        r = float(rng.uniform(*radius)) * size
        cx, cy = (float(v) for v in rng.uniform(r, size - r, 2))
        if all(np.hypot(cx - px, cy - py) > r + pr + 0.03 * size for px, py, pr in placed):
            placed.append((cx, cy, r))
    # the layout (above and the identities/angles here) comes from one stream, the pixel noise
    # from another, so a scene has the same content at every size
    layout = [(pool[int(rng.integers(len(pool)))], float(rng.uniform(0, 2 * np.pi))) for _ in placed]
    paint_rng = _rng(seed, index, stream=2)
    image = _background(background, size, paint_rng)
    objects: list[Identity] = []
    masks: list[np.ndarray] = []
    for (cx, cy, r), (identity, angle) in zip(placed, layout, strict=True):
        mask = _shape_mask(identity.shape, size, cx, cy, r, angle)
        paint = _texture(identity.texture, COLOURS[identity.colour][0], size, paint_rng)
        image[mask] = paint[mask]
        objects.append(identity)
        masks.append(mask)
    return Scene(np.clip(np.rint(image), 0, 255).astype(np.uint8), background, objects, masks)


_WRAPPERS = ("a photo of {}.", "{}.", "a picture of {}.", "an image of {}.", "a photo showing {}.")


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def object_phrase(identity: Identity, rng: np.random.Generator, p_drop_texture: float = 0.2, p_colour_only: float = 0.1) -> str:
    """How a caption names one object: usually all three attributes, sometimes fewer."""
    u = rng.random()
    if u < p_colour_only:
        return identity.colour
    return identity.name(with_texture=bool(u >= p_colour_only + p_drop_texture))


def caption(scene: Scene, seed: int, index: int, p_background: float = 0.7) -> str:
    """A caption naming every object by its fine-grained identity (and usually the background)."""
    rng = _rng(seed, index, stream=1)
    order = rng.permutation(len(scene.objects))
    parts = [_article(object_phrase(scene.objects[i], rng)) for i in order]
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    if rng.random() < p_background:
        text = f"{text} on {scene.background}"
    wrapper = _WRAPPERS[int(rng.integers(len(_WRAPPERS)))]
    return wrapper.format(text)


def family_labels(scene: Scene, families: tuple[str, ...] = FAMILIES) -> np.ndarray:
    """[H, W] uint8 coarse label: 0 background, 1 + index of the object's colour family."""
    out = np.zeros(scene.image.shape[:2], dtype=np.uint8)
    for identity, mask in zip(scene.objects, scene.masks, strict=True):
        out[mask] = 1 + families.index(identity.family)
    return out


def boundary(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """Pixels within `width` of the mask's edge (both sides): VOC-style ignore band."""
    grown = mask.copy()
    shrunk = mask.copy()
    for _ in range(width):
        g = grown.copy()
        g[1:] |= grown[:-1]
        g[:-1] |= grown[1:]
        g[:, 1:] |= grown[:, :-1]
        g[:, :-1] |= grown[:, 1:]
        s = shrunk.copy()
        s[1:] &= shrunk[:-1]
        s[:-1] &= shrunk[1:]
        s[:, 1:] &= shrunk[:, :-1]
        s[:, :-1] &= shrunk[:, 1:]
        grown, shrunk = g, s
    return grown & ~shrunk


def region_captions(scene: Scene, seed: int, index: int) -> list[str]:
    """One caption per object (in `scene.objects` order) and, last, one for the background."""
    rng = _rng(seed, index, stream=3)
    texts = [f"a photo of a {object_phrase(o, rng, p_drop_texture=0.25, p_colour_only=0.25)}." for o in scene.objects]
    return [*texts, f"a photo of a {scene.background}."]
