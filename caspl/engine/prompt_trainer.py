"""PromptTrainer: a frozen CLIP whose encoders take prompt groups. A method says which
groups it adds (`text_groups`, `image_groups`) and where the text slots sit (the template
given to `build_encoders`); encoding, logits, evaluation caching and the CE step are here.
Wrappers (CasPL) compose methods through these same hooks."""
from ..clip import ImageEncoder, TextEncoder, class_prompts, clip_logits
from .trainer import Trainer


class PromptTrainer(Trainer):
    def build_encoders(self, template="{}", text_lengths=None):
        """Text and image encoders over `self.clip`: one prompt per class from `template`
        ("{}" is the class name, "{name}" a text group's slot of text_lengths[name] tokens)."""
        self.text_template, self.text_lengths = template, dict(text_lengths or {})
        self.text_encoder = self.make_text_encoder(class_prompts(template, self.classnames), self.text_lengths)
        self.image_encoder = ImageEncoder(self.clip, checkpointing=self.cfg.MODEL.ACTIVATION_CHECKPOINTING)

    def make_text_encoder(self, prompts, text_lengths):
        return TextEncoder(self.clip, prompts, text_lengths, shared_prefix=self.cfg.MODEL.TEXT_SHARED_PREFIX,
                           checkpointing=self.cfg.MODEL.ACTIVATION_CHECKPOINTING).to(self.device)

    def text_groups(self, image_features=None):
        """The text groups; image-conditioned methods (CoCoOp) build them from the batch's
        image features, and then return per-image groups."""
        return {}

    def image_groups(self):
        return {}

    def text_features(self, image_features=None):
        return self.text_encoder(self.text_groups(image_features))

    def image_features(self, images):
        return self.image_encoder(images, self.image_groups())

    def frozen_text_features(self, template):
        """Features of the frozen model (no learned tokens) for a hand-written template, the
        anchor of methods that regularise towards it. A wrapper may redefine "frozen"."""
        return self.make_text_encoder(class_prompts(template, self.classnames), {})()

    def frozen_image_features(self, images):
        return self.image_encoder(images)

    def logits(self, image_features, text_features):
        return clip_logits(image_features, text_features, self.clip.logit_scale.exp())

    def model_inference(self, images):
        # text features do not depend on the image: once per evaluation, every step in training
        return self.logits(self.image_features(images), self.cached("text", self.text_features))

    def forward_backward(self, batch):
        images, labels = self.parse_batch(batch)
        with self.autocast():
            logits = self.model_inference(images)
        return self.classification_step(logits, labels)
