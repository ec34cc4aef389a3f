"""Teachers for the methods that distil from a larger model: a frozen CLIP-like model behind
one small interface.

A teacher gives L2-normalised fp32 class features for prompt strings (`encode_text`, once per
run and computed in fp32 whatever the run's precision, as the authors' code does), image
features for the student's batch (`encode_image`, in the run's precision) and logits from the
two (`logits`); it names what its features depend on for the teacher cache (`cache_key`).
Two kinds:

- `ClipTeacher`, an OpenAI CLIP (a name or file, as MODEL.BACKBONE.NAME takes): exactly the
  authors' set-up. It sees the student's batch as it is (its input size must be the
  student's) and its logits use the *student's* logit scale, as in their code.
- `OpenClipTeacher`, any open_clip model, named as caspl.clip.backbone reads it:
  `open_clip:<architecture or model-config .json>/<pretrained tag or checkpoint file>`
  (open-clip-torch is optional: `pip install -e ".[open_clip]"`). Its own tokenizer encodes the prompts; its own logit
  scale (and logit bias, for SigLIP models) make its logits; and its own preprocessing is
  honoured: the student's batch (normalised with the student's mean/std at the student's
  size) is un-normalised, resized to the teacher's input size with the teacher's
  interpolation (bicubic by default; antialiased, clamped to [0, 1] as a PIL image is) and
  normalised with the teacher's mean/std. Both models therefore see the same crop; the
  teacher sees it upsampled from the student's resolution, not re-read from the file.
  With PREC fp16 it encodes images with fp32 weights under fp16 autocast.
"""
import contextlib
import os

import torch
import torch.nn.functional as F
import torchvision.transforms as T

from .backbone import OPEN_CLIP, fp32_twin, is_open_clip, load_open_clip, parse_open_clip
from .prompts import TextEncoder

TEXT_CHUNK = 256  # prompts per text forward


def file_key(name):
    """A name as the cache key records it: a file by absolute path and size."""
    is_file = os.path.isfile(name)
    return os.path.abspath(name) if is_file else name, os.path.getsize(name) if is_file else None


def input_normalisation(transform):
    """(mean, std) of the Normalize step in `transform` (a torchvision Compose), or (0, 1)
    per channel when it has none: the pixels are then in [0, 1]."""
    step = next((s for s in getattr(transform, "transforms", []) if isinstance(s, T.Normalize)), None)
    return (step.mean, step.std) if step is not None else ((0.0,) * 3, (1.0,) * 3)


def _channels(values, device):
    return torch.tensor([float(v) for v in values], device=device).view(1, -1, 1, 1)


def frozen_teacher(spec, trainer, scale_from=None):
    """The teacher `spec` names (an OpenAI CLIP name or file, or `open_clip:...`) for
    `trainer`'s batches; an OpenAI teacher's logits use `scale_from`'s logit scale (default:
    its own)."""
    if is_open_clip(spec):
        normalisation = input_normalisation(trainer.dm.tfm_train)
        return OpenClipTeacher(spec, trainer.device, trainer.precision == "fp16", normalisation)
    model = trainer.load_clip(spec)
    return ClipTeacher(model, spec, scale_from or model, trainer.cfg.MODEL.TEXT_SHARED_PREFIX)


class ClipTeacher:
    """An OpenAI CLIP teacher, as the authors use it (see the module's docstring)."""

    def __init__(self, model, spec, student, shared_prefix=True):
        self.model, self.spec, self.student, self.shared_prefix = model, spec, student, shared_prefix

    def encode_text(self, prompts):
        """Class features, once per run: in fp32 whatever the run's precision, as the authors'
        code encodes them (with an fp32 copy of the teacher; a half teacher loads one here)."""
        model = fp32_twin(self.model, self.spec)
        encoder = TextEncoder(model, prompts, shared_prefix=self.shared_prefix)
        return F.normalize(encoder.to(model.logit_scale.device)().float(), dim=-1)

    def encode_image(self, images):
        return F.normalize(self.model.encode_image(images).float(), dim=-1)

    def logits(self, image_features, text_features):
        logits = self.student.logit_scale.exp().float() * image_features @ text_features.t()
        bias = self.student.logit_bias
        return logits if bias is None else logits + bias.float()

    def cache_key(self):
        teacher, size = file_key(self.spec)
        return {"teacher": teacher, "teacher_bytes": size}

    def describe(self):
        scale = ("its own logit scale" if self.student is self.model
                 else "the student's logit scale, as the authors' code")
        return f"Teacher {self.spec} (OpenAI CLIP; {scale})"


class OpenClipTeacher:
    """An open_clip teacher: its tokenizer, preprocessing, logit scale and bias (see the
    module's docstring)."""

    def __init__(self, spec, device, fp16, student_normalisation):
        self.spec = spec
        self.model, self.tokenizer, pp = load_open_clip(spec, device)
        self.arch, self.weights = parse_open_clip(spec)
        self.device = torch.device(device)
        # fp16: fp32 weights under fp16 autocast, the teacher's outputs being all it gives; amp: the
        # trainer's autocast
        self.fp16 = fp16
        size = pp["size"]
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.mean, self.std, self.interpolation = pp["mean"], pp["std"], pp["interpolation"]
        student_mean, student_std = student_normalisation
        self._from = (_channels(student_mean, device), _channels(student_std, device))
        self._to = (_channels(self.mean, device), _channels(self.std, device))
        # SigLIP: logits = scale * cos + bias (a constant over classes: it cancels in a softmax)
        self.scale = self.model.logit_scale.detach().float().exp().reshape(())
        bias = getattr(self.model, "logit_bias", None)
        self.bias = None if bias is None else bias.detach().float().reshape(())

    def prepare(self, images):
        """The student's batch as the teacher's preprocessing would have made it."""
        x = images.float() * self._from[1] + self._from[0]  # pixels in [0, 1]
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode=self.interpolation, align_corners=False,
                              antialias=True).clamp(0, 1)
        return (x - self._to[0]) / self._to[1]

    def precision(self):
        return torch.autocast(self.device.type, dtype=torch.float16) if self.fp16 else contextlib.nullcontext()

    def encode_text(self, prompts):
        """Class features, once per run: in fp32 (its weights are fp32), as OpenAI teachers' are."""
        tokens = self.tokenizer(list(prompts)).to(self.device)
        features = [self.model.encode_text(tokens[i:i + TEXT_CHUNK]) for i in range(0, len(tokens), TEXT_CHUNK)]
        return F.normalize(torch.cat(features).float(), dim=-1)

    def encode_image(self, images):
        with self.precision():
            features = self.model.encode_image(self.prepare(images))
        return F.normalize(features.float(), dim=-1)

    def logits(self, image_features, text_features):
        logits = self.scale * image_features @ text_features.t()
        return logits if self.bias is None else logits + self.bias

    def cache_key(self):
        weights, size = file_key(self.weights)
        return {"teacher": f"{OPEN_CLIP}{self.arch}/{weights}", "teacher_bytes": size,
                "teacher_input": [list(self.size), list(self.mean), list(self.std), self.interpolation]}

    def describe(self):
        bias = "" if self.bias is None else f" + bias {self.bias.item():g}"
        return (f"Teacher {self.spec} (open_clip): input {self.size[0]}x{self.size[1]}, mean {self.mean}, "
                f"std {self.std}, {self.interpolation}; logits = its scale {self.scale.item():g} x cos{bias}")
