"""LAMM (Gao et al., AAAI 2024): the class-name tokens become learnable label embeddings,
one set per class, initialised from the names; trained with a hierarchical loss (CE plus
weight consolidation, feature cosine and logit distillation against the same prompts with
the original names). Registered as LAMM (CLIP + LAMM: a fixed "a photo of a {}." prompt),
LAMM_CoOp and LAMM_MaPLe (on top of those methods, whose own keys still apply)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from caspl import TRAINER_REGISTRY, CasplError
from caspl.clip import PromptGroup
from caspl.engine import PromptTrainer

from .coop import CoOp
from .maple import MaPLe

LAMM_DEFAULTS = {
    "TEMPLATE": "a photo of a {}.",  # the fixed prompt of CLIP + LAMM
    "HIERARCHICAL_LOSS": True,  # False: CE only (the paper's "w/o HL" ablation)
    "WC_WEIGHT": -1.0,  # lambda1; negative means 1 / DATASET.NUM_SHOTS as in the paper
    "COS_WEIGHT": 1.0,  # lambda2
    "KD_WEIGHT": 0.05,  # lambda3
    "KD_TEMPERATURE": 2.0,
    # where the label tokens go: "class_name" replaces the name's first tokens (the paper's
    # equation); "after_context" (LAMM_MaPLe only) is the LAMM repository's MaPLe: one label
    # token where the first fixed word after MaPLe's context was ("of" in "[ctx ctx] of a"),
    # the class name kept whole
    "LABEL_POSITION": "class_name",
}


class LabelEmbeddings(nn.Module):
    """Per-class label tokens [C, L, d] and their initial values (the anchor of weight consolidation)."""

    def __init__(self, init):
        super().__init__()
        self.labels = nn.Parameter(init.clone())
        self.register_buffer("anchor", init.clone())

    def group(self):
        return PromptGroup([self.labels], per="class")


def hierarchical_loss(logits, ref_logits, text, ref_text, targets, labels, anchor, weights, temperature):
    """LAMM's loss terms, as its released code computes them: WC sums squared drift; COS
    averages 1 - cos over the batch's own classes (reference side detached), and is 0 on a
    batch whose labels are all equal (the code counts a sample only when the batch holds
    another label); KD is a soft cross-entropy, target softmax(LAMM / T), input
    CLIP-reference / T, times T^2."""
    w_wc, w_cos, w_kd = weights
    mixed = (targets != targets[0]).any()  # a tensor: no device sync
    cos = (1 - F.cosine_similarity(text[targets], ref_text[targets].detach(), dim=-1)) * mixed
    kd = -(F.softmax(logits / temperature, 1) * F.log_softmax(ref_logits / temperature, 1)).sum(1)
    return {
        "ce": F.cross_entropy(logits, targets),
        "wc": w_wc * ((labels - anchor) ** 2).sum(),
        "cos": w_cos * cos.mean(),
        "kd": w_kd * kd.mean() * temperature**2,
    }


class LAMMMixin:
    """Turns a PromptTrainer whose prompts hold the class name ("{}") into its LAMM variant."""

    LABEL_MODEL = "label_learner"

    def other_trainer_hint(self, trainer):
        if trainer == "LAMM":  # the LAMM repository runs it as --trainer CoOp --origin-clip
            return ("; it is a CLIP + LAMM run: evaluate it with --trainer LAMM (the LAMM repository's flags: "
                    "--trainer CoOp --triplet-loss --origin-clip)")
        return super().other_trainer_hint(trainer)

    def build_encoders(self, template="{}", text_lengths=None):
        super().build_encoders(template, text_lengths)
        c = self.cfg.TRAINER.LAMM
        self.use_labels = True
        self.reference_encoder = self.text_encoder  # the method's prompts with the original names
        names = [n.replace("_", " ") for n in self.classnames]
        tokenizer = self.clip.tokenizer
        ids = [tokenizer.encode(n) for n in names]
        if c.LABEL_POSITION == "after_context":
            prompts, n_label = self.labels_after_context(template, names, tokenizer), 1
        else:
            # every class gets as many label tokens as the shortest name has; longer names keep the rest as words
            n_label = min(len(i) for i in ids)
            texts = [" ".join(filter(None, ["{label}", tokenizer.decode(i[n_label:]).strip()])) for i in ids]
            prompts = [template.replace("{}", t) for t in texts]
        self.text_encoder = self.make_text_encoder(prompts, {**self.text_lengths, "label": n_label})
        embedding = self.clip.text_tower("LAMM's label tokens").token_embedding
        with torch.no_grad():
            init = torch.stack([embedding(torch.tensor(i[:n_label], device=embedding.weight.device)) for i in ids])
        self.label_learner = LabelEmbeddings(init.float())
        self.register_model(self.LABEL_MODEL, self.label_learner)
        self.per_class_models.add(self.LABEL_MODEL)
        wc = c.WC_WEIGHT if c.WC_WEIGHT >= 0 else 1.0 / max(self.cfg.DATASET.NUM_SHOTS, 1)
        self.lamm_weights = (wc, c.COS_WEIGHT, c.KD_WEIGHT)
        print(f"LAMM: {n_label} label token(s) per class ({c.LABEL_POSITION.replace('_', ' ')}); "
              f"loss weights WC {wc:g}, COS {c.COS_WEIGHT:g}, "
              f"KD {c.KD_WEIGHT:g}" + ("" if c.HIERARCHICAL_LOSS else " (off: CE only)"))

    @staticmethod
    def labels_after_context(template, names, tokenizer):
        """The LAMM repository's MaPLe prompts: one label token in place of the first token
        after the context ("{ctx} of a {}." -> "{ctx} {label} a <name>."), or of the name's
        first token when no fixed word follows the context. The label starts from the
        name's first token either way."""
        head, tail = template.split("{}", 1)
        context_end = head.rindex("}") + 1
        words = tokenizer.encode(head[context_end:].strip())
        prompts = []
        for name in names:
            after = words + tokenizer.encode(name)
            rest = tokenizer.decode(after[1:]).strip()
            prompts.append(head[:context_end] + " " + " ".join(filter(None, ["{label}", rest])) + tail)
        return prompts

    def text_groups(self, image_features=None):
        groups = super().text_groups(image_features)
        return {**groups, "label": self.label_learner.group()} if self.use_labels else groups

    def method_groups(self, image_features=None):
        """Every text group but the labels: the prompts of the reference, with the original names."""
        return {k: g for k, g in self.text_groups(image_features).items() if k != "label"}

    def text_features(self, image_features=None):
        if not self.use_labels:
            return self.reference_encoder(self.method_groups(image_features))
        return super().text_features(image_features)

    def reference_text_features(self):
        groups = self.method_groups()
        if any(t.requires_grad for g in groups.values() for t in g.layers):
            return self.reference_encoder(groups)  # the method's current prompts (not detached, as LAMM does)
        if not hasattr(self, "_fixed_reference"):  # nothing learnable in it: the reference never changes
            with torch.no_grad():
                self._fixed_reference = self.reference_encoder(groups)
        return self._fixed_reference

    def forward_backward(self, batch):
        if not self.cfg.TRAINER.LAMM.HIERARCHICAL_LOSS:
            return super().forward_backward(batch)
        images, targets = self.parse_batch(batch)
        with self.autocast():
            image = self.image_features(images)
            text, ref_text = self.text_features(), self.reference_text_features()
            logits, ref_logits = self.logits(image, text), self.logits(image, ref_text)
        terms = hierarchical_loss(logits.float(), ref_logits.float(), text.float(), ref_text.float(), targets,
                                  self.label_learner.labels, self.label_learner.anchor, self.lamm_weights,
                                  self.cfg.TRAINER.LAMM.KD_TEMPERATURE)
        return self.classification_step(logits, targets, terms)

    def other_classes_only(self, name, path):
        """Label embeddings belong to the classes they were learned for: on other classes
        (e.g. the new half) the prompts use the plain class names, as LAMM does."""
        if name != self.LABEL_MODEL:
            return super().other_classes_only(name, path)
        print("Note: the label embeddings were learned for other classes; using the plain class names")
        self.use_labels = False
        del self._models[self.LABEL_MODEL], self._optims[self.LABEL_MODEL]


