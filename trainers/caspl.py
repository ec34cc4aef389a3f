"""CasPL (Wu et al., ECCV 2024): Cascade Prompt Learning.

Phase 1, `CasPL_Boost`: boosting prompts in both encoders of a student CLIP learn, without
labels, to match a larger frozen teacher CLIP's logits over the domain's class names
(KL(teacher || student) on temperature-softened logits, times T^2) on the domain's images.

Phase 2, `CasPL_<X>` for every registered trainer X: the frozen boosting prompts are
cascaded with X's own prompts (text: [SOS] X's tokens, boosting tokens, class name; image:
[CLS] patches, boosting tokens, X's tokens), and X trains with its own losses unchanged.
Made by a factory on first lookup, so a trainer registered later gets its CasPL variant too."""
import copy
import functools
import hashlib
import os

import torch
import torch.nn.functional as F

from caspl import TRAINER_REGISTRY, CasplError
from caspl.clip import class_prompts
from caspl.clip import loader as clip_loader
from caspl.clip.checksum import architecture, backbone_sha256
from caspl.clip.learners import DeepPrompt, init_phrase, phrase_context, token_count
from caspl.clip.teachers import frozen_teacher
from caspl.config import check_as_recorded, updated
from caspl.data.views import FeatureCache, FixedViews
from caspl.engine import PromptTrainer, checkpoint_file, read_checkpoint
from caspl.engine.checkpoints import config_leaves
from caspl.utils.fetch import fetch, is_url

from .caspl_artifacts import is_artifact, phase1_checkpoint, read_artifact
from .caspl_authors import (AUTHORS_MODEL, AUTHORS_TEXT_CTX, AuthorsKeys, authors_boost, register_authors_phase1,
                            show_used_kd)
from .ivlp import VLPrompts, check_prompt_depth

BOOST_MODEL = "BoostPrompts"
CASPL_DEFAULTS = {
    "PREC": "fp16",
    # phase 1
    "TEACHER": "ViT-L/14",  # a CLIP name or file, or open_clip:<architecture>/<pretrained tag or file>
    "TEACHER_TEMPLATE": "",  # "" = the dataset's hand-written template
    "N_CTX_TEXT": 8,
    "N_CTX_VISION": 8,
    # a phrase initialises the text boosting tokens when N_CTX_TEXT <= 4, as the authors' IVLP
    # prompts do ("" or more tokens: N(0, 0.02)); it must not be longer than the tokens it fills
    "CTX_INIT": "",
    "PROMPT_DEPTH_TEXT": 12,
    "PROMPT_DEPTH_VISION": 12,
    "TEMPERATURE": 1.0,
    "FEWSHOT_DATA": False,  # True: learn on the run's few-shot / base-new subset instead of the whole train split
    "TEACHER_CACHE": False,  # cache the teacher's image features for CACHE_VIEWS fixed views per image
    "CACHE_VIEWS": 4,
    # phase 2
    "BOOST_CKPT": "",  # a phase-1 checkpoint file, or a phase-1 output directory (its final checkpoint)
    "ANCHOR": "vanilla",  # what PromptSRC's regularisers anchor to: "vanilla" CLIP (authors' code) or "boosted"
    "BOOST_LEARNABLE": False,  # ablation: train the boosting prompts on with X's prompts (the paper freezes them)
}
# How phase 1 made the boosting prompts: given to phase 2 (a script may pass its keys to both
# phases), each is checked against what the boosting prompts record
PHASE1_KEYS = ("PREC", "TEACHER", "TEACHER_TEMPLATE", "N_CTX_TEXT", "N_CTX_VISION", "CTX_INIT", "PROMPT_DEPTH_TEXT",
               "PROMPT_DEPTH_VISION", "TEMPERATURE", "FEWSHOT_DATA", "TEACHER_CACHE", "CACHE_VIEWS")
