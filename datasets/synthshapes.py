"""SynthShapes: procedurally drawn "<colour> <shape>" images (8 colours x 6 shapes = 48
classes) so that the whole project runs on a laptop with tiny CLIP models. Generated on first
use from a fixed seed, then reused: $DATA/synthshapes/images/<colour>_<shape>/<i>.png and
$DATA/synthshapes/split_SynthShapes.json (CoOp's split format).

Labels follow a checkerboard over the colour x shape grid, so the base half (the first 24
labels) and the new half each hold every colour word and every shape word, and every new
class is a combination that base never shows."""
import json
import math
import os
import shutil
import tempfile
import time

import numpy as np
from PIL import Image, ImageDraw

from caspl import DATASET_REGISTRY, CasplError
from caspl.data import DatasetBase

# Single-token words in CLIP's BPE vocabulary, with their nominal RGB fill
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white"]
SHAPES = ["circle", "square", "triangle", "star", "cross", "ring"]
RGB = {
    "red": (215, 25, 30), "green": (30, 165, 45), "blue": (30, 70, 225), "yellow": (245, 225, 30),
    "purple": (135, 35, 175), "orange": (250, 120, 10), "black": (12, 12, 12), "white": (248, 248, 248),
}

SEED = 20240607
SPLIT_SIZES = {"train": 20, "val": 8, "test": 12}
IMAGES_PER_CLASS = sum(SPLIT_SIZES.values())
IMAGE_SIZE = 64
SPLIT_FILE = "split_SynthShapes.json"
SUPERSAMPLE = 2  # shapes are drawn at twice the size and box-filtered down (anti-aliasing)


def class_grid():
    """(colour, shape) pairs in label order: the even cells of the checkerboard over
    COLOURS x SHAPES first (the base half), colour-major, then the odd cells (new)."""
    cells = [(c, s) for c in range(len(COLOURS)) for s in range(len(SHAPES))]
    ordered = [cell for parity in (0, 1) for cell in cells if (cell[0] + cell[1]) % 2 == parity]
    return [(COLOURS[c], SHAPES[s]) for c, s in ordered]


def class_names():
    """Class names ("red circle", ...) in label order."""
    return [f"{c} {s}" for c, s in class_grid()]


def folder_name(colour, shape):
    return f"{colour}_{shape}"


# ----------------------------------------------------------------------------- drawing

def _polygon(cx, cy, r, angle, radii, start):
    """Points at radii[k % len] around (cx, cy), evenly spaced, from `start` + angle (radians)."""
    n = len(radii)
    return [(cx + r * radii[k] * math.cos(start + angle + 2 * math.pi * k / n),
             cy + r * radii[k] * math.sin(start + angle + 2 * math.pi * k / n)) for k in range(n)]


def _shape_mask(shape, size, cx, cy, r, angle):
    """An 'L' mask (0/255) of `shape` with circumradius r at (cx, cy), rotated by angle."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    up = -math.pi / 2
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        h = 0.55 * r
        draw.ellipse([cx - h, cy - h, cx + h, cy + h], fill=0)
    elif shape == "square":
        draw.polygon(_polygon(cx, cy, r, angle, [1] * 4, math.pi / 4), fill=255)
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy, r, angle, [1] * 3, up), fill=255)
    elif shape == "star":
        draw.polygon(_polygon(cx, cy, r, angle, [1, 0.42] * 5, up), fill=255)
    elif shape == "cross":
        w = 0.34  # half-width of the arms, relative to r
        pts = [(w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w),
               (-w, -w), (-w, -1)]
        # arm tips at distance r from the centre (the corners of the tips reach a little further)
        k = r / math.hypot(1, w)
        ca, sa = math.cos(angle), math.sin(angle)
        draw.polygon([(cx + k * (x * ca - y * sa), cy + k * (x * sa + y * ca)) for x, y in pts], fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r} (known: {', '.join(SHAPES)})")
    return mask


def _dilate(mask, radius):
    """Grey dilation of a 2-D array by a (2 radius + 1)-square (PIL's MaxFilter, without its cost)."""
    out = mask.copy()
    for axis in (0, 1):
        src = out.copy()
        for k in range(1, radius + 1):
            if axis == 0:
                out[k:] = np.maximum(out[k:], src[:-k])
                out[:-k] = np.maximum(out[:-k], src[k:])
            else:
                out[:, k:] = np.maximum(out[:, k:], src[:, :-k])
                out[:, :-k] = np.maximum(out[:, :-k], src[:, k:])
    return out


def _box_down(a, factor):
    """Average factor x factor blocks of a 2-D array -> H/factor x W/factor x 1 (anti-aliased coverage)."""
    h, w = a.shape
    return a.reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))[:, :, None]


