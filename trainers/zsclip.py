"""Zero-shot CLIP: the dataset's hand-written template, no learning."""
from caspl import TRAINER_REGISTRY
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
