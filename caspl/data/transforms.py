"""CLIP's input pipeline, built from INPUT.* keys (the names Dassl's configs use)."""
import torchvision.transforms as T
from torchvision.transforms import InterpolationMode

from ..errors import CasplError

INTERPOLATIONS = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}
TRAIN_CHOICES = ("random_resized_crop", "random_flip", "random_crop", "center_crop", "normalize")


def build_transform(cfg, is_train):
    inp = cfg.INPUT
    if inp.INTERPOLATION not in INTERPOLATIONS:
        raise CasplError(f"INPUT.INTERPOLATION must be one of {sorted(INTERPOLATIONS)}, not {inp.INTERPOLATION!r}")
    unknown = [t for t in inp.TRANSFORMS if t not in TRAIN_CHOICES]
    if unknown:
        raise CasplError(f"unsupported INPUT.TRANSFORMS {unknown}; supported: {', '.join(TRAIN_CHOICES)}")
    interp = INTERPOLATIONS[inp.INTERPOLATION]
    size = tuple(inp.SIZE)
    steps = []
    if inp.NO_TRANSFORM:
        steps = [T.Resize(size, interpolation=interp)]
    elif is_train:
        if "random_resized_crop" in inp.TRANSFORMS:
            steps.append(T.RandomResizedCrop(size, scale=tuple(inp.RRCROP_SCALE), interpolation=interp))
        else:
            steps.append(T.Resize(size, interpolation=interp))
            if "random_crop" in inp.TRANSFORMS:
                steps.append(T.RandomCrop(size, padding=inp.CROP_PADDING))
        if "random_flip" in inp.TRANSFORMS:
            steps.append(T.RandomHorizontalFlip())
    else:
        steps += [T.Resize(max(size), interpolation=interp), T.CenterCrop(size)]
    steps.append(T.ToTensor())
    if "normalize" in inp.TRANSFORMS and not inp.NO_TRANSFORM:
        steps.append(T.Normalize(inp.PIXEL_MEAN, inp.PIXEL_STD))
    return T.Compose(steps)
