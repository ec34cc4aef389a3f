"""PromptKD (Li et al., CVPR 2024): unsupervised prompt distillation for vision-language models.

A large teacher CLIP, prompt-tuned beforehand with PromptSRC (or IVLP) on the domain's base
classes (`TRAINER.PROMPTKD.TEACHER_CKPT`: that run), gives its class text features once and
its image logits every step. The student is a smaller CLIP's image encoder with deep visual
prompts and a projector into the teacher's text space; it learns on the unlabeled images of
the whole domain to match the teacher's logits: T^2 KL(teacher || student) summed over batch
x classes, divided by their number, times KD_WEIGHT (plus CE_WEIGHT x CE, 0 by default). It
classifies with the teacher's text features, so no text encoder runs at test time.
`TEACHER_CKPT zero_shot` makes any frozen CLIP-like model the teacher as it is (an OpenAI
CLIP or `open_clip:<arch>/<tag or file>`, see caspl.clip.teachers), with the dataset's template.

Evaluation as PromptKD's scripts: `TRAINER.MODAL base2novel` (default) trains on every class
and evaluates the base or new half (DATASET.SUBSAMPLE_CLASSES) with the logits restricted to
that half; with TEST.FINAL_MODEL best_val the epoch is chosen on the base half's test images,
as they do. `TRAINER.MODAL cross` evaluates every class of the dataset (a target of a teacher
tuned on ImageNet), choosing on the dataset's val split."""
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode as CN

from caspl import TRAINER_REGISTRY, CasplError
from caspl.clip import ImageEncoder, TextEncoder, class_prompts, clip_logits
from caspl.clip.learners import DeepPrompt, deep_text_context, vision_width
from caspl.clip.teachers import ClipTeacher, frozen_teacher
from caspl.config import check_as_recorded, updated
from caspl.data.datum import Datum
from caspl.engine import PromptTrainer, evaluated_checkpoint, read_checkpoint
from caspl.evaluation import Classification

from .ivlp import IVLP, VLPrompts, check_prompt_depth

STUDENT_MODEL = "VLPromptLearner"
MODALS = ("base2novel", "cross")
ZERO_SHOT = "zero_shot"  # TEACHER_CKPT for a teacher that is not prompt-tuned (any OpenAI or open_clip model)
# keys of PromptKD's config that size its student's text prompts, which no logit uses there
# either (the student classifies with the teacher's text features): read, and said so in the log
TEXT_KEYS = {"N_CTX_TEXT": 4, "PROMPT_DEPTH_TEXT": 9, "CTX_INIT": "a photo of a"}


def promptkd_loss(student_logits, teacher_logits, temperature):
    """T^2 KL(softmax(teacher / T) || softmax(student / T)), summed and divided by batch x classes."""
    t = temperature
    kl = F.kl_div(F.log_softmax(student_logits / t, 1), F.log_softmax(teacher_logits / t, 1),
                  reduction="sum", log_target=True)
    return kl * t * t / student_logits.numel()


class Student(nn.Module):
    """The student's learnables: deep visual prompts and the projector (PromptKD's two 1x1
    convolutions on a 1x1 map with BatchNorm and ReLU between, i.e. Linear-BN-ReLU-Linear)."""

    def __init__(self, prompts, width, out_width):
        super().__init__()
        self.prompts = prompts
        self.projector = nn.Sequential(nn.Linear(width, out_width), nn.BatchNorm1d(out_width), nn.ReLU(inplace=True),
                                       nn.Linear(out_width, out_width))


def teacher_checkpoint(path):
    """The prompt-tuned teacher run's checkpoint: a file, or a run directory (its best-val
    checkpoint where one was saved, else its last)."""
    if not path:
        raise CasplError("TRAINER.PROMPTKD.TEACHER_CKPT is empty: name the teacher's PromptSRC run (trained on the "
                         "teacher backbone, e.g. configs/trainers/PromptSRC/vit_l14_c2_ep20_batch8_4+4ctx.yaml), "
                         f"or {ZERO_SHOT} for the teacher as it is")
    if os.path.isdir(path):
        found = evaluated_checkpoint(path, IVLP.MODEL_NAME)
        if not os.path.isfile(found):
            raise CasplError(f"{path} holds no PromptSRC/IVLP run ({IVLP.MODEL_NAME}/checkpoint)")
        return found
    if not os.path.isfile(path):
        raise CasplError(f"teacher checkpoint not found: {path}")
    return path


