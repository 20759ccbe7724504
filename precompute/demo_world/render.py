"""Procedural renderer of the demo world: ten shapes drawn in many styles.

Every image is a pure function of (class, style, background hue, numpy Generator), so
a seeded Generator reproduces a dataset exactly. Shapes are drawn as a high-resolution
mask with PIL and box-filtered down (anti-aliasing); backgrounds and fills are numpy.

Styles: the evaluation domains `id` (photos), `v2`, `sketch`, `rendition`, `hard`, `clutter`
(modelled on ImageNet, -V2, -Sketch, -R, -A and ObjectNet), and corpus-only styles (`photo`:
web photos framed differently from the ID dataset, `painting`, `silhouette`, `neon`, `pixel`,
`pattern`) that broaden pretraining.
"""

from __future__ import annotations

import colorsys
import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSNAMES = ("star", "heart", "arrow", "cross", "moon", "ring", "triangle", "lightning", "house", "fish")
EVAL_DOMAINS = ("id", "v2", "sketch", "rendition", "hard", "clutter")
CORPUS_STYLES = ("photo", "painting", "silhouette", "neon", "pixel", "pattern")
STYLES = EVAL_DOMAINS + CORPUS_STYLES
IMAGE_SIZE = 32
_SS = 3  # supersampling factor of the shape masks
# Background hue of class c in the photo domains: the spurious cue fine-tuning latches onto.
CLASS_HUES = tuple((c / len(CLASSNAMES) + 0.03) % 1.0 for c in range(len(CLASSNAMES)))


def _circle(cx: float, cy: float, r: float, n: int = 40) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([x, y + 2.5], 1) / 17.0


def _star() -> np.ndarray:
    t = np.arange(10) * np.pi / 5 - np.pi / 2
    r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], float)


# Each shape is a list of (polygon in [-1, 1]^2 with y pointing down, True to add / False to cut out).
SHAPES: dict[str, list[tuple[np.ndarray, bool]]] = {
    "star": [(_star(), True)],
    "heart": [(_heart(), True)],
    "arrow": [(np.array([(-1, -0.22), (0.15, -0.22), (0.15, -0.62), (1, 0), (0.15, 0.62), (0.15, 0.22),
                         (-1, 0.22)], float), True)],
    "cross": [(_rect(-0.25, -0.95, 0.25, 0.95), True), (_rect(-0.95, -0.25, 0.95, 0.25), True)],
    "moon": [(_circle(0, 0, 0.92), True), (_circle(0.42, -0.18, 0.78), False)],
    "ring": [(_circle(0, 0, 0.95), True), (_circle(0, 0, 0.55), False)],
    "triangle": [(np.array([(0, -0.95), (0.95, 0.75), (-0.95, 0.75)], float), True)],
    "lightning": [(np.array([(0.15, -1), (-0.55, 0.12), (-0.05, 0.12), (-0.3, 1), (0.55, -0.2), (0.05, -0.2),
                             (0.45, -1)], float), True)],
    "house": [(np.array([(-0.75, 0.95), (0.75, 0.95), (0.75, -0.1), (0, -0.95), (-0.75, -0.1)], float), True),
              (_rect(-0.18, 0.35, 0.18, 0.95), False)],
    "fish": [(_circle(-0.2, 0, 0.62, 40) * [1, 0.62], True), (np.array([(0.3, 0), (0.98, -0.55), (0.98, 0.55)]), True),
             (_circle(-0.5, -0.08, 0.09, 12), False)],
}


@dataclass(frozen=True)
class Pose:
    """Where and how the shape sits: centre and half-size in units of the image, angle, squash, mirror."""

    cx: float
    cy: float
    scale: float
    angle: float
    squash: float = 1.0
    mirror: bool = False


def hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1))))


def _transform(points: np.ndarray, pose: Pose, size: int) -> list[tuple[float, float]]:
    p = points * [(-1 if pose.mirror else 1) * pose.squash, 1.0]
    c, s = np.cos(pose.angle), np.sin(pose.angle)
    p = p @ np.array([[c, s], [-s, c]])
    p = (p * pose.scale + [pose.cx, pose.cy] + 0.5) * size
    return [tuple(q) for q in p]


