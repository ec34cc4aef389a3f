"""Zero-shot CLIP: the dataset's hand-written template, no learning."""
import torch

from caspl import TRAINER_REGISTRY
from caspl.clip import ImageEncoder, TextEncoder, class_prompts, clip_logits
from caspl.engine import Trainer


@TRAINER_REGISTRY.register()
class ZeroshotCLIP(Trainer):
    CONFIG_NAME = "ZSCLIP"
    CONFIG_DEFAULTS = {"PREC": "fp16"}

    def build_model(self):
        self.clip = self.load_clip()
        template = self.dm.dataset.template
        print(f"Prompt template: {template!r}")
        with torch.no_grad():
            self.text_features = TextEncoder(self.clip, class_prompts(template, self.classnames)).to(self.device)()
        self.image_encoder = ImageEncoder(self.clip)

    def model_inference(self, images):
        return clip_logits(self.image_encoder(images), self.text_features, self.clip.logit_scale.exp())