class FixedPrompt(PromptTrainer):
    """CLIP with the hand-written TRAINER.LAMM.TEMPLATE and nothing learned but what LAMM adds."""

    def build_model(self):
        self.clip = self.load_clip()
        self.build_encoders(self.cfg.TRAINER.LAMM.TEMPLATE)


def _check_lamm(cfg, label_positions=("class_name",)):
    c = cfg.TRAINER.LAMM
    if c.LABEL_POSITION not in label_positions:
        known = ("class_name", "after_context")
        raise CasplError(f"TRAINER.LAMM.LABEL_POSITION {c.LABEL_POSITION!r} " + (
            f"must be one of {', '.join(known)}" if c.LABEL_POSITION not in known else
            f"is the LAMM repository's MaPLe layout; {cfg.TRAINER.NAME} puts the labels where the class name is"))
    if c.KD_TEMPERATURE <= 0:
        raise CasplError("TRAINER.LAMM.KD_TEMPERATURE must be positive")


@TRAINER_REGISTRY.register()
class LAMM(LAMMMixin, FixedPrompt):
    CONFIG_NAME = "LAMM"
    CONFIG_DEFAULTS = {**LAMM_DEFAULTS, "PREC": "fp16"}

    def check_cfg(self, cfg):
        _check_lamm(cfg)
        template = cfg.TRAINER.LAMM.TEMPLATE  # the fixed prompt: LAMM_CoOp and LAMM_MaPLe learn theirs
        if "{}" not in template:
            raise CasplError(f"TRAINER.LAMM.TEMPLATE must hold {{}} for the class name, got {template!r}")


@TRAINER_REGISTRY.register()
class LAMM_CoOp(LAMMMixin, CoOp):  # noqa: N801 (registry name)
    def check_cfg(self, cfg):
        _check_lamm(cfg)
        super().check_cfg(cfg)


@TRAINER_REGISTRY.register()
class LAMM_MaPLe(LAMMMixin, MaPLe):  # noqa: N801
    def check_cfg(self, cfg):
        _check_lamm(cfg, ("class_name", "after_context"))
        super().check_cfg(cfg)