def _band(mask: np.ndarray, r: int) -> np.ndarray:
    """Dilation minus erosion by a (2r+1)^2 square: the mask's boundary, 2r pixels wide."""
    p = np.pad(mask, r, mode="edge")
    n = mask.shape[0]
    rows_max = np.max([p[i:i + n] for i in range(2 * r + 1)], 0)
    rows_min = np.min([p[i:i + n] for i in range(2 * r + 1)], 0)
    hi = np.max([rows_max[:, i:i + n] for i in range(2 * r + 1)], 0)
    lo = np.min([rows_min[:, i:i + n] for i in range(2 * r + 1)], 0)
    return hi - lo


def shape_mask(cls: int, pose: Pose, size: int = IMAGE_SIZE, outline: int = 0) -> np.ndarray:
    """Anti-aliased mask (size, size) in [0, 1] of the filled shape, or of its outline `outline` px wide."""
    big = Image.new("L", (size * _SS, size * _SS), 0)
    draw = ImageDraw.Draw(big)
    for poly, add in SHAPES[CLASSNAMES[cls]]:
        draw.polygon(_transform(poly, pose, size * _SS), fill=255 if add else 0)
    if outline:
        big = Image.fromarray(_band(np.asarray(big), (outline * _SS + 1) // 2))
    return np.asarray(big.resize((size, size), Image.BOX), np.float32) / 255.0


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int = 1) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a random grid upsampled bilinearly."""
    grid = rng.uniform(-1, 1, (cells, cells, channels)).astype(np.float32)
    return np.stack([np.asarray(Image.fromarray(grid[..., i]).resize((size, size), Image.BILINEAR))
                     for i in range(channels)], -1)


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel row and column indices (size, size), cached: rebuilding them dominated small renders."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return yy, xx


def _gradient(rng: np.random.Generator, size: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    t = rng.uniform(0, 2 * np.pi)
    yy, xx = (g / (size - 1) - 0.5 for g in _grid(size))
    w = np.clip(0.5 + np.cos(t) * xx + np.sin(t) * yy, 0, 1)[..., None]
    return a * (1 - w) + b * w


def _stripes(rng: np.random.Generator, size: int, a: np.ndarray, b: np.ndarray, period: float) -> np.ndarray:
    t = rng.uniform(0, np.pi)
    yy, xx = _grid(size)
    w = (np.sin((np.cos(t) * xx + np.sin(t) * yy) * 2 * np.pi / period + rng.uniform(0, 6.3)) > 0)[..., None]
    return np.where(w, a, b)


def _dots(rng: np.random.Generator, size: int, a: np.ndarray, b: np.ndarray, period: int) -> np.ndarray:
    yy, xx = _grid(size)
    ox, oy = rng.integers(0, period, 2)
    w = (((xx + ox) % period - period / 2) ** 2 + ((yy + oy) % period - period / 2) ** 2 < (period / 3.2) ** 2)
    return np.where(w[..., None], a, b)


def _checker(rng: np.random.Generator, size: int, a: np.ndarray, b: np.ndarray, period: int) -> np.ndarray:
    oy, ox = rng.integers(0, period, 2)
    yy, xx = _grid(size)
    yy, xx = yy + oy, xx + ox
    return np.where(((xx // period + yy // period) % 2 == 0)[..., None], a, b)


def _blend(img: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return img * (1 - alpha[..., None]) + colour * alpha[..., None]


def _pose(rng: np.random.Generator, scale: tuple[float, float], angle_deg: float, offset: float,
          squash: tuple[float, float] = (1.0, 1.0)) -> Pose:
    return Pose(cx=rng.uniform(-offset, offset), cy=rng.uniform(-offset, offset), scale=rng.uniform(*scale) / 2,
                angle=np.deg2rad(rng.uniform(-angle_deg, angle_deg)), squash=rng.uniform(*squash),
                mirror=bool(rng.random() < 0.5))


def _photo_background(rng: np.random.Generator, hue: float, size: int, value: tuple[float, float]) -> np.ndarray:
    h = hue + rng.normal(0, 0.02)
    a = hsv(h, rng.uniform(0.45, 0.8), rng.uniform(*value))
    b = hsv(h + rng.normal(0, 0.03), rng.uniform(0.35, 0.75), rng.uniform(*value))
    return _gradient(rng, size, a, b) + 0.08 * _smooth_noise(rng, size, 4)


def _shaded_fill(rng: np.random.Generator, size: int, bg_hue: float) -> np.ndarray:
    """Object colour far from the background hue, with a light-from-one-side gradient."""
    h, v = bg_hue + rng.uniform(0.25, 0.75), rng.uniform(0.35, 1.0)
    c = hsv(h, rng.uniform(0.3, 0.9), v)
    return _gradient(rng, size, c * 1.15, c * 0.7)


# Framing of the photo-like styles: web photos (the corpus) fill the frame; the ID dataset's photos show
# the object smaller, which is what keeps zero-shot accuracy mediocre in-distribution; V2 re-samples them.
PHOTO_FRAMING = {
    "photo": {"scale": (0.65, 1.0), "angle": 20, "offset": 0.12, "value": (0.45, 0.9), "noise": 0.035},
    "id": {"scale": (0.45, 0.8), "angle": 20, "offset": 0.15, "value": (0.45, 0.9), "noise": 0.035},
    "v2": {"scale": (0.42, 0.78), "angle": 25, "offset": 0.17, "value": (0.42, 0.86), "noise": 0.045},
}


def _photo(cls: int, rng: np.random.Generator, hue: float, size: int, framing: str) -> np.ndarray:
    """ImageNet-like photo: gradient background in `hue`, shaded object, small pose jitter, sensor noise."""
    f = PHOTO_FRAMING[framing]
    img = _photo_background(rng, hue, size, f["value"])
    mask = shape_mask(cls, _pose(rng, f["scale"], f["angle"], f["offset"]), size)
    img = _blend(img, _shaded_fill(rng, size, hue), mask)
    return img + rng.normal(0, f["noise"], img.shape)


def _sketch(cls: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """ImageNet-Sketch-like: a broken pencil outline traced once to three times on textured paper, optional
    hatching and scribbles, greyscale."""
    paper = rng.uniform(0.75, 1.0) + 0.06 * _smooth_noise(rng, size, 6)
    pose = _pose(rng, (0.55, 0.95), 25, 0.12)
    ink = np.zeros((size, size), np.float32)
    for _ in range(rng.integers(1, 4)):
        jitter = Pose(pose.cx + rng.normal(0, 0.015), pose.cy + rng.normal(0, 0.015),
                      pose.scale * rng.uniform(0.96, 1.04), pose.angle + rng.normal(0, 0.05), 1.0, pose.mirror)
        stroke = shape_mask(cls, jitter, size, outline=1) * rng.uniform(0.35, 0.85)
        ink = np.maximum(ink, stroke * (_smooth_noise(rng, size, 5)[..., 0] > -0.4))  # pencil lifts: gaps
    if rng.random() < 0.5:
        hatch = _stripes(rng, size, np.ones(1), np.zeros(1), rng.uniform(2.5, 4))[..., 0]
        ink = np.maximum(ink, hatch * shape_mask(cls, pose, size) * rng.uniform(0.2, 0.45))
    for _ in range(rng.integers(0, 3)):
        scribble = _pose(rng, (0.2, 0.4), 180, 0.4)
        ink = np.maximum(ink, shape_mask(int(rng.integers(len(CLASSNAMES))), scribble, size, outline=1) * 0.3)
    grey = paper[..., 0] * (1 - ink) + rng.uniform(0.05, 0.35) * ink + rng.normal(0, 0.025, (size, size))
    return np.repeat(grey[..., None], 3, -1)


def _rendition(cls: int, rng: np.random.Generator, hue: float, size: int) -> np.ndarray:
    """ImageNet-R-like: cartoon (flat fill, thick dark outline) or pop-art on a flat or patterned `hue` background."""
    pose = _pose(rng, (0.6, 0.95), 30, 0.12)
    fill_h = hue + rng.uniform(0.25, 0.75)
    fill = hsv(fill_h, rng.uniform(0.7, 1.0), rng.uniform(0.8, 1.0))
    bg_a = hsv(hue, rng.uniform(0.35, 0.7), rng.uniform(0.8, 1.0))
    bg_b = hsv(rng.random(), rng.uniform(0.3, 0.9), rng.uniform(0.6, 1.0))
    kind = rng.integers(0, 3)
    if kind == 0:
        bg = np.broadcast_to(bg_a, (size, size, 3))
    elif kind == 1:
        bg = _dots(rng, size, bg_b, bg_a, int(rng.integers(4, 7)))
    else:
        bg = _stripes(rng, size, bg_b, bg_a, rng.uniform(4, 8))
    img = _blend(bg, fill, shape_mask(cls, pose, size))
    img = _blend(img, hsv(fill_h, 0.6, rng.uniform(0.0, 0.25)), shape_mask(cls, pose, size, outline=1))
    if rng.random() < 0.3:
        img = np.round(np.clip(img, 0, 1) * 2) / 2  # posterised pop-art palette
    return img


def _hard(cls: int, rng: np.random.Generator, hue: float, size: int) -> np.ndarray:
    """ImageNet-A-like: a photo with occluders, a textured object and fragments of other shapes around it."""
    img = _photo_background(rng, hue, size, (0.4, 0.85))
    for _ in range(rng.integers(1, 4)):
        frag = _pose(rng, (0.3, 0.6), 180, 0.45)
        img = _blend(img, hsv(hue + rng.uniform(-0.08, 0.08), 0.6, rng.uniform(0.2, 1.0)),
                     shape_mask(int(rng.integers(len(CLASSNAMES))), frag, size, outline=1) * 0.5)
    pose = _pose(rng, (0.6, 0.95), 40, 0.15)
    a = hsv(hue + rng.uniform(0.3, 0.7), 0.7, rng.uniform(0.6, 1))
    fill = _stripes(rng, size, a, a * rng.uniform(0.6, 0.8), rng.uniform(3, 6)) if rng.random() < 0.5 else a
    img = _blend(img, fill, shape_mask(cls, pose, size))
    for _ in range(rng.integers(1, 3)):
        w, h = rng.uniform(0.12, 0.3, 2) * size
        x, y = rng.uniform(pose.cx - 0.2, pose.cx + 0.2) * size + size / 2, rng.uniform(-0.3, 0.3) * size + size / 2
        box = np.zeros((size, size), np.float32)
        box[int(max(0, y - h / 2)):int(y + h / 2), int(max(0, x - w / 2)):int(x + w / 2)] = 1
        img = _blend(img, hsv(rng.random(), rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.9)), box)
    return img + rng.normal(0, 0.05, img.shape)


def _clutter(cls: int, rng: np.random.Generator, hue: float, size: int) -> np.ndarray:
    """ObjectNet-like: tilted, seen from the side (squashed), off-centre, on an unusual `hue` background
    (a table against a wall, a checkered floor, a blotchy surface) with small objects around."""
    a = hsv(hue, rng.uniform(0.3, 0.7), rng.uniform(0.4, 0.95))
    b = hsv(rng.random(), rng.uniform(0, 0.6), rng.uniform(0.3, 1))
    kind = rng.choice(3, p=(0.5, 0.25, 0.25))
    if kind == 0:
        img = np.where((_grid(size)[0] > rng.integers(size // 3, 2 * size // 3))[..., None], a, b)
    elif kind == 1:
        img = _checker(rng, size, a, a * rng.uniform(0.6, 0.85), int(rng.integers(3, 9)))
    else:
        img = a + 0.25 * _smooth_noise(rng, size, 8, 3)
    for _ in range(rng.integers(2, 6)):
        box = np.zeros((size, size), np.float32)
        x, y = rng.integers(0, size, 2)
        w, h = rng.integers(1, 5, 2)
        box[y:y + h, x:x + w] = 1
        img = _blend(img, hsv(rng.random(), rng.uniform(0.3, 1), rng.uniform(0.2, 1)), box)
    pose = _pose(rng, (0.65, 0.95), 45, 0.12, squash=(0.8, 1.0))
    fill = hsv(hue + rng.uniform(0.25, 0.75), rng.uniform(0.3, 0.9), rng.uniform(0.35, 1.0))
    img = _blend(img, _gradient(rng, size, fill * 1.2, fill * 0.6), shape_mask(cls, pose, size))
    return img + rng.normal(0, 0.04, img.shape)


def _corpus_style(cls: int, style: str, rng: np.random.Generator, hue: float, size: int) -> np.ndarray:
    pose = _pose(rng, (0.5, 1.0), 60, 0.2)
    if style == "painting":
        bg = _photo_background(rng, hue, size, (0.3, 0.9)) + 0.15 * _smooth_noise(rng, size, 10, 3)
        img = _blend(bg, hsv(hue + rng.uniform(0.2, 0.8), 0.6, rng.uniform(0.3, 1)) + 0.15 * _smooth_noise(
            rng, size, 12, 3), shape_mask(cls, pose, size))
        return np.asarray(Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).filter(
            ImageFilter.GaussianBlur(rng.uniform(0.4, 1.0))), np.float32) / 255
    if style == "silhouette":
        dark = rng.random() < 0.5
        return _blend(_photo_background(rng, hue, size, (0.6, 1.0) if dark else (0.05, 0.3)),
                      np.full(3, rng.uniform(0, 0.15) if dark else rng.uniform(0.85, 1.0)), shape_mask(cls, pose, size))
    if style == "neon":
        glow = np.asarray(Image.fromarray((shape_mask(cls, pose, size, outline=1) * 255).astype(np.uint8)).filter(
            ImageFilter.GaussianBlur(1.2)), np.float32) / 255
        img = _blend(np.full((size, size, 3), rng.uniform(0, 0.15)), hsv(hue, 0.8, 1.0), np.clip(glow * 2.5, 0, 1))
        return _blend(img, np.ones(3), shape_mask(cls, pose, size, outline=1) * 0.8)
    if style == "pixel":
        small = size // int(rng.choice([2, 4]))
        img = _photo(cls, rng, hue, small * 2, "photo")
        img = np.asarray(Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).resize((small, small),
                                                                                              Image.BOX))
        return np.asarray(Image.fromarray(img).resize((size, size), Image.NEAREST), np.float32) / 255
    if style == "pattern":
        a, b = hsv(hue + 0.5, 0.8, rng.uniform(0.5, 1)), hsv(rng.random(), 0.5, rng.uniform(0, 0.5))
        fill = _dots(rng, size, a, b, int(rng.integers(3, 6))) if rng.random() < 0.5 else _checker(rng, size, a, b, 2)
        return _blend(_photo_background(rng, hue, size, (0.4, 0.9)), fill, shape_mask(cls, pose, size))
    raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")


def render(cls: int, style: str, rng: np.random.Generator, hue: float | None = None,
           size: int = IMAGE_SIZE) -> np.ndarray:
    """One image (size, size, 3) uint8 of class `cls` in `style`.

    `hue` in [0, 1) colours the background (every style but the greyscale sketch); None draws it at random.
    """
    if hue is None:
        hue = float(rng.random())
    if style in PHOTO_FRAMING:
        img = _photo(cls, rng, hue, size, style)
    elif style == "sketch":
        img = _sketch(cls, rng, size)
    elif style == "rendition":
        img = _rendition(cls, rng, hue, size)
    elif style == "hard":
        img = _hard(cls, rng, hue, size)
    elif style == "clutter":
        img = _clutter(cls, rng, hue, size)
    else:
        img = _corpus_style(cls, style, rng, hue, size)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