# ... of which the boosting prompts' own metadata records these (also where no config was kept)
PHASE1_META = {"TEACHER": "teacher", "N_CTX_TEXT": "n_ctx_text", "N_CTX_VISION": "n_ctx_vision",
               "PROMPT_DEPTH_TEXT": "depth_text", "PROMPT_DEPTH_VISION": "depth_vision"}


def distillation_loss(student_logits, teacher_logits, temperature):
    """Batch-mean KL(teacher || student) on softmax(logits / T), times T^2."""
    t = temperature
    kl = F.kl_div(F.log_softmax(student_logits / t, 1), F.log_softmax(teacher_logits / t, 1),
                  reduction="sum", log_target=True)
    return kl / student_logits.shape[0] * t * t


def boost_prompts(arch, c, text_init=None):
    return VLPrompts(DeepPrompt(c["n_ctx_text"], arch["text_width"], c["depth_text"], init=text_init),
                     DeepPrompt(c["n_ctx_vision"], arch["vision_width"], c["depth_vision"]))


def boost_text_init(clip_model, phrase, n_ctx):
    """The authors' rule: a phrase initialises n_ctx <= 4 text tokens with its first tokens."""
    phrase = init_phrase(phrase)
    if not phrase or n_ctx > 4:
        return None
    count = token_count(clip_model, phrase)
    if count != n_ctx:
        raise CasplError(f"TRAINER.CASPL.CTX_INIT {phrase!r} has {count} tokens for {n_ctx} boosting "
                         "tokens; boosting prompts carry no fixed words, so give exactly that many (or \"\")")
    return phrase_context(clip_model, phrase, n_ctx)[0]


