"""SynthShapes: procedurally drawn photos of "<colour> <shape>" objects (8 colours x 6 shapes
= 48 classes), so that the whole project runs on a laptop with tiny CLIP models. Generated on
first use from a fixed seed, then reused: $DATA/synthshapes/images/<colour>_<shape>/<i>.png
and $DATA/synthshapes/split_SynthShapes.json (CoOp's split format).

Two lighting domains share the scenes:
- "daylight": true colours on a grey backdrop. The tiny student CLIP was pretrained on these
  only (as ViT-B/16 never saw every domain it is used on).
- "lamp", the dataset's domain: the same scenes under a coloured lamp. The backdrop takes a
  greenish cast and every hue is pulled halfway toward the next colour of the palette around
  the colour wheel (red looks vermilion, blue looks violet). Everything needed to tell the
  classes apart is still in the image, but a CLIP that learned its colour words in daylight
  names them wrongly about half of the time; the teacher saw both domains.

Labels are colour-major in hue order, so the base half (the first 24 labels) holds red,
orange, yellow and green objects and the new half teal, blue, purple and pink ones: as in
real base-to-new splits, the new classes are concepts no labelled base image shows, and
within each half neighbouring hues are the ones the lamp confuses."""
import colorsys
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

# Single-token words in CLIP's BPE vocabulary, in hue order, with their daylight RGB fill
PALETTE = {
    "red": (215, 30, 35), "orange": (245, 125, 20), "yellow": (240, 220, 35), "green": (35, 165, 50),
    "teal": (25, 160, 150), "blue": (35, 75, 225), "purple": (130, 45, 190), "pink": (235, 70, 170),
}
COLOURS = list(PALETTE)
SHAPES = ["circle", "square", "triangle", "star", "cross", "ring"]
DOMAINS = ("daylight", "lamp")
LAMP_SHIFT = 0.5  # how far the lamp pulls each hue toward the next palette hue
LAMP_BACKDROP = (0.92, 1.0, 0.86)  # its cast on the grey backdrop (RGB gains)

SEED = 20240607
SPLIT_SIZES = {"train": 60, "val": 8, "test": 30}
IMAGE_SIZE = 64
SPLIT_FILE = "split_SynthShapes.json"
SUPERSAMPLE = 2  # shapes are drawn at twice the size and box-filtered down (anti-aliasing)


def class_grid():
    """(colour, shape) pairs in label order: colour-major, colours in hue order."""
    return [(c, s) for c in COLOURS for s in SHAPES]


def class_names():
    """Class names ("red circle", ...) in label order."""
    return [f"{c} {s}" for c, s in class_grid()]


def folder_name(colour, shape):
    return f"{colour}_{shape}"


# ----------------------------------------------------------------------------- colours

def _hls(rgb):
    return colorsys.rgb_to_hls(*(np.asarray(rgb, dtype=np.float64) / 255))


def lamp_hue(hue):
    """The hue (degrees) a daylight hue takes under the lamp: palette hue k moves LAMP_SHIFT of
    the way to palette hue k+1 (cyclically), and hues between them are interpolated."""
    hues = np.sort([_hls(rgb)[0] * 360 for rgb in PALETTE.values()])
    targets = hues + LAMP_SHIFT * (np.roll(hues, -1) - hues + np.r_[np.zeros(len(hues) - 1), 360])
    xs = np.concatenate([hues - 360, hues, hues + 360])
    ys = np.concatenate([targets - 360, targets, targets + 360])
    return float(np.interp(hue % 360, xs, ys)) % 360


def lamp_rgb(rgb):
    """An RGB colour as the lamp shows it: hue shifted by lamp_hue, lightness and saturation kept."""
    hue, lightness, saturation = _hls(rgb)
    return np.array(colorsys.hls_to_rgb(lamp_hue(hue * 360) / 360, lightness, saturation)) * 255


LAMP_PALETTE = {c: tuple(np.clip(lamp_rgb(rgb), 0, 255)) for c, rgb in PALETTE.items()}


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


