"""VPT (visual prompt tuning, Jia et al., ECCV 2022) on CLIP, the vision-only baseline of the
MaPLe paper: N_CTX_VISION learnable tokens appended after the patch tokens of the image
encoder, replaced by fresh ones before each of its first PROMPT_DEPTH_VISION layers (depth 1:
shallow VPT). The text side is frozen: the classifier is the text features of the fixed
prompt "<CTX_INIT> <class>." ("a photo of a <class>."), computed once per run; CE."""
import torch

from caspl import TRAINER_REGISTRY, CasplError
from caspl.clip.learners import DeepPrompt, init_phrase, vision_width
from caspl.engine import PromptTrainer

from .ivlp import check_prompt_depth


@TRAINER_REGISTRY.register()
class VPT(PromptTrainer):
    CONFIG_NAME = "VPT"
    CONFIG_DEFAULTS = {"N_CTX_VISION": 2, "CTX_INIT": "a photo of a", "PREC": "fp16", "PROMPT_DEPTH_VISION": 1}

    def check_cfg(self, cfg):
        for key in ("N_CTX_VISION", "PROMPT_DEPTH_VISION"):
            if cfg.TRAINER.VPT[key] < 1:
                raise CasplError(f"TRAINER.VPT.{key} is {cfg.TRAINER.VPT[key]}; it must be at least 1 "
                                 "(VPT learns visual prompts only)")

    def build_model(self):
        c = self.method_cfg
        self.clip = self.load_clip(vit_for="VPT's prompts")
        check_prompt_depth(self.clip, "TRAINER.VPT.PROMPT_DEPTH_VISION", c.PROMPT_DEPTH_VISION, "image")
        self.prompt_learner = DeepPrompt(c.N_CTX_VISION, vision_width(self.clip), c.PROMPT_DEPTH_VISION)
        template = " ".join(part for part in (init_phrase(c.CTX_INIT), "{}.") if part)
        print(f"Fixed text prompt: {template!r}; vision {c.N_CTX_VISION} tokens x {c.PROMPT_DEPTH_VISION} layers")
        self.build_encoders(template)
        self.register_model("prompt_learner", self.prompt_learner)
        self._fixed_text = None  # (text encoder, its features)

    def image_groups(self):
        return {"vctx": self.prompt_learner.group()}

    def text_features(self, image_features=None):
        """Nothing in the text prompt learns: its features are computed once (outside autocast,
        in the frozen CLIP's precision) and reused. A wrapper that adds learnable text tokens
        (CasPL with BOOST_LEARNABLE) gets them computed every call."""
        groups = self.text_groups(image_features)
        if any(t.requires_grad for g in groups.values() for t in g.layers):
            return self.text_encoder(groups)
        if self._fixed_text is None or self._fixed_text[0] is not self.text_encoder:
            with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
                self._fixed_text = (self.text_encoder, self.text_encoder(groups))
        return self._fixed_text[1]