def _background(rng, size):
    """A muted, greyish, low-contrast texture (stripes, checks or smooth noise), float HxWx3."""
    grey = rng.uniform(95, 165)
    base = grey + rng.uniform(-10, 10, size=3)  # a slight tint, never a saturated colour
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    kind = rng.integers(3)
    amp = rng.uniform(6, 16)
    if kind == 0:  # stripes at a random angle and period
        theta, period = rng.uniform(0, math.pi), rng.uniform(5, 16)
        u = xx * math.cos(theta) + yy * math.sin(theta)
        pattern = np.sign(np.sin(2 * math.pi * u / period + rng.uniform(0, 2 * math.pi)))
    elif kind == 1:  # checks
        period = rng.uniform(6, 18)
        ox, oy = rng.uniform(0, period, size=2)
        pattern = ((np.floor((xx + ox) / period) + np.floor((yy + oy) / period)) % 2) * 2 - 1
    else:  # smooth noise: a coarse random grid upsampled bilinearly
        cells = int(rng.integers(4, 10))
        coarse = rng.uniform(-1, 1, size=(cells, cells)).astype(np.float32)
        pattern = np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.BILINEAR))
    second = rng.uniform(-0.3, 0.3, size=3)  # the pattern shifts the tint a little too
    return base[None, None, :] + amp * pattern[:, :, None] * (1 + second[None, None, :])


def _plain_background(rng, size):
    """A flat grey with a slight tint and a gentle linear gradient, float HxWx3."""
    base = rng.uniform(95, 165) + rng.uniform(-10, 10, size=3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    theta = rng.uniform(0, 2 * math.pi)
    ramp = rng.uniform(0, 20) * (xx * math.cos(theta) + yy * math.sin(theta))
    return base[None, None, :] + ramp[:, :, None]


def render(colour, shape, rng, size=IMAGE_SIZE, background="textured"):
    """A `size` x `size` RGB image of a `colour` `shape` on a textured grey background
    (the dataset's) or, with background="plain", a flat one (a different domain).
    Position, size (35-70% of the image), rotation, colour jitter, background and pixel
    noise all come from the numpy Generator `rng`: the same rng state gives the same image."""
    if colour not in RGB:
        raise ValueError(f"unknown colour {colour!r} (known: {', '.join(COLOURS)})")
    if background not in ("textured", "plain"):
        raise ValueError(f"background must be 'textured' or 'plain', not {background!r}")
    big = size * SUPERSAMPLE
    extent = rng.uniform(0.35, 0.70)  # diameter of the circumcircle, as a share of the image
    r = extent * big / 2
    margin = 0.04 * big
    cx, cy = rng.uniform(r + margin, big - r - margin, size=2)
    angle = math.radians(rng.uniform(-30, 30))
    mask = np.asarray(_shape_mask(shape, big, cx, cy, r, angle), dtype=np.float32) / 255
    edge = _dilate(mask, SUPERSAMPLE)  # the fill plus an outline about 1 px wide
    fill_a, edge_a = _box_down(mask, SUPERSAMPLE), _box_down(edge, SUPERSAMPLE)

    fill = np.clip(np.array(RGB[colour], dtype=np.float32) + rng.uniform(-12, 12, size=3), 0, 255)
    # the outline contrasts with the fill: dark for light colours, light for black
    outline = np.full(3, 210.0 if colour == "black" else 35.0, dtype=np.float32)
    img = _background(rng, size) if background == "textured" else _plain_background(rng, size)
    img = img * (1 - edge_a) + outline * edge_a
    img = img * (1 - fill_a) + fill * fill_a
    img += rng.normal(0, 4.0, size=img.shape)
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), mode="RGB")