def _backdrop(rng, size):
    """A flat grey with a slight tint and a gentle linear gradient, float HxWx3."""
    base = rng.uniform(95, 165) + rng.uniform(-10, 10, size=3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    theta = rng.uniform(0, 2 * math.pi)
    ramp = rng.uniform(0, 20) * (xx * math.cos(theta) + yy * math.sin(theta))
    return base[None, None, :] + ramp[:, :, None]


def render(colour, shape, rng, size=IMAGE_SIZE, domain="lamp"):
    """A `size` x `size` RGB photo of a `colour` `shape` in `domain` ("lamp", the dataset's, or
    "daylight"). Position, size (35-70% of the image), rotation, colour jitter, backdrop and
    pixel noise all come from the numpy Generator `rng`: the same rng state gives the same
    scene in both domains."""
    if colour not in PALETTE:
        raise ValueError(f"unknown colour {colour!r} (known: {', '.join(COLOURS)})")
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {', '.join(DOMAINS)}, not {domain!r}")
    big = size * SUPERSAMPLE
    extent = rng.uniform(0.35, 0.70)  # diameter of the circumcircle, as a share of the image
    r = extent * big / 2
    margin = 0.04 * big
    cx, cy = rng.uniform(r + margin, big - r - margin, size=2)
    angle = math.radians(rng.uniform(-30, 30))
    mask = np.asarray(_shape_mask(shape, big, cx, cy, r, angle), dtype=np.float32) / 255
    edge = _dilate(mask, SUPERSAMPLE)  # the fill plus a dark outline about 1 px wide
    fill_a, edge_a = _box_down(mask, SUPERSAMPLE), _box_down(edge, SUPERSAMPLE)

    palette = LAMP_PALETTE if domain == "lamp" else PALETTE
    fill = np.clip(np.array(palette[colour], dtype=np.float32) + rng.uniform(-12, 12, size=3), 0, 255)
    outline = np.full(3, 35.0, dtype=np.float32)
    img = _backdrop(rng, size)
    if domain == "lamp":
        img = img * np.array(LAMP_BACKDROP, dtype=np.float32)
    img = img * (1 - edge_a) + outline * edge_a
    img = img * (1 - fill_a) + fill * fill_a
    img += rng.normal(0, 4.0, size=img.shape)
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), mode="RGB")


# ----------------------------------------------------------------------------- the files on disk

def split_rows(sizes=None):
    """The split in CoOp's format: {"train"|"val"|"test": [[relative path, label, name], ...]},
    `sizes` (default SPLIT_SIZES) images per class in each split."""
    sizes = sizes or SPLIT_SIZES
    split = {key: [] for key in sizes}
    for label, (colour, shape) in enumerate(class_grid()):
        i = 0
        for key, count in sizes.items():
            for _ in range(count):
                split[key].append([f"{folder_name(colour, shape)}/{i}.png", label, f"{colour} {shape}"])
                i += 1
    return split


def generate(dataset_dir, image_dir="images", seed=SEED, size=IMAGE_SIZE, sizes=None, log=print):
    """Render every class (in the lamp domain, `sizes` images per split and class, default
    SPLIT_SIZES) into a temporary sibling of `dataset_dir`, then rename it into place (an
    interrupted run leaves no half-made dataset). Class k's images come from
    default_rng([seed, k]), so the result depends only on the seed and the sizes."""
    dataset_dir = os.path.abspath(dataset_dir)
    parent = os.path.dirname(dataset_dir)
    os.makedirs(parent, exist_ok=True)
    grid = class_grid()
    sizes = sizes or SPLIT_SIZES
    per_class = sum(sizes.values())
    log(f"Generating SynthShapes ({len(grid)} classes x {per_class} images of {size} px) in {dataset_dir}")
    start = time.time()
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(dataset_dir)}-tmp-")
    try:
        for label, (colour, shape) in enumerate(grid):
            folder = os.path.join(tmp, image_dir, folder_name(colour, shape))
            os.makedirs(folder)
            rng = np.random.default_rng([seed, label])
            for i in range(per_class):
                render(colour, shape, rng, size=size).save(os.path.join(folder, f"{i}.png"))
            if (label + 1) % 8 == 0 or label + 1 == len(grid):
                log(f"  rendered {label + 1}/{len(grid)} classes ({time.time() - start:.1f}s)")
        with open(os.path.join(tmp, SPLIT_FILE), "w", encoding="utf-8") as f:
            json.dump(split_rows(sizes), f, indent=1)
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
        split = self.read_split(path)
        names = class_names()
        if any(d.label >= len(names) or d.classname != names[d.label] for items in split for d in items):
            # an earlier SynthShapes (other colours, another label order) must not pass for this one
            raise CasplError(f"{self.dataset_dir} was generated by another version of SynthShapes (its labels "
                             f"are not {names[0]!r}, {names[1]!r}, ... in this order); delete it to regenerate it")
        return split
