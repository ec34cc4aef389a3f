"""MaPLe (Khattak et al., CVPR 2023): deep text prompts, and vision prompts produced from them
by a linear coupling per layer (512 -> 768), so both encoders are prompted by one set of
tokens; CE."""
import copy

import torch.nn as nn

from caspl import TRAINER_REGISTRY, CasplError
from caspl.clip import PromptGroup
from caspl.clip.learners import deep_text_context, text_width, vision_width
from caspl.engine import PromptTrainer

from .ivlp import check_prompt_depth


class CoupledPrompts(nn.Module):
    """Text tokens for layers 0..depth-1 and one coupling Linear per layer that maps them to
    that layer's vision tokens. The deep couplings start as copies of one random layer."""

    def __init__(self, text, d_text, d_vision):
        super().__init__()
        self.text = text
        deep = nn.Linear(d_text, d_vision)
        self.couplings = nn.ModuleList([nn.Linear(d_text, d_vision)] +
                                       [copy.deepcopy(deep) for _ in range(text.depth - 1)])

    def vision_group(self):
        return PromptGroup([f(t) for f, t in zip(self.couplings, self.text.layers())])


@TRAINER_REGISTRY.register()
class MaPLe(PromptTrainer):
    CONFIG_NAME = "MAPLE"
    CONFIG_DEFAULTS = {"N_CTX": 2, "CTX_INIT": "a photo of a", "PREC": "fp16", "PROMPT_DEPTH": 9}
    MODEL_NAME = "MultiModalPromptLearner"

    def check_cfg(self, cfg):
        c = cfg.TRAINER.MAPLE
        if c.N_CTX < 1 or c.PROMPT_DEPTH < 1:
            raise CasplError("TRAINER.MAPLE.N_CTX and TRAINER.MAPLE.PROMPT_DEPTH must be at least 1")

    def build_model(self):
        c = self.method_cfg
        self.clip = self.load_clip(vit_for="MaPLe's prompts")
        for encoder in ("text", "image"):
            check_prompt_depth(self.clip, "TRAINER.MAPLE.PROMPT_DEPTH", c.PROMPT_DEPTH, encoder)
        text, template = deep_text_context(self.clip, c.N_CTX, c.CTX_INIT, c.PROMPT_DEPTH)
        self.prompt_learner = CoupledPrompts(text, text_width(self.clip), vision_width(self.clip))
        print(f"Prompt: {template!r}; {c.N_CTX} coupled tokens x {c.PROMPT_DEPTH} layers")
        self.build_encoders(template, {"ctx": c.N_CTX})
        self.register_model(self.MODEL_NAME, self.prompt_learner)

    def text_groups(self, image_features=None):
        return {"ctx": self.prompt_learner.text.group()}

    def image_groups(self):
        return {"vctx": self.prompt_learner.vision_group()}