class TunedTeacher(ClipTeacher):
    """A backbone (OpenAI CLIP or open_clip model) with the prompts of a PromptSRC/IVLP run,
    behind the teacher interface of caspl.clip.teachers (its own logit scale and bias); its
    prompts' template carries `{ctx}`."""

    def __init__(self, model, spec, prompts, n_ctx_text, shared_prefix):
        super().__init__(model, spec, model, shared_prefix)
        self.prompts, self.n_ctx_text = prompts, n_ctx_text
        self.image_encoder = ImageEncoder(model)

    def encode_text(self, prompts):
        encoder = TextEncoder(self.model, prompts, {"ctx": self.n_ctx_text}, shared_prefix=self.shared_prefix)
        encoder = encoder.to(self.model.logit_scale.device)
        return F.normalize(encoder({"ctx": self.prompts.text.group()}).float(), dim=-1)

    def encode_image(self, images):
        groups = {"vctx": self.prompts.vision.group()} if self.prompts.vision is not None else {}
        return F.normalize(self.image_encoder(images, groups).float(), dim=-1)


@TRAINER_REGISTRY.register()
class PromptKD(PromptTrainer):
    CONFIG_NAME = "PROMPTKD"
    CONFIG_DEFAULTS = {"N_CTX_VISION": 4, "PROMPT_DEPTH_VISION": 9, **TEXT_KEYS, "PREC": "fp16",
                       "PROJECT_LAYER": 2, "CE_WEIGHT": 0.0, "KD_WEIGHT": 1.0, "TEMPERATURE": 1.0,
                       "TEACHER_NAME": "ViT-L/14",  # the teacher: an OpenAI CLIP name or file, or open_clip:...
                       # caspl: the teacher's PromptSRC run directory or checkpoint file, or zero_shot
                       "TEACHER_CKPT": ""}
    ROOT_CONFIG = {"TRAINER": {"MODAL": "base2novel"}}
    ROOT_CONFIG_OWNERS = "PromptKD"
    CASCADABLE = False
    CASCADABLE_NOT = "distils a teacher instead: its student has no text encoder to take them (compare it with CasPL)"

    @classmethod
    def eval_cfg(cls, cfg, model_dir, epoch):
        """Evaluation finds the teacher the student was trained with in its checkpoint."""
        if cfg.TRAINER.PROMPTKD.TEACHER_CKPT or not os.path.isdir(os.path.join(model_dir, STUDENT_MODEL)):
            return cfg
        trained = CN.load_cfg(read_checkpoint(evaluated_checkpoint(model_dir, STUDENT_MODEL, epoch))["meta"]["config"])
        return updated(cfg, {f"TRAINER.PROMPTKD.{key}": trained.TRAINER.PROMPTKD[key]
                             for key in ("TEACHER_NAME", "TEACHER_CKPT")})

    def data_cfg(self, cfg):
        """The student learns on every class of the domain; the evaluated half is cut here."""
        return updated(cfg, {"DATASET.SUBSAMPLE_CLASSES": "all"})

    def check_cfg(self, cfg):
        c = cfg.TRAINER.PROMPTKD
        if cfg.TRAINER.MODAL not in MODALS:
            raise CasplError(f"TRAINER.MODAL must be one of {', '.join(MODALS)}, not {cfg.TRAINER.MODAL!r}")
        if c.PROJECT_LAYER != 2:
            raise CasplError(f"TRAINER.PROMPTKD.PROJECT_LAYER {c.PROJECT_LAYER}: PromptKD's projector has 2 layers")
        if c.TEMPERATURE <= 0 or c.N_CTX_VISION < 1 or c.PROMPT_DEPTH_VISION < 1:
            raise CasplError("TRAINER.PROMPTKD.TEMPERATURE, N_CTX_VISION and PROMPT_DEPTH_VISION must be positive")
        if cfg.DATASET.SUBSAMPLE_CLASSES != "all" and cfg.TRAINER.MODAL == "cross":
            raise CasplError("TRAINER.MODAL cross evaluates every class: DATASET.SUBSAMPLE_CLASSES must be all")

    def build_model(self):
        c = self.method_cfg
        self.clip = self.load_clip(vit_for="PromptKD's student prompts")
        check_prompt_depth(self.clip, "TRAINER.PROMPTKD.PROMPT_DEPTH_VISION", c.PROMPT_DEPTH_VISION, "image")
        self.build_teacher()
        prompts = DeepPrompt(c.N_CTX_VISION, vision_width(self.clip), c.PROMPT_DEPTH_VISION)
        self.student = Student(prompts, self.clip.embed_dim, self.teacher_text.shape[1]).to(self.device)
        self.image_encoder = ImageEncoder(self.clip, checkpointing=self.cfg.MODEL.ACTIVATION_CHECKPOINTING)
        self.register_model(STUDENT_MODEL, self.student)
        self.build_evaluation()
        items = self.dm.dataset.train_x + self.dm.dataset.train_u
        if c.CE_WEIGHT and self.dm.dataset.train_u:
            raise CasplError("TRAINER.PROMPTKD.CE_WEIGHT > 0 needs labels: DATASET.UNLABELED_DIRS has none")
        self.dm.train_loader_x = self.dm.make_train_loader(items)
        print(f"PromptKD: student {self.cfg.MODEL.BACKBONE.NAME} with {c.N_CTX_VISION} visual tokens x "
              f"{c.PROMPT_DEPTH_VISION} layers and a projector {self.clip.embed_dim} -> "
              f"{self.teacher_text.shape[1]}; {len(items)} training images of {len(self.all_classnames)} classes")
        print("TRAINER.PROMPTKD.N_CTX_TEXT, PROMPT_DEPTH_TEXT and CTX_INIT size the student's text prompts in "
              "PromptKD's code, where no logit uses them (the student classifies with the teacher's text features); "
              "here the student has none")

    def build_teacher(self):
        """The teacher and its class text features, once (after its tuned prompts are in:
        PromptKD issue #33)."""
        c = self.method_cfg
        if c.TEACHER_CKPT == ZERO_SHOT:
            self.teacher = frozen_teacher(c.TEACHER_NAME, self)
            template = self.dm.dataset.template
            print(f"PromptKD: {self.teacher.describe()}, zero-shot with the template {template!r}")
        else:
            self.teacher, template = self.tuned_teacher(teacher_checkpoint(c.TEACHER_CKPT))
        self.all_classnames = list(self.classnames)
        with torch.no_grad():
            self.teacher_text = self.teacher.encode_text(class_prompts(template, self.all_classnames))

    def tuned_teacher(self, path):
        """(the teacher CLIP with the prompts of the PromptSRC/IVLP run at `path`, its template)."""
        c = self.method_cfg
        ckpt = read_checkpoint(path)
        meta = ckpt.get("meta", {})
        section = {"PromptSRC": "PROMPTSRC", "IVLP": "IVLP"}.get(meta.get("trainer"))
        if section is None:
            raise CasplError(f"{path} was written by {meta.get('trainer', 'an unknown trainer')}; "
                             "PromptKD's teacher is a PromptSRC (or IVLP) run")
        if meta.get("backbone") != c.TEACHER_NAME:
            raise CasplError(f"{path} was tuned on {meta.get('backbone')}, but TRAINER.PROMPTKD.TEACHER_NAME is "
                             f"{c.TEACHER_NAME}")
        tuned = CN.load_cfg(meta["config"]).TRAINER[section]
        # a script passes the teacher run's keys to the student too: they must describe this teacher
        checked = check_as_recorded(self.cfg, {f"TRAINER.{section}.{k}": v for k, v in tuned.items()},
                                    f"the teacher run {path}", "PromptKD distils that teacher as it was tuned")
        if checked:
            print(f"PromptKD: {', '.join(checked)} given: as the teacher run {path} was tuned")
        model = self.load_clip(c.TEACHER_NAME)
        text, template = deep_text_context(model, tuned.N_CTX_TEXT, tuned.CTX_INIT, tuned.PROMPT_DEPTH_TEXT)
        vision = None
        if tuned.N_CTX_VISION and tuned.PROMPT_DEPTH_VISION:
            vision = DeepPrompt(tuned.N_CTX_VISION, vision_width(model), tuned.PROMPT_DEPTH_VISION)
        prompts = VLPrompts(text, vision).to(self.device).requires_grad_(False)
        prompts.load_state_dict(ckpt["state_dict"])
        print(f"PromptKD teacher: {c.TEACHER_NAME} with the prompts of {path} ({meta['trainer']}, {template!r})")
        return TunedTeacher(model, c.TEACHER_NAME, prompts, text.length, self.cfg.MODEL.TEXT_SHARED_PREFIX), template

    def build_evaluation(self):
        """Test (and best-epoch val) loaders over the evaluated classes, as PromptKD's scripts."""
        n, modal = len(self.all_classnames), self.cfg.TRAINER.MODAL
        m = math.ceil(n / 2)
        halves = {"all": (0, n), "base": (0, m), "new": (m, n)}
        self.ranges = {"test": halves[self.cfg.DATASET.SUBSAMPLE_CLASSES]}
        test = self.dm.dataset.test
        self.dm.test_loader = self.dm.make_test_loader(self._relabelled(test, *self.ranges["test"]))
        if modal == "base2novel":  # the epoch is chosen on the base classes' test images, as theirs
            self.ranges["val"] = halves["base"]
            self.dm.val_loader = self.dm.make_test_loader(self._relabelled(test, *halves["base"]))
        else:
            self.ranges["val"] = halves["all"]
        lo, hi = self.ranges["test"]
        self.classnames, self.num_classes = self.all_classnames[lo:hi], hi - lo
        self.head = self.ranges["test"]

    @staticmethod
    def _relabelled(items, lo, hi):
        return [Datum(d.impath, d.label - lo, d.classname, d.domain) for d in items if lo <= d.label < hi]

    def test(self, split=None):
        split = split or self.cfg.TEST.SPLIT
        self.head = self.ranges[split]
        lo, hi = self.head
        self.evaluator = Classification(self.all_classnames[lo:hi], per_class=self.cfg.TEST.PER_CLASS_RESULT)
        return super().test(split)

    def image_groups(self):
        return {"vctx": self.student.prompts.group()}

    def student_logits(self, images, head=None):
        lo, hi = head or (0, len(self.all_classnames))
        feature = self.student.projector(self.image_features(images).float())
        return clip_logits(feature, self.teacher_text[lo:hi], self.clip.logit_scale.exp().float())

    def teacher_logits(self, images):
        return self.teacher.logits(self.teacher.encode_image(images), self.teacher_text)

    def model_inference(self, images):
        return self.student_logits(images, self.head)

    def forward_backward(self, batch):
        c = self.method_cfg
        images = batch["img"].to(self.device, non_blocking=True)
        with self.autocast():
            student = self.student_logits(images)
            with torch.no_grad():
                teacher = self.teacher_logits(images)
        terms = {"kd": c.KD_WEIGHT * promptkd_loss(student.float(), teacher.float(), c.TEMPERATURE)}
        if c.CE_WEIGHT:
            terms["ce"] = c.CE_WEIGHT * F.cross_entropy(student.float(), batch["label"].to(self.device))
        loss = sum(terms.values())
        self.optimize(loss)
        agree = 100.0 * (student.argmax(1) == teacher.argmax(1)).float().mean().item()
        return {"loss": loss.item(), **{k: v.item() for k, v in terms.items()}, "agree": agree}
