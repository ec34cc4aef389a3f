"""CoOp (Zhou et al., IJCV 2022): learnable context tokens in front of (or around) the
class name, shared by all classes or one set per class (CSC); cross-entropy."""
from caspl import TRAINER_REGISTRY, CasplError
from caspl.clip.learners import DeepPrompt, phrase_context, text_width
from caspl.engine import PromptTrainer

TEMPLATES = {  # where the class name sits relative to the context
    "end": "{ctx} {}.",
    "middle": "{ctx_front} {} {ctx_back}.",
    "front": "{} {ctx}.",
}


@TRAINER_REGISTRY.register()
class CoOp(PromptTrainer):
    CONFIG_NAME = "COOP"
    CONFIG_DEFAULTS = {"N_CTX": 16, "CSC": False, "CTX_INIT": "", "PREC": "fp16", "CLASS_TOKEN_POSITION": "end"}

    def check_cfg(self, cfg):
        c = cfg.TRAINER.COOP
        if c.CLASS_TOKEN_POSITION not in TEMPLATES:
            raise CasplError(f"TRAINER.COOP.CLASS_TOKEN_POSITION must be one of {', '.join(TEMPLATES)}, "
                             f"not {c.CLASS_TOKEN_POSITION!r}")
        if not c.CTX_INIT and c.N_CTX < 1:
            raise CasplError(f"TRAINER.COOP.N_CTX must be at least 1, not {c.N_CTX}")

    def build_model(self):
        c = self.method_cfg
        self.clip = self.load_clip()
        init = phrase_context(self.clip, c.CTX_INIT.strip())[0] if c.CTX_INIT.strip() else None
        self.prompt_learner = DeepPrompt(c.N_CTX, text_width(self.clip), init=init,
                                         n_classes=self.num_classes if c.CSC else 0)
        n = self.prompt_learner.length
        self.half = n // 2
        lengths = {"end": {"ctx": n}, "front": {"ctx": n},
                   "middle": {"ctx_front": self.half, "ctx_back": n - self.half}}[c.CLASS_TOKEN_POSITION]
        template = TEMPLATES[c.CLASS_TOKEN_POSITION]
        if c.CLASS_TOKEN_POSITION == "middle" and self.half == 0:
            template, lengths = "{} {ctx_back}.", {"ctx_back": n}
        print(f"Prompt: {template!r} with {n} context tokens{' per class' if c.CSC else ''}")
        self.build_encoders(template, lengths)
        self.register_model("prompt_learner", self.prompt_learner)
        if c.CSC:
            self.per_class_models.add("prompt_learner")

    def text_groups(self, image_features=None):
        p = self.prompt_learner
        if "ctx" in self.text_encoder.group_lengths:
            return {"ctx": p.group()}
        groups = {"ctx_back": p.group(self.half)}
        if self.half:
            groups["ctx_front"] = p.group(0, self.half)
        return groups

