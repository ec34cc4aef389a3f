"""IVLP (independent vision-language prompting, as in the MaPLe and PromptSRC papers): deep
learnable tokens in the text encoder and, independently, in the image encoder; CE."""
import torch.nn as nn

from caspl import TRAINER_REGISTRY, CasplError
from caspl.clip import as_backbone
from caspl.clip.learners import DeepPrompt, deep_text_context, vision_width
from caspl.engine import PromptTrainer


class VLPrompts(nn.Module):
    """Text tokens (`text`) and, unless the vision length or depth is 0, image tokens (`vision`)."""

    def __init__(self, text, vision=None):
        super().__init__()
        self.text = text
        self.vision = vision


def check_prompt_depth(clip_model, key, depth, encoder):
    backbone = as_backbone(clip_model)
    layers = (backbone.text_tower(key) if encoder == "text" else backbone.vision_tower(key)).layers
    if depth > layers:
        raise CasplError(f"{key} is {depth} but the {encoder} encoder has {layers} layers")


@TRAINER_REGISTRY.register()
class IVLP(PromptTrainer):
    CONFIG_NAME = "IVLP"
    CONFIG_DEFAULTS = {"N_CTX_VISION": 2, "N_CTX_TEXT": 2, "CTX_INIT": "a photo of a", "PREC": "fp16",
                       "PROMPT_DEPTH_VISION": 9, "PROMPT_DEPTH_TEXT": 9}
    MODEL_NAME = "VLPromptLearner"

    def check_cfg(self, cfg):
        c = cfg.TRAINER[self.CONFIG_NAME]
        key = f"TRAINER.{self.CONFIG_NAME}"
        if c.N_CTX_TEXT < 1 or c.PROMPT_DEPTH_TEXT < 1:
            raise CasplError(f"{key}.N_CTX_TEXT and {key}.PROMPT_DEPTH_TEXT must be at least 1")
        if c.N_CTX_VISION < 0 or c.PROMPT_DEPTH_VISION < 0:
            raise CasplError(f"{key}.N_CTX_VISION and {key}.PROMPT_DEPTH_VISION cannot be negative")

    def build_model(self):
        c, key = self.method_cfg, f"TRAINER.{self.CONFIG_NAME}"
        self.clip = self.load_clip()
        check_prompt_depth(self.clip, f"{key}.PROMPT_DEPTH_TEXT", c.PROMPT_DEPTH_TEXT, "text")
        text, template = deep_text_context(self.clip, c.N_CTX_TEXT, c.CTX_INIT, c.PROMPT_DEPTH_TEXT)
        vision = None
        if c.N_CTX_VISION and c.PROMPT_DEPTH_VISION:
            self.clip.vision_tower(f"{self.CONFIG_NAME}'s visual prompts ({key}.N_CTX_VISION > 0)")
            check_prompt_depth(self.clip, f"{key}.PROMPT_DEPTH_VISION", c.PROMPT_DEPTH_VISION, "image")
            vision = DeepPrompt(c.N_CTX_VISION, vision_width(self.clip), c.PROMPT_DEPTH_VISION)
        self.prompt_learner = VLPrompts(text, vision)
        print(f"Prompt: {template!r}; text {c.N_CTX_TEXT} tokens x {c.PROMPT_DEPTH_TEXT} layers, "
              f"vision {c.N_CTX_VISION if vision else 0} tokens x {c.PROMPT_DEPTH_VISION if vision else 0} layers")
        self.build_encoders(template, {"ctx": c.N_CTX_TEXT})
        self.register_model(self.MODEL_NAME, self.prompt_learner)

    def text_groups(self, image_features=None):
        return {"ctx": self.prompt_learner.text.group()}

    def image_groups(self):
        vision = self.prompt_learner.vision
        return {"vctx": vision.group()} if vision is not None else {}