@TRAINER_REGISTRY.register()
class CasPL_Boost(AuthorsKeys, PromptTrainer):  # noqa: N801 (registry name)
    CONFIG_NAME = "CASPL"
    CONFIG_DEFAULTS = CASPL_DEFAULTS
    PHASE = 1

    def data_cfg(self, cfg):
        if cfg.TRAINER.CASPL.FEWSHOT_DATA:
            return cfg
        print("CasPL_Boost learns on the whole train split of all classes, without labels "
              "(DATASET.NUM_SHOTS and SUBSAMPLE_CLASSES ignored; TRAINER.CASPL.FEWSHOT_DATA True keeps them)")
        return updated(cfg, {"DATASET.NUM_SHOTS": -1, "DATASET.SUBSAMPLE_CLASSES": "all"})

    def check_cfg(self, cfg):
        c = cfg.TRAINER.CASPL
        if min(c.N_CTX_TEXT, c.N_CTX_VISION, c.PROMPT_DEPTH_TEXT, c.PROMPT_DEPTH_VISION) < 1:
            raise CasplError("TRAINER.CASPL.N_CTX_* and PROMPT_DEPTH_* must be at least 1")
        if c.TEMPERATURE <= 0:
            raise CasplError("TRAINER.CASPL.TEMPERATURE must be positive")
        if c.TEACHER_CACHE and c.CACHE_VIEWS < 1:  # CACHE_VIEWS is read only with the cache
            raise CasplError("TRAINER.CASPL.CACHE_VIEWS must be at least 1")

    def build_model(self):
        c = self.method_cfg
        self.clip = self.load_clip(vit_for="CasPL's boosting prompts")
        check_prompt_depth(self.clip, "TRAINER.CASPL.PROMPT_DEPTH_TEXT", c.PROMPT_DEPTH_TEXT, "text")
        check_prompt_depth(self.clip, "TRAINER.CASPL.PROMPT_DEPTH_VISION", c.PROMPT_DEPTH_VISION, "image")
        self.shape = {"n_ctx_text": c.N_CTX_TEXT, "n_ctx_vision": c.N_CTX_VISION,
                      "depth_text": c.PROMPT_DEPTH_TEXT, "depth_vision": c.PROMPT_DEPTH_VISION}
        self.boost = boost_prompts(architecture(self.clip), self.shape,
                                   boost_text_init(self.clip, c.CTX_INIT, c.N_CTX_TEXT))
        self.build_encoders("{boost} {}.", {"boost": c.N_CTX_TEXT})
        self.register_model(BOOST_MODEL, self.boost)

        # an OpenAI CLIP exactly as the authors' (the student's input and logit scale), or an
        # open_clip model with its own tokenizer, preprocessing, logit scale and bias
        self.teacher_clip = frozen_teacher(c.TEACHER, self, scale_from=self.clip)
        self.teacher = self.teacher_clip.model
        template = c.TEACHER_TEMPLATE or self.dm.dataset.template
        with torch.no_grad():  # once per run
            self.teacher_text = self.teacher_clip.encode_text(class_prompts(template, self.classnames))
        print(f"{self.teacher_clip.describe()}, with the template {template!r}; "
              f"student {self.cfg.MODEL.BACKBONE.NAME}")

        items = self.dm.dataset.train_x + self.dm.dataset.train_u
        self.cache = None
        if c.TEACHER_CACHE:
            views = FixedViews(items, self.dm.tfm_train, c.CACHE_VIEWS, max(self.cfg.SEED, 0),
                               self.cfg.DATASET.SKIP_BAD_IMAGES)
            self.dm.train_loader_x = self.dm.make_train_loader(items, dataset=views)
            key = {**self.teacher_clip.cache_key(),
                   "images": [os.path.relpath(d.impath, self.dm.dataset.root) for d in items],
                   "transform": repr(self.dm.tfm_train), "views": c.CACHE_VIEWS, "seed": views.seed,
                   "precision": self.precision}
            self.cache = FeatureCache(os.path.join(self.output_dir, "teacher_cache.pt"), key, len(items),
                                      c.CACHE_VIEWS, self.teacher_text.shape[1])
        else:
            self.dm.train_loader_x = self.dm.make_train_loader(items)

    def text_groups(self, image_features=None):
        return {"boost": self.boost.text.group()}

    def image_groups(self):
        return {"vboost": self.boost.vision.group()}

    def before_epoch(self):
        if self.cache is not None:
            self.dm.train_loader_x.dataset.epoch = self.epoch

    def after_epoch(self):
        if self.cache is not None:
            self.cache.synchronize(self.device)
            self.cache.save()

    def teacher_image_features(self, images):
        return self.teacher_clip.encode_image(images)

    def teacher_logits(self, batch, images):
        if self.cache is None:
            features = self.teacher_image_features(images)
        else:
            features = self.cache.lookup(batch["index"], batch["view"],
                                         lambda: self.teacher_image_features(images)).to(self.device)
        return self.teacher_clip.logits(features, self.teacher_text)

    def forward_backward(self, batch):
        images = batch["img"].to(self.device, non_blocking=True)
        with self.autocast():
            student = self.model_inference(images)
            with torch.no_grad():
                teacher = self.teacher_logits(batch, images)
        loss = distillation_loss(student.float(), teacher.float(), self.method_cfg.TEMPERATURE)
        self.optimize(loss)
        return {"loss": loss.item(), "agree": 100.0 * (student.argmax(1) == teacher.argmax(1)).float().mean().item()}

    def checkpoint_meta(self):
        c = self.method_cfg
        if getattr(self, "student_sha256", None) is None:  # once per run (for the artifacts of tools/export_boost.py)
            self.student_sha256 = backbone_sha256(self.cfg.MODEL.BACKBONE.NAME)
        return {**super().checkpoint_meta(), "max_epoch": self.max_epoch, "student_sha256": self.student_sha256,
                "boost": {"student": self.cfg.MODEL.BACKBONE.NAME, "teacher": c.TEACHER, **self.shape,
                          **architecture(self.clip)}}


register_authors_phase1(CasPL_Boost)


# ---------------------------------------------------------------------------- phase 2

