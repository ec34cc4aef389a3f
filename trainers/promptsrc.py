"""PromptSRC (Khattak et al., ICCV 2023): IVLP prompts regularised towards the frozen CLIP
(L1 on text and image features, KL on logits; the text anchor averages 60 templates) and
Gaussian prompt aggregation (GPA) over epochs."""
import math

import torch
import torch.nn.functional as F

from caspl import TRAINER_REGISTRY, CasplError
from caspl.clip.templates import IMAGENET_TEMPLATES
from caspl.engine import learnable_state

from .ivlp import IVLP

# PromptSRC's list: OpenAI's ImageNet templates without their last 20, "a photo of a {}." first
TEMPLATES = ["a photo of a {}."] + [t for t in IMAGENET_TEMPLATES[:60] if t != "a photo of a {}."]


def gpa_weights(mean, std, epochs):
    """Gaussian weights N(e; mean, std) over epochs e = 1..epochs, normalised to sum 1."""
    w = [math.exp(-((e - mean) ** 2) / (2 * std**2)) for e in range(1, epochs + 1)]
    total = sum(w)
    if total == 0:
        raise CasplError(f"GPA weights vanish: mean {mean}, std {std} over {epochs} epochs")
    return [x / total for x in w]


def self_regulating_loss(logits, labels, text, frozen_text, image, frozen_image, frozen_logits, w_text, w_image):
    """PromptSRC's loss terms (features normalised; KL(frozen || prompted) over the number of logits)."""
    ce = F.cross_entropy(logits, labels)
    l1_text = w_text * F.l1_loss(F.normalize(text, dim=-1), F.normalize(frozen_text, dim=-1))
    l1_image = w_image * F.l1_loss(F.normalize(image, dim=-1), F.normalize(frozen_image, dim=-1))
    kl = F.kl_div(F.log_softmax(logits, 1), F.log_softmax(frozen_logits, 1), reduction="sum", log_target=True)
    return {"ce": ce, "l1_text": l1_text, "l1_image": l1_image, "kl": kl / logits.numel()}


@TRAINER_REGISTRY.register()
class PromptSRC(IVLP):
    CONFIG_NAME = "PROMPTSRC"
    CONFIG_DEFAULTS = {**IVLP.CONFIG_DEFAULTS, "N_CTX_VISION": 4, "N_CTX_TEXT": 4, "TEXT_LOSS_WEIGHT": 25.0,
                       "IMAGE_LOSS_WEIGHT": 10.0, "GPA_MEAN": 15.0, "GPA_STD": 1.0}

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        if cfg.TRAINER.PROMPTSRC.GPA_STD <= 0:
            raise CasplError("TRAINER.PROMPTSRC.GPA_STD must be positive")

    def build_model(self):
        super().build_model()
        c = self.method_cfg
        self.gpa = gpa_weights(c.GPA_MEAN, c.GPA_STD, self.max_epoch)
        self.gpa_sum = None  # running weighted sum of the learnable tensors (fp32)
        # the text anchor: unnormalised fp32 features averaged over the templates
        self.frozen_text = self.frozen_text_features(TEMPLATES).mean(0)

    def forward_backward(self, batch):
        images, labels = self.parse_batch(batch)
        c = self.method_cfg
        with self.autocast():
            image = self.image_features(images)
            text = self.text_features()
            logits = self.logits(image, text)
            with torch.no_grad():
                frozen_image = self.frozen_image_features(images)
                frozen_logits = self.logits(frozen_image, self.frozen_text)
        terms = self_regulating_loss(logits.float(), labels, text.float(), self.frozen_text, image.float(),
                                     frozen_image.float(), frozen_logits.float(), c.TEXT_LOSS_WEIGHT,
                                     c.IMAGE_LOSS_WEIGHT)
        return self.classification_step(logits, labels, terms)

    def after_epoch(self):
        """GPA: add this epoch's prompts with its Gaussian weight; after the last epoch the
        weighted sum becomes the model (so the final checkpoint holds the aggregate)."""
        w = self.gpa[self.epoch]
        state = learnable_state(self.prompt_learner)
        if self.gpa_sum is None:
            self.gpa_sum = {k: torch.zeros_like(v, dtype=torch.float32) for k, v in state.items()}
        for k, v in state.items():
            self.gpa_sum[k] += w * v.float()
        if self.epoch + 1 == self.max_epoch:
            self.prompt_learner.load_state_dict(self.gpa_sum, strict=False)
            print(f"GPA: prompts aggregated over {self.max_epoch} epochs (mean {self.method_cfg.GPA_MEAN}, "
                  f"std {self.method_cfg.GPA_STD})")

    def extra_state(self):
        return {"gpa_sum": self.gpa_sum}

    def load_extra_state(self, state):
        self.gpa_sum = state.get("gpa_sum")
