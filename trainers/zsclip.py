"""Zero-shot CLIP: the dataset's hand-written template (ZeroshotCLIP), or an ensemble of
templates (ZeroshotCLIP2): each template's class features normalised, averaged and
normalised again, computed once per run."""
import torch.nn.functional as F

from caspl import TRAINER_REGISTRY, CasplError
from caspl.clip.templates import IMAGENET_TEMPLATES, SELECTED_TEMPLATES
from caspl.engine import PromptTrainer


@TRAINER_REGISTRY.register()
class ZeroshotCLIP(PromptTrainer):
    CONFIG_NAME = "ZSCLIP"
    CONFIG_DEFAULTS = {"PREC": "fp16"}

    def build_model(self):
        self.clip = self.load_clip()
        template = self.dm.dataset.template
        print(f"Prompt template: {template!r}")
        self.build_encoders(template)  # text features: once per evaluation (PromptTrainer)


ENSEMBLES = {"select": SELECTED_TEMPLATES, "imagenet80": IMAGENET_TEMPLATES}


@TRAINER_REGISTRY.register()
class ZeroshotCLIP2(PromptTrainer):
    """TEMPLATES "select": the 7 selected ImageNet templates plus the dataset's own (as the CoOp
    code; ImageNet's own is left out there); "imagenet80": the 80 ImageNet templates plus the
    dataset's own when it is not among them."""
    CONFIG_NAME = "ZSCLIP2"
    CONFIG_DEFAULTS = {"PREC": "fp16", "TEMPLATES": "select"}

    def check_cfg(self, cfg):
        if cfg.TRAINER.ZSCLIP2.TEMPLATES not in ENSEMBLES:
            raise CasplError(f"TRAINER.ZSCLIP2.TEMPLATES must be one of {', '.join(ENSEMBLES)}, "
                             f"not {cfg.TRAINER.ZSCLIP2.TEMPLATES!r}")

    def ensemble_templates(self):
        templates = list(ENSEMBLES[self.method_cfg.TEMPLATES])
        own = self.dm.dataset.template
        if own not in templates and self.cfg.DATASET.NAME != "ImageNet":
            templates.append(own)
        return templates

    def build_model(self):
        self.clip = self.load_clip()
        self.build_encoders("{}")
        templates = self.ensemble_templates()
        print(f"Prompt ensemble: {len(templates)} templates ({self.method_cfg.TEMPLATES})")
        features = F.normalize(self.frozen_text_features(templates), dim=-1)
        self.ensemble = F.normalize(features.mean(0), dim=-1).to(self.clip.dtype)

    def text_features(self, image_features=None):
        return self.ensemble