def read_boost(path):
    """(boost state dict, boost metadata, its source) from a phase-1 checkpoint, a phase-1
    output directory (its final checkpoint), a shared file of `python tools/export_boost.py`,
    an http(s):// or file:// URL of one pinned by its sha256
    (`<url>#sha256=<64 hex>`, fetched once into the cache), or a phase-2 checkpoint that
    recorded them."""
    if not path:
        raise CasplError("TRAINER.CASPL.BOOST_CKPT is empty: name the phase-1 (CasPL_Boost) output directory, "
                         "checkpoint file or shared boosting prompts")
    source = None
    if is_url(path):
        source, path = path, fetch(path, "TRAINER.CASPL.BOOST_CKPT")
    if os.path.isdir(path):
        path, ckpt = phase1_checkpoint(path, (BOOST_MODEL, AUTHORS_MODEL))
    elif os.path.isfile(path):
        ckpt = read_checkpoint(path)
    else:
        raise CasplError(f"boosting checkpoint not found: {path}")
    source = source or os.path.abspath(path)
    if is_artifact(ckpt):
        state, meta = read_artifact(ckpt, source)
        return state, {**meta, "phase1": phase1_settings(ckpt.get("config"))}, source
    recorded = (ckpt.get("extra_state") or {}).get("caspl_boost")
    if recorded is not None:
        return recorded["state_dict"], recorded["meta"], recorded["source"]
    if AUTHORS_TEXT_CTX in ckpt.get("state_dict", {}):
        return (*authors_boost(ckpt["state_dict"], path), source)
    meta = ckpt.get("meta", {})
    if "boost" not in meta:
        raise CasplError(f"{path} is not a CasPL_Boost checkpoint (written by {meta.get('trainer', 'unknown')})")
    recorded_sha = {"student_sha256": meta["student_sha256"]} if meta.get("student_sha256") else {}
    return ckpt["state_dict"], {**meta["boost"], **recorded_sha, "phase1": phase1_settings(meta.get("config"))}, source


def phase1_settings(config_yaml):
    """The PHASE1_KEYS phase 1 ran with, from its recorded config ({} where none was kept)."""
    recorded = config_leaves(config_yaml) if config_yaml else {}
    return {k: recorded[f"TRAINER.CASPL.{k}"] for k in PHASE1_KEYS if f"TRAINER.CASPL.{k}" in recorded}


def phase1_values(meta):
    """{PHASE1_KEYS key: the value phase 1 used} for what the boosting prompts record."""
    return {**{k: meta[m] for k, m in PHASE1_META.items() if meta.get(m) is not None}, **(meta.get("phase1") or {})}


def fingerprint(state):
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].float().numpy().tobytes())
    return h.hexdigest()[:16]


