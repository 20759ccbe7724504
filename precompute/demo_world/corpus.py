"""The broad, noisy image-caption corpus the demo CLIP is pretrained on (its "web data").

Images come from every style of the world, including the evaluation shifts, with the
background hue drawn at random: unlike the ID domain, nothing but the shape tells the
class, so the pretrained model is robust across domains. Captions are noisy like alt
text: some name a wrong class, some name none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from precompute.demo_world.render import CLASSNAMES, IMAGE_SIZE, render

# Caption phrasings per style; "{c}" is the class name, "{col}" the background colour.
PHRASES: dict[str, tuple[str, ...]] = {
    "photo": ("a photo of a {c}", "a {c} on a {col} background", "a picture of a {c}", "a close-up photo of the {c}",
           "a {col} photo of a {c}", "a blurry photo of a {c}"),
    "sketch": ("a sketch of a {c}", "a pencil drawing of a {c}", "a black and white sketch of the {c}",
               "a doodle of a {c}"),
    "rendition": ("a cartoon {c}", "a cartoon of a {c}", "a colorful illustration of a {c}", "pop art of a {c}",
                  "a {c} sticker"),
    "hard": ("a partly hidden {c}", "a striped {c} behind boxes", "a {c} among {col} scraps",
             "an occluded photo of a {c}"),
    "clutter": ("a {c} in a cluttered scene", "a rotated {c} on a checkered floor", "a small {c} among clutter",
                "a tilted {c} seen from the side"),
    "painting": ("a painting of a {c}", "an oil painting of the {c}", "a {col} painting of a {c}"),
    "silhouette": ("a silhouette of a {c}", "a black {c} shape", "a white {c} on a {col} background"),
    "neon": ("a neon {c} sign", "a glowing {col} {c}", "a neon outline of a {c}"),
    "pixel": ("pixel art of a {c}", "a low resolution {c}", "a pixelated {c} on {col}"),
    "pattern": ("a {c} with a dotted pattern", "a patterned {c} on a {col} background", "a checkered {c}"),
}
# The same scenes with the class word missing, as alt text often is.
UNLABELLED = ("a photo", "an image on a {col} background", "a picture", "a drawing", "a {col} scene", "untitled")
COLOUR_NAMES = ("red", "orange", "yellow", "green", "green", "cyan", "blue", "blue", "purple", "pink")


@dataclass(frozen=True)
class CorpusSpec:
    """How many pairs, in which style mix, with how much caption noise."""

    size: int = 20000
    style_weights: tuple[tuple[str, float], ...] = (
        ("photo", 0.22), ("sketch", 0.12), ("rendition", 0.12), ("hard", 0.08), ("clutter", 0.12), ("painting", 0.06),
        ("silhouette", 0.08), ("neon", 0.07), ("pixel", 0.05), ("pattern", 0.08))
    wrong_class: float = 0.08
    no_class: float = 0.08


def colour_name(hue: float) -> str:
    return COLOUR_NAMES[int(hue % 1.0 * len(COLOUR_NAMES))]


def caption(cls: int, style: str, hue: float, rng: np.random.Generator, spec: CorpusSpec) -> str:
    """A noisy alt-text caption of an image of class `cls` in `style` on a background of `hue`."""
    u = rng.random()
    if u < spec.no_class:
        text = UNLABELLED[rng.integers(len(UNLABELLED))]
    else:
        if u < spec.no_class + spec.wrong_class:
            cls = int(rng.integers(len(CLASSNAMES)))  # a random class name, right only by chance
        phrases = PHRASES[style]
        text = phrases[rng.integers(len(phrases))].replace("{c}", CLASSNAMES[cls])
    return text.replace("{col}", colour_name(hue))


def make_corpus(spec: CorpusSpec, seed: int, size: int = IMAGE_SIZE) -> tuple[np.ndarray, list[str]]:
    """Images (N, size, size, 3) uint8 and their captions, a pure function of (spec, seed)."""
    rng = np.random.default_rng([seed, 1])
    styles, weights = zip(*spec.style_weights)
    p = np.asarray(weights) / np.sum(weights)
    images = np.empty((spec.size, size, size, 3), np.uint8)
    captions = []
    for i in range(spec.size):
        cls, style, hue = int(rng.integers(len(CLASSNAMES))), str(rng.choice(styles, p=p)), float(rng.random())
        images[i] = render(cls, style, rng, hue, size)
        captions.append(caption(cls, style, hue, rng, spec))
    return images, captions
