"""CoCoOp (Zhou et al., CVPR 2022): CoOp's context plus a small meta-net that turns each
image's feature into a bias added to every context token, so each image gets its own
text prompts (the text encoder runs once per image and class); CE."""
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from caspl import TRAINER_REGISTRY, CasplError
from caspl.clip import PromptGroup
from caspl.clip.learners import DeepPrompt, init_phrase, text_width, word_context
from caspl.engine import PromptTrainer


class ConditionalContext(nn.Module):
    def __init__(self, ctx, image_dim, width):
        super().__init__()
        self.ctx = ctx
        self.meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(image_dim, image_dim // 16)),
            ("relu", nn.ReLU(inplace=True)),
            ("linear2", nn.Linear(image_dim // 16, width)),
        ]))

    def group(self, image_features):
        bias = self.meta_net(F.normalize(image_features.float(), dim=-1))  # [B, d]
        return PromptGroup([self.ctx.ctx.unsqueeze(0) + bias.unsqueeze(1)], per="image")


@TRAINER_REGISTRY.register()
class CoCoOp(PromptTrainer):
    CONFIG_NAME = "COCOOP"
    # MAX_TEXT_SEQUENCES bounds one text pass (images x classes): evaluation runs in chunks
    # of images under it; a training batch must fit in it.
    CONFIG_DEFAULTS = {"N_CTX": 16, "CTX_INIT": "", "PREC": "fp16", "MAX_TEXT_SEQUENCES": 20000}

    def check_cfg(self, cfg):
        c = cfg.TRAINER.COCOOP
        if not init_phrase(c.CTX_INIT) and c.N_CTX < 1:
            raise CasplError(f"TRAINER.COCOOP.N_CTX must be at least 1, not {c.N_CTX}")

    def train(self):
        # evaluation runs in chunks of images, but a training step's graph is one batch
        need = self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE * self.num_classes
        if need > self.method_cfg.MAX_TEXT_SEQUENCES:
            raise CasplError(
                f"CoCoOp encodes batch x classes = {self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE} x {self.num_classes} = "
                f"{need} text sequences per training step, over TRAINER.COCOOP.MAX_TEXT_SEQUENCES "
                f"({self.method_cfg.MAX_TEXT_SEQUENCES}); lower DATALOADER.TRAIN_X.BATCH_SIZE (the reference uses 1)")
        super().train()

    def build_model(self):
        c = self.method_cfg
        self.clip = self.load_clip()
        init, words = word_context(self.clip, c.CTX_INIT) if init_phrase(c.CTX_INIT) else (None, "")
        ctx = DeepPrompt(c.N_CTX, text_width(self.clip), init=init)
        self.prompt_learner = ConditionalContext(ctx, self.clip.embed_dim, text_width(self.clip))
        template = " ".join(filter(None, ["{ctx}", words, "{}."]))
        print(f"Prompt: {template!r} with {ctx.length} context tokens conditioned on the image")
        self.build_encoders(template, {"ctx": ctx.length})
        self.register_model("prompt_learner", self.prompt_learner)

    def text_groups(self, image_features=None):
        return {"ctx": self.prompt_learner.group(image_features)}

    def model_inference(self, images):
        image = self.image_features(images)
        chunk = max(1, self.method_cfg.MAX_TEXT_SEQUENCES // self.num_classes)
        return torch.cat([self.logits(image[i:i + chunk], self.text_features(image[i:i + chunk]))
                          for i in range(0, image.shape[0], chunk)])