class CasPLMixin(AuthorsKeys):
    """Phase 2 on any PromptTrainer: adds the frozen boosting groups to the method's groups."""

    def resolve_cfg(self, cfg):
        """Reads the boosting prompts; a phase-1 key the user gave must be what they were made with
        (refused otherwise, logged when it is), and the config shows what they were made with."""
        cfg = super().resolve_cfg(cfg)
        self.boost_read = state, meta, source = read_boost(cfg.TRAINER.CASPL.BOOST_CKPT)
        recorded = phase1_values(meta)
        checked = check_as_recorded(cfg, {f"TRAINER.CASPL.{k}": recorded.get(k) for k in PHASE1_KEYS},
                                    f"the boosting prompts in {source}",
                                    "phase 2 cascades what phase 1 trained (docs/departures.md)")
        if checked:
            print(f"CasPL: {', '.join(checked)} given to phase 2: as the boosting prompts in {source} were made")
        cfg = updated(cfg, {f"TRAINER.CASPL.{k}": v for k, v in recorded.items()})
        cfg.defrost()
        show_used_kd(cfg, 2)
        cfg.freeze()
        return cfg

    @classmethod
    def train_cfg(cls, cfg, model_dirs, epoch):
        """The authors' phase 2 names the phase-1 run with --model-dir (and --load-epoch)."""
        if len(model_dirs) > 1:
            raise CasplError("phase 2 takes one --model-dir: the phase-1 run")
        directory = model_dirs[0]
        path = directory
        if epoch:  # caspl's phase-1 folder, or the authors' own
            path = next((p for p in (os.path.join(directory, m, f"model.pth.tar-{epoch}")
                                     for m in (BOOST_MODEL, AUTHORS_MODEL)) if os.path.isfile(p)),
                        os.path.join(directory, BOOST_MODEL, f"model.pth.tar-{epoch}"))
        own = cfg.TRAINER.CASPL.BOOST_CKPT
        if own and os.path.abspath(own) not in (os.path.abspath(path), os.path.abspath(directory)):
            raise CasplError(f"--model-dir {directory} and TRAINER.CASPL.BOOST_CKPT {own} name different boosting "
                             "prompts; give one")
        cfg = updated(cfg, {"TRAINER.CASPL.BOOST_CKPT": path})
        print(f"CasPL: boosting prompts from --model-dir {directory}" + (f" --load-epoch {epoch}" if epoch else "")
              + f" ({path}; caspl's own key is TRAINER.CASPL.BOOST_CKPT)")
        return cfg

    @classmethod
    def eval_cfg(cls, cfg, model_dir, epoch):
        """Evaluation needs no BOOST_CKPT (the checkpoint recorded the phase-1 prompts) and no
        BOOST_LEARNABLE (a model that trained them holds a BoostPrompts folder)."""
        if not os.path.isdir(model_dir):
            return cfg
        modules = [n for n in sorted(os.listdir(model_dir)) if os.path.isfile(os.path.join(model_dir, n, "checkpoint"))]
        values = {}
        if BOOST_MODEL in modules:
            values["TRAINER.CASPL.BOOST_LEARNABLE"] = True
        if not cfg.TRAINER.CASPL.BOOST_CKPT and modules:  # any module's checkpoint records them
            values["TRAINER.CASPL.BOOST_CKPT"] = checkpoint_file(model_dir, modules[0], epoch)
        return updated(cfg, values)

    def build_encoders(self, template="{}", text_lengths=None):
        state, meta, self.boost_source = self.boost_read
        own = architecture(self.clip)
        theirs = {k: meta.get(k) for k in own}
        if theirs != own:
            raise CasplError(f"the boosting prompts in {self.boost_source} were made for student "
                             f"{meta.get('student')} ({theirs}); this run's backbone "
                             f"{self.cfg.MODEL.BACKBONE.NAME} has {own}")
        self.check_student_weights(meta)
        for key, layers in (("depth_text", own["text_layers"]), ("depth_vision", own["vision_layers"])):
            if meta[key] > layers:
                raise CasplError(f"the boosting prompts in {self.boost_source} have {key} {meta[key]}, "
                                 f"more than the student's {layers} layers")
        self.boost_meta, self.boost_state = meta, state
        with torch.random.fork_rng(devices=[]):  # loaded values: leave X's random initialisation as it would be
            self.boost = boost_prompts(own, meta)
        self.boost.load_state_dict(state)
        self.boost.requires_grad_(False)
        self.boost.to(self.device)
        self.boost_fingerprint = fingerprint(state)
        self.phase1_boost = self.boost  # "the frozen model" of ANCHOR boosted
        learnable = self.cfg.TRAINER.CASPL.BOOST_LEARNABLE
        if learnable:
            self.phase1_boost = copy.deepcopy(self.boost)
            self.boost.requires_grad_(True)
            self.register_model(BOOST_MODEL, self.boost)
        print(f"CasPL: {'learnable' if learnable else 'frozen'} boosting prompts from {self.boost_source} "
              f"(teacher {meta.get('teacher') or 'not recorded'}; {meta['n_ctx_text']}+{meta['n_ctx_vision']} tokens, "
              f"depth {meta['depth_text']}/{meta['depth_vision']})")
        # boosting tokens right before the class name, after the method's own tokens
        super().build_encoders(template.replace("{}", "{boost} {}", 1),
                               {**(text_lengths or {}), "boost": meta["n_ctx_text"]})

    def check_student_weights(self, meta):
        """Widths and layer counts do not tell every student apart (ViT-B/16 and ViT-B/32 share them):
        the weights' checksum where phase 1 recorded it, else the names of two OpenAI models."""
        name, theirs = self.cfg.MODEL.BACKBONE.NAME, meta.get("student_sha256")
        ours = backbone_sha256(name) if theirs else None
        openai_names = clip_loader.openai_clip.available_models()
        if ours != theirs or (not theirs and meta.get("student") in openai_names and name in openai_names
                              and meta["student"] != name):
            raise CasplError(f"the boosting prompts in {self.boost_source} were made for student {meta.get('student')}"
                             + (f" (weights sha256 {theirs[:16]}...)" if theirs else "") + f"; this run's backbone "
                             f"{name} is another" + (f" (weights sha256 {ours[:16]}...)" if ours else ""))

    def text_groups(self, image_features=None):
        return {**super().text_groups(image_features), "boost": self.boost.text.group()}

    def image_groups(self):
        return {"vboost": self.boost.vision.group(), **super().image_groups()}

    def boosted_anchor(self):
        return self.cfg.TRAINER.CASPL.ANCHOR == "boosted"

    def frozen_text_encoder(self, templates, clip_model):
        if not self.boosted_anchor():
            return super().frozen_text_encoder(templates, clip_model)
        prompts = [p for template in templates
                   for p in class_prompts(template.replace("{}", "{boost} {}", 1), self.classnames)]
        encoder = self.make_text_encoder(prompts, {"boost": self.boost_meta["n_ctx_text"]}, clip_model)
        return functools.partial(encoder, {"boost": self.phase1_boost.text.group()})

    def frozen_image_features(self, images):
        if not self.boosted_anchor():
            return super().frozen_image_features(images)
        return self.image_encoder(images, {"vboost": self.phase1_boost.vision.group()})

    def check_cfg(self, cfg):
        if cfg.TRAINER.CASPL.ANCHOR not in ("vanilla", "boosted"):
            raise CasplError(f"TRAINER.CASPL.ANCHOR must be vanilla or boosted, not {cfg.TRAINER.CASPL.ANCHOR!r}")
        super().check_cfg(cfg)

    def checkpoint_meta(self):
        return {**super().checkpoint_meta(), "boost_ckpt": self.boost_source,
                "boost_fingerprint": self.boost_fingerprint}

    def extra_state(self):
        return {**super().extra_state(), "caspl_boost": {  # phase 1's prompts (trained ones: BoostPrompts/)
            "state_dict": {k: v.detach().cpu() for k, v in self.boost_state.items()},
            "meta": self.boost_meta, "source": self.boost_source}}

    def load_extra_state(self, state):
        recorded = state.get("caspl_boost")
        if recorded is not None and fingerprint(recorded["state_dict"]) != self.boost_fingerprint:
            raise CasplError(f"this checkpoint was trained with the boosting prompts of {recorded['source']}, "
                             f"not those of {self.boost_source}")
        super().load_extra_state(state)


def cascade(trainer_cls):
    """CasPL_<X>: X with frozen boosting prompts cascaded in front of its own."""
    if not issubclass(trainer_cls, PromptTrainer) or issubclass(trainer_cls, (CasPLMixin, CasPL_Boost)):
        raise CasplError(f"CasPL wraps prompt-learning trainers; {trainer_cls.__name__} is not one")
    if not getattr(trainer_cls, "CASCADABLE", True):
        raise CasplError(f"CasPL cascades boosting prompts with a method's own; {trainer_cls.__name__} "
                         f"{trainer_cls.CASCADABLE_NOT}")
    return type(f"CasPL_{trainer_cls.__name__}", (CasPLMixin, trainer_cls),
                {"__doc__": f"{trainer_cls.__name__} cascaded with frozen CasPL boosting prompts."})


TRAINER_REGISTRY.add_factory("CasPL_", cascade)
