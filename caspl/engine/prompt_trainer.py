"""PromptTrainer: a frozen CLIP whose encoders take prompt groups. A method says which
groups it adds (`text_groups`, `image_groups`) and where the text slots sit (the template
given to `build_encoders`); encoding, logits, evaluation caching and the CE step are here.
A wrapper (a method cascaded with another) composes methods through these same hooks."""
import torch

from ..clip import ImageEncoder, TextEncoder, class_prompts, clip_logits, fp32_twin
from .trainer import Trainer

FROZEN_PASS_SEQUENCES = 4096  # sequences per text pass of frozen_text_features


class PromptTrainer(Trainer):
    def build_encoders(self, template="{}", text_lengths=None):
        """Text and image encoders over `self.clip`: one prompt per class from `template`
        ("{}" is the class name, "{name}" a text group's slot of text_lengths[name] tokens)."""
        self.text_template, self.text_lengths = template, dict(text_lengths or {})
        self.text_encoder = self.make_text_encoder(class_prompts(template, self.classnames), self.text_lengths)
        self.image_encoder = ImageEncoder(self.clip, checkpointing=self.cfg.MODEL.ACTIVATION_CHECKPOINTING)

    def make_text_encoder(self, prompts, text_lengths, clip_model=None):
        return TextEncoder(clip_model or self.clip, prompts, text_lengths,
                           shared_prefix=self.cfg.MODEL.TEXT_SHARED_PREFIX,
                           checkpointing=self.cfg.MODEL.ACTIVATION_CHECKPOINTING).to(self.device)

    def text_groups(self, image_features=None):
        """The text groups; image-conditioned methods build them from the batch's
        image features, and then return per-image groups."""
        return {}

    def image_groups(self):
        return {}

    def text_features(self, image_features=None):
        return self.text_encoder(self.text_groups(image_features))

    def image_features(self, images):
        return self.image_encoder(images, self.image_groups())

    @torch.no_grad()
    def frozen_text_features(self, templates):
        """[templates, classes, D] fp32 features of the frozen model (no learned tokens) for
        hand-written templates: anchors computed once per run, in fp32 whatever PREC says (an
        fp16 run loads an fp32 copy of its CLIP for them), as the reference code computes
        its anchors. Several templates share a pass, up to FROZEN_PASS_SEQUENCES sequences. A
        wrapper may redefine "frozen" (frozen_text_encoder)."""
        if isinstance(templates, str):
            raise TypeError("frozen_text_features takes a list of templates")
        clip_model = fp32_twin(self.clip, self.cfg.MODEL.BACKBONE.NAME)
        step = max(1, FROZEN_PASS_SEQUENCES // len(self.classnames))
        features = torch.cat([self.frozen_text_encoder(templates[i:i + step], clip_model)().float()
                              for i in range(0, len(templates), step)])
        return features.view(len(templates), len(self.classnames), -1)

    def frozen_text_encoder(self, templates, clip_model):
        """The frozen model's text encoder for the class prompts of `templates`, template-major, on
        `clip_model` (this run's CLIP or its fp32 copy), called without arguments."""
        prompts = [p for template in templates for p in class_prompts(template, self.classnames)]
        return self.make_text_encoder(prompts, {}, clip_model)

    def frozen_image_features(self, images):
        return self.image_encoder(images)

    def logits(self, image_features, text_features):
        """The model's own logits: its scale times cosine similarity, plus its bias where it has
        one (SigLIP's: a constant over classes, which no softmax-based loss sees)."""
        logits = clip_logits(image_features, text_features, self.clip.logit_scale.exp())
        bias = self.clip.logit_bias
        return logits if bias is None else logits + bias

    def model_inference(self, images):
        # text features do not depend on the image: once per evaluation, every step in training
        return self.logits(self.image_features(images), self.cached("text", self.text_features))

    def forward_backward(self, batch):
        images, labels = self.parse_batch(batch)
        with self.autocast():
            logits = self.model_inference(images)
        return self.classification_step(logits, labels)