def _resolve_class(c):
    if isinstance(c, (int, np.integer)):
        return class_grid()[int(c)]
    if isinstance(c, str):
        colour, _, shape = c.replace("_", " ").partition(" ")
        return colour, shape
    colour, shape = c
    return colour, shape


def sample_images(n, rng, size=IMAGE_SIZE, classes=None):
    """Yield `n` fresh (image, colour, shape) triples (endlessly when n is None), each of a
    class drawn at random from `classes` (names, labels or (colour, shape) pairs; default all)."""
    pool = [_resolve_class(c) for c in (classes if classes is not None else class_grid())]
    if not pool:
        raise ValueError("sample_images needs at least one class")
    i = 0
    while n is None or i < n:
        colour, shape = pool[int(rng.integers(len(pool)))]
        yield render(colour, shape, rng, size=size), colour, shape
        i += 1


# ----------------------------------------------------------------------------- the files on disk

def split_rows():
    """The split in CoOp's format: {"train"|"val"|"test": [[relative path, label, name], ...]}."""
    split = {key: [] for key in SPLIT_SIZES}
    for label, (colour, shape) in enumerate(class_grid()):
        i = 0
        for key, count in SPLIT_SIZES.items():
            for _ in range(count):
                split[key].append([f"{folder_name(colour, shape)}/{i}.png", label, f"{colour} {shape}"])
                i += 1
    return split


def generate(dataset_dir, image_dir="images", seed=SEED, size=IMAGE_SIZE, log=print):
    """Render every class into a temporary sibling of `dataset_dir`, then rename it into place
    (an interrupted run leaves no half-made dataset). Class k's images come from
    default_rng([seed, k]), so the result depends only on the seed."""
    dataset_dir = os.path.abspath(dataset_dir)
    parent = os.path.dirname(dataset_dir)
    os.makedirs(parent, exist_ok=True)
    grid = class_grid()
    log(f"Generating SynthShapes ({len(grid)} classes x {IMAGES_PER_CLASS} images of {size} px) in {dataset_dir}")
    start = time.time()
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(dataset_dir)}-tmp-")
    try:
        for label, (colour, shape) in enumerate(grid):
            folder = os.path.join(tmp, image_dir, folder_name(colour, shape))
            os.makedirs(folder)
            rng = np.random.default_rng([seed, label])
            for i in range(IMAGES_PER_CLASS):
                render(colour, shape, rng, size=size).save(os.path.join(folder, f"{i}.png"))
            if (label + 1) % 8 == 0 or label + 1 == len(grid):
                log(f"  rendered {label + 1}/{len(grid)} classes ({time.time() - start:.1f}s)")
        with open(os.path.join(tmp, SPLIT_FILE), "w", encoding="utf-8") as f:
            json.dump(split_rows(), f, indent=1)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        try:
            os.rename(tmp, dataset_dir)
        except OSError:
            if not os.path.isdir(dataset_dir):
                raise
            log(f"{dataset_dir} appeared meanwhile (another process generated it); using that one")
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dataset_dir


@DATASET_REGISTRY.register()
class SynthShapes(DatasetBase):
    dataset_dir = "synthshapes"
    image_dir = "images"
    template = "a photo of a {}."
    preparation = "generated automatically on first use (delete the folder to regenerate it)"

    def check_layout(self):
        if not os.path.isdir(self.dataset_dir):
            try:
                generate(self.dataset_dir, os.path.relpath(self.image_dir, self.dataset_dir))
            except OSError as err:
                raise CasplError(f"cannot generate SynthShapes in {self.dataset_dir}: {err}") from None
        super().check_layout()

    def read_data(self):
        path = os.path.join(self.dataset_dir, SPLIT_FILE)
        if not os.path.isfile(path):
            raise CasplError(f"{path} is missing ({self.preparation})")
        return self.read_split(path)
