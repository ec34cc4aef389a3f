"""CoOp (Zhou et al., IJCV 2022): learnable context tokens in front of (or around) the
class name, shared by all classes or one set per class (CSC); cross-entropy."""
from caspl import TRAINER_REGISTRY, CasplError
from caspl.clip.learners import DeepPrompt, init_phrase, text_width, word_context
from caspl.engine import PromptTrainer

TEMPLATES = {  # where the class name sits relative to the context
    "end": "{ctx} {}.",
    "middle": "{ctx_front} {} {ctx_back}.",
    "front": "{} {ctx}.",
}


@TRAINER_REGISTRY.register()
class CoOp(PromptTrainer):
    CONFIG_NAME = "COOP"
    # CSC_WITH_CTX_INIT True: with CSC and CTX_INIT, each class learns its own copy of the
    # phrase's context (the reference ignores CSC when CTX_INIT is set: one shared context)
    CONFIG_DEFAULTS = {"N_CTX": 16, "CSC": False, "CTX_INIT": "", "PREC": "fp16", "CLASS_TOKEN_POSITION": "end",
                       "CSC_WITH_CTX_INIT": False}

    def check_cfg(self, cfg):
        c = cfg.TRAINER.COOP
        if c.CLASS_TOKEN_POSITION not in TEMPLATES:
            raise CasplError(f"TRAINER.COOP.CLASS_TOKEN_POSITION must be one of {', '.join(TEMPLATES)}, "
                             f"not {c.CLASS_TOKEN_POSITION!r}")
        if not init_phrase(c.CTX_INIT) and c.N_CTX < 1:
            raise CasplError(f"TRAINER.COOP.N_CTX must be at least 1, not {c.N_CTX}")

    def build_model(self):
        c = self.method_cfg
        self.clip = self.load_clip()
        init, words = word_context(self.clip, c.CTX_INIT) if init_phrase(c.CTX_INIT) else (None, "")
        per_class = c.CSC and (init is None or c.CSC_WITH_CTX_INIT)
        if c.CSC and not per_class:
            print("Note: CSC is ignored with CTX_INIT, as in the reference (one shared context from the phrase; "
                  "TRAINER.COOP.CSC_WITH_CTX_INIT True learns one copy per class)")
        self.prompt_learner = DeepPrompt(c.N_CTX, text_width(self.clip), init=init,
                                         n_classes=self.num_classes if per_class else 0)
        n = self.prompt_learner.length
        self.half = n // 2
        lengths = {"end": {"ctx": n}, "front": {"ctx": n},
                   "middle": {"ctx_front": self.half, "ctx_back": n - self.half}}[c.CLASS_TOKEN_POSITION]
        template = TEMPLATES[c.CLASS_TOKEN_POSITION]
        if c.CLASS_TOKEN_POSITION == "middle" and self.half == 0:
            template, lengths = "{} {ctx_back}.", {"ctx_back": n}
        if words:
            if c.CLASS_TOKEN_POSITION != "end":
                raise CasplError(f"TRAINER.COOP.CTX_INIT {c.CTX_INIT!r} has words of several tokens; the tokens past "
                                 "one per word stay as fixed words, which only CLASS_TOKEN_POSITION end supports")
            template = template.replace("{ctx}", "{ctx} " + words)
        print(f"Prompt: {template!r} with {n} context tokens{' per class' if per_class else ''}")
        self.build_encoders(template, lengths)
        self.register_model("prompt_learner", self.prompt_learner)
        if per_class:
            self.per_class_models.add("prompt_learner")

    def text_groups(self, image_features=None):
        p = self.prompt_learner
        if "ctx" in self.text_encoder.group_lengths:
            return {"ctx": p.group()}
        groups = {"ctx_back": p.group(self.half)}
        if self.half:
            groups["ctx_front"] = p.group(0, self.half)
        return groups

