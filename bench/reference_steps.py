"""The reference repositories' training steps, for bench/class_count.py's honest baseline.

Each class below does per step exactly what the reference trainer's `forward_backward` does
(its CustomCLIP forward, loss, zero_grad / backward / SGD step, `loss.item()`), no more and
no less, on an unmodified OpenAI `clip.model.CLIP`: the patched CLIPs' prompt splicing
(MaPLe / IVLP / CasPL branches of `ResidualAttentionBlock*` and `VisionTransformer*` in each
repo's clip/model.py) is reproduced around the stock residual blocks. Written from the
facts of the reference code, not copied from it. What every class shares with its reference:

- the full 77-token text pass for every class every step (`TextEncoder.forward`: prompts +
  positional embedding, all blocks, ln_final, row `tokenized.argmax(-1)` @ text_projection),
  with the tokenised prompts kept on the CPU as the references keep them;
- the input text context as a parameter in CLIP's dtype (fp16 for fp16 weights) and the
  deep / visual tokens as fp32 parameters cast to CLIP's dtype where they enter (the
  references hard-code `.half()`, the same cast in the fp16 runs they support);
- the frozen parts a reference's CustomCLIP holds: CLIP's encoders, not its token embedding
  (the references embed their prompts once, on the CPU; drop other references to
  `clip_model` after build() to free it), plus a second frozen image encoder where the
  reference keeps one;
- Dassl's SGD (momentum 0.9, weight decay 5e-4) over the registered module's parameters,
  frozen ones included (they never get a gradient).

Per method (once = at build(); step = every step):
- CoOp: KaiyangZhou/CoOp trainers/coop.py. Once: class prompts "<ctx words> <name>." embedded.
  Step: image features of the frozen visual, [SOS][ctx][name . EOS] through the text
  encoder, logits, CE, Dassl's finite-loss check, backward, step, loss and accuracy `.item()`.
- MaPLe: multimodal-prompt-learning trainers/maple.py + clip/model.py (MaPLe branches).
  Step: every coupling Linear maps its layer's text tokens to vision tokens; text and image
  passes with the compound tokens replacing their positions at blocks 1..depth-1; CE.
- PromptSRC: PromptSRC trainers/promptsrc.py + clip/model.py (IVLP branches). Once: the text
  anchor (a fp32 copy of CLIP, 60 templates, unnormalised mean) and a second frozen image
  encoder. Step: prompted text and image passes, the anchor normalised, the frozen image
  encoder under no_grad, CE + 25 L1 text + 10 L1 image + KL(sum / numel).
- CasPL_PromptSRC: megvii-research/CasPL trainers/caspl_promptsrc.py + clip/model.py (IVLP
  block, second stage): PromptSRC with the frozen boosting tokens, text
  [SOS][adapting][boosting][name], image [CLS][patches][boosting][adapting] at every layer;
  anchors are vanilla CLIP.
- CasPL_Boost: CasPL trainers/caspl.py (trainer "CasPL") + clip/model.py (first stage). Once:
  the teacher's text features (a fp32 copy of the teacher, one template). Step: student text
  and image passes with the boosting tokens, the teacher's image encoder under no_grad,
  KL(teacher || student) summed x T^2 / batch. The reference keeps only the teacher's image
  encoder; drop other references to `teacher` after build() to free its text encoder.
Not per step, so not here: the LR schedule and PromptSRC's GPA (after each epoch's last step).

Where this cannot or need not follow the letter of the code (identical in the fp16 runs the
references support): casts go to CLIP's dtype instead of `.half()`; widths come from the
model, not MaPLe's hard-coded 512 / 768; the second image encoders keep the given models'
dtype (fp16 there: pass fp16 models for fp16); each prompt group keeps its own depth (the
reference splices the boosting tokens in the adapting tokens' blocks: equal depths in the
released configs); CasPL's 2-adapting-token special case is refused; the unused frozen
VPT / VPT_shallow tensors of CasPL's first stage are not allocated.
"""
import copy
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from caspl.clip.templates import IMAGENET_TEMPLATES

with warnings.catch_warnings():  # openai-clip imports pkg_resources, which warns on import
    warnings.simplefilter("ignore")
    import clip

# PromptSRC's trainers/imagenet_templates.py: the first 60 of OpenAI's 80, "a photo of a {}." first
PROMPTSRC_TEMPLATES = ["a photo of a {}."] + [t for t in IMAGENET_TEMPLATES[:60] if t != "a photo of a {}."]


def normalize(x):
    return x / x.norm(dim=-1, keepdim=True)


def text_context(clip_model, n_ctx, phrase):
    """A prompt learner's init: (input ctx in CLIP's dtype, the words the prompts start with).
    With a phrase, its first n_ctx token embeddings (its other words stay in the prompt);
    without, N(0, 0.02) under "X" placeholders. IVLP / MaPLe / PromptSRC / CasPL take their
    CTX_INIT only when n_ctx <= 4."""
    device, dtype = clip_model.positional_embedding.device, clip_model.dtype
    if phrase:
        with torch.no_grad():
            embedding = clip_model.token_embedding(clip.tokenize(phrase).to(device)).type(dtype)
        return embedding[0, 1:1 + n_ctx].clone(), phrase
    return torch.empty(n_ctx, clip_model.ln_final.weight.shape[0], dtype=dtype, device=device).normal_(std=0.02), \
        " ".join(["X"] * n_ctx)


def deep_tokens(n, width, depth, device):
    """The patched blocks' per-layer tokens (VPT_shallow*) of blocks 1..depth-1: fp32, N(0, 0.02)."""
    return [nn.Parameter(torch.empty(n, width, device=device).normal_(std=0.02)) for _ in range(depth - 1)]


def splice(x, groups, layer, start):
    """x [L, N, d] with each group's tokens for `layer` over its positions, the groups laid
    out one after another from `start` on; a group past its depth keeps its hidden states.
    Mirrors the patched blocks' cat([prefix, tokens..., suffix]); a group is the list of its
    per-layer tensors [n, d], layer 0 being the input tokens."""
    if all(layer >= len(g) for g in groups):
        return x
    parts, pos = [x[:start]], start
    for g in groups:
        n = g[0].shape[0]
        parts.append(g[layer].expand(x.shape[1], -1, -1).permute(1, 0, 2).type(x.dtype) if layer < len(g)
                     else x[pos:pos + n])
        pos += n
    return torch.cat(parts + [x[pos:]])


def copy_layers(layers, prompt):
    """caspl's DeepPrompt (ctx [n, d], deep_ctx [depth-1, n, d]) into per-layer tensors."""
    theirs = prompt.layers()
    if len(theirs) != len(layers):
        raise ValueError(f"caspl has {len(theirs)} layers of tokens, the reference {len(layers)}")
    for mine, t in zip(layers, theirs):
        mine.copy_(t)


class ClassPrompts:
    """A prompt learner's fixed part (token_prefix / token_suffix buffers, construct_prompts):
    "<words> <name>." per class, tokenised (kept on the CPU, as the references keep
    `tokenized_prompts`) and embedded once; the first n_ctx positions after SOS are learned."""

    def __init__(self, clip_model, words, classnames, n_ctx):
        device = clip_model.positional_embedding.device
        self.tokenized = torch.cat([clip.tokenize(f"{words} {name.replace('_', ' ')}.") for name in classnames])
        with torch.no_grad():
            embedding = clip_model.token_embedding(self.tokenized.to(device)).type(clip_model.dtype)
        self.prefix, self.suffix = embedding[:, :1].clone(), embedding[:, 1 + n_ctx:].clone()  # two buffers

    def __call__(self, contexts):
        n_cls = self.prefix.shape[0]
        return torch.cat([self.prefix] + [c.unsqueeze(0).expand(n_cls, -1, -1) for c in contexts] + [self.suffix], 1)


class VLPrompts:
    """IVLP-style tokens of the patched CLIPs: text (ctx in CLIP's dtype, then deep fp32 tokens)
    and vision (VPT / VPT_FIRST fp32, then deep fp32 tokens), as per-layer lists."""

    def __init__(self, clip_model, n_text, n_vision, depth_text, depth_vision, ctx_init, learnable=True):
        device = clip_model.positional_embedding.device
        ctx, self.words = text_context(clip_model, n_text, ctx_init if n_text <= 4 else "")
        self.text = [nn.Parameter(ctx)] + deep_tokens(n_text, clip_model.ln_final.weight.shape[0], depth_text, device)
        width = clip_model.visual.conv1.weight.shape[0]
        self.vision = [nn.Parameter(torch.empty(n_vision, width, device=device).normal_(std=0.02))] + \
            deep_tokens(n_vision, width, depth_vision, device)
        for p in self.text + self.vision:
            p.requires_grad_(learnable)

    def load(self, theirs):
        copy_layers(self.text, theirs.text)
        copy_layers(self.vision, theirs.vision)


class Reference:
    """What a reference CustomCLIP holds of CLIP (its TextEncoder's parts, the image encoder,
    logit_scale: not the token embedding), its two encoders, and the Dassl SGD step."""

    def __init__(self, clip_model):
        self.visual, self.transformer, self.ln_final = clip_model.visual, clip_model.transformer, clip_model.ln_final
        self.positional_embedding, self.text_projection = clip_model.positional_embedding, clip_model.text_projection
        self.logit_scale, self.dtype = clip_model.logit_scale, clip_model.dtype
        self.device = self.positional_embedding.device

    def held(self):
        return [*self.visual.parameters(), *self.transformer.parameters(), *self.ln_final.parameters(),
                self.positional_embedding, self.text_projection, self.logit_scale]

    def sgd(self, params, lr):
        """Dassl's build_optimizer("sgd") on the registered module's parameters."""
        self.optim = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4, dampening=0, nesterov=False)

    def update(self, loss):
        self.optim.zero_grad()
        loss.backward()
        self.optim.step()
        return loss.item()

    def encode_text(self, prompts, tokenized, groups=()):
        """TextEncoder.forward; the deep groups replace positions 1.. before blocks 1..depth-1."""
        x = (prompts + self.positional_embedding.type(self.dtype)).permute(1, 0, 2)
        for i, block in enumerate(self.transformer.resblocks):
            x = block(splice(x, groups, i, 1) if i else x)
        x = self.ln_final(x.permute(1, 0, 2)).type(self.dtype)
        return x[torch.arange(x.shape[0]), tokenized.argmax(dim=-1)] @ self.text_projection

    def encode_image(self, images, groups):
        """The patched VisionTransformer.forward: input tokens appended after the positional
        embedding (before ln_pre), deep ones replacing the last tokens before blocks 1..depth-1."""
        v = self.visual
        x = v.conv1(images)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = v.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype, device=x.device)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        x = torch.cat([x] + [g[0].expand(x.shape[0], -1, -1).type(self.dtype) for g in groups], dim=1)
        x = v.ln_pre(x).permute(1, 0, 2)
        start = x.shape[0] - sum(g[0].shape[0] for g in groups)
        for i, block in enumerate(v.transformer.resblocks):
            x = block(splice(x, groups, i, start) if i else x)
        return v.ln_post(x.permute(1, 0, 2)[:, 0, :]) @ v.proj


class CoOp(Reference):
    # mirrors CoOp: trainers/coop.py, PromptLearner (shared ctx, class token "end") + TextEncoder.forward
    # + CustomCLIP.forward + CoOp.forward_backward (fp16/fp32 branch: Dassl model_backward_and_update)
    def __init__(self, clip_model, classnames, s):
        super().__init__(clip_model)
        n_ctx = len(s["ctx_init"].split(" ")) if s["ctx_init"] else s["n_ctx"]  # CTX_INIT's words, or N_CTX
        ctx, words = text_context(clip_model, n_ctx, s["ctx_init"])
        self.ctx = nn.Parameter(ctx)
        self.prompts = ClassPrompts(clip_model, words, classnames, n_ctx)
        self.params = [self.ctx]
        self.sgd(self.params, s["lr"])  # only the prompt learner is given to the optimiser

    def step(self, images, labels):
        image_features = self.visual(images.type(self.dtype))
        text_features = self.encode_text(self.prompts([self.ctx]), self.prompts.tokenized)
        logits = self.logit_scale.exp() * normalize(image_features) @ normalize(text_features).t()
        loss = F.cross_entropy(logits, labels)
        self.optim.zero_grad()
        if not torch.isfinite(loss).all():  # Dassl's detect_anomaly
            raise FloatingPointError("Loss is infinite or NaN!")
        loss.backward()
        self.optim.step()
        value = loss.item()
        # the loss summary's "acc", computed every step (Dassl's compute_accuracy, top-1)
        hits = logits.topk(1, 1)[1].t().eq(labels.view(1, -1))
        hits.view(-1).float().sum(0, keepdim=True).mul_(100.0 / labels.shape[0]).item()
        return value

    def load_caspl(self, trainer):
        self.ctx.copy_(trainer.prompt_learner.ctx)


class MaPLe(Reference):
    # mirrors MaPLe: multimodal-prompt-learning trainers/maple.py, MultiModalPromptLearner.forward + TextEncoder
    # .forward + CustomCLIP.forward + MaPLe.forward_backward (fp16/fp32 branch); clip/model.py
    # ResidualAttentionBlock_MaPLe.forward and VisionTransformer_MaPLe.forward
    def __init__(self, clip_model, classnames, s):
        super().__init__(clip_model)
        n, depth = s["n_ctx"], s["depth"]
        d_text, d_vision = clip_model.ln_final.weight.shape[0], clip_model.visual.conv1.weight.shape[0]
        ctx, words = text_context(clip_model, n, s["ctx_init"] if n <= 4 else "")
        self.ctx = nn.Parameter(ctx)
        self.proj = nn.Linear(d_text, d_vision).to(self.device, self.dtype)  # the input coupling (.half() there)
        self.deep_text = deep_tokens(n, d_text, depth, self.device)  # compound_prompts_text
        layer = nn.Linear(d_text, d_vision).to(self.device)  # compound_prompt_projections: clones of one layer
        self.deep_proj = [copy.deepcopy(layer) for _ in range(depth - 1)]
        self.prompts = ClassPrompts(clip_model, words, classnames, n)
        self.params = [self.ctx, *self.proj.parameters(), *self.deep_text,
                       *[p for f in self.deep_proj for p in f.parameters()]]
        self.sgd(self.params + self.held(), s["lr"])

    def step(self, images, labels):
        scale = self.logit_scale.exp()
        prompts = self.prompts([self.ctx])
        deep_vision = [f(t) for f, t in zip(self.deep_proj, self.deep_text)]
        shared = self.proj(self.ctx)
        text_features = self.encode_text(prompts, self.prompts.tokenized, [[self.ctx] + self.deep_text])
        image_features = self.encode_image(images.type(self.dtype), [[shared] + deep_vision])
        logits = scale * normalize(image_features) @ normalize(text_features).t()
        return self.update(F.cross_entropy(logits, labels))

    def load_caspl(self, trainer):
        p = trainer.prompt_learner
        copy_layers([self.ctx] + self.deep_text, p.text)
        for mine, theirs in zip([self.proj] + self.deep_proj, p.couplings, strict=True):
            mine.load_state_dict(theirs.state_dict())


def promptsrc_anchor(clip_model, classnames):
    """PromptSRC's fixed_embeddings (VLPromptLearner.__init__), computed once: a fp32 copy of
    CLIP encodes every class with each of the 60 templates (stock encode_text, 77 tokens);
    the unnormalised features are averaged over the templates. A module-level function, so a
    benchmark can replace it as it replaces caspl's anchor."""
    fp32 = clip_model if clip_model.dtype == torch.float32 else copy.deepcopy(clip_model).float()
    device = clip_model.positional_embedding.device
    names = [name.replace("_", " ") for name in classnames]
    with torch.no_grad():
        features = [fp32.encode_text(clip.tokenize([t.replace("{}", name) for name in names]).to(device))
                    for t in PROMPTSRC_TEMPLATES]
    return torch.stack(features, dim=1).mean(dim=1)


class PromptSRC(Reference):
    # mirrors PromptSRC: trainers/promptsrc.py, VLPromptLearner (__init__: anchors; forward) + TextEncoder.forward
    # + CustomCLIP.forward (training branch) + PromptSRC.forward_backward (fp16/fp32 branch); clip/model.py
    # ResidualAttentionBlock_IVLP.forward and VisionTransformer.forward (IVLP design)
    def __init__(self, clip_model, classnames, s, boost=None):
        super().__init__(clip_model)
        self.own = VLPrompts(clip_model, s["n_ctx_text"], s["n_ctx_vision"], s["depth_text"], s["depth_vision"],
                             s["ctx_init"])
        words, n_words = self.own.words, s["n_ctx_text"]
        self.text_groups, self.vision_groups = [self.own.text], [self.own.vision]
        if boost is not None:  # CasPL, second stage
            n_boost = boost.text[0].shape[0]
            words, n_words = words + " " + " ".join(["X"] * n_boost), n_words + n_boost
            self.text_groups, self.vision_groups = [self.own.text, boost.text], [boost.vision, self.own.vision]
        self.prompts = ClassPrompts(clip_model, words, classnames, n_words)
        self.fixed_embeddings = promptsrc_anchor(clip_model, classnames)
        self.zs_image_encoder = copy.deepcopy(clip_model.visual)  # ZS_image_encoder: a second frozen CLIP's visual
        self.weights = s["text_loss_weight"], s["image_loss_weight"]
        self.params = self.own.text + self.own.vision
        boosting = boost.text + boost.vision if boost is not None else []
        self.sgd(self.params + boosting + self.held() + list(self.zs_image_encoder.parameters()), s["lr"])

    def step(self, images, labels):
        scale = self.logit_scale.exp()
        prompts = self.prompts([g[0] for g in self.text_groups])
        text_features = self.encode_text(prompts, self.prompts.tokenized, self.text_groups)
        image_features = self.encode_image(images.type(self.dtype), self.vision_groups)
        image_features, text_features = normalize(image_features), normalize(text_features)
        logits = scale * image_features @ text_features.t()
        loss_ce = F.cross_entropy(logits, labels)
        fixed = normalize(self.fixed_embeddings)
        with torch.no_grad():
            zs_features = normalize(self.zs_image_encoder(images.type(self.dtype)))
            zs_logits = scale * zs_features @ fixed.type(zs_features.dtype).t()  # .half() there
        loss_text = F.l1_loss(text_features, fixed, reduction="mean") * self.weights[0]
        loss_image = F.l1_loss(image_features, zs_features, reduction="mean") * self.weights[1]
        loss_logits = F.kl_div(F.log_softmax(logits, dim=1), F.log_softmax(zs_logits, dim=1), reduction="sum",
                               log_target=True) / logits.numel()
        return self.update(loss_ce + (loss_logits + loss_text + loss_image))

    def load_caspl(self, trainer):
        self.own.load(trainer.prompt_learner)


class CasPL_PromptSRC(PromptSRC):  # noqa: N801 (the method's name)
    # mirrors CasPL: trainers/caspl_promptsrc.py, VLPromptLearner (second-stage init) + VLPromptLearner.forward
    # (ctx_teacher) + CustomCLIP.forward + CasPL_PromptSRC.forward_backward; clip/model.py ResidualAttentionBlock_IVLP
    # and VisionTransformer, FIRST_TRAIN False / SECOND_TRAIN True branches (boosting tokens: VPT_FIRST,
    # VPT_shallow_FIRST, prompt_learner_teacher.ctx, frozen)
    def __init__(self, clip_model, classnames, s):
        if s["n_ctx_text"] == 2:
            raise ValueError("the reference special-cases 2 adapting text tokens (a 'midfix'); not mirrored here")
        self.boost = VLPrompts(clip_model, s["boost_text"], s["boost_vision"], s["boost_depth_text"],
                               s["boost_depth_vision"], "", learnable=False)
        super().__init__(clip_model, classnames, s, self.boost)

    def load_caspl(self, trainer):
        super().load_caspl(trainer)
        self.boost.load(trainer.boost)


class CasPL_Boost(Reference):  # noqa: N801 (the method's name)
    # mirrors CasPL: trainers/caspl.py (trainer "CasPL"), VLPromptLearner_teacher (__init__: teacher text features,
    # ZS_image_encoder_teacher; forward) + TextEncoder.forward + CustomCLIP.forward + CasPL.forward_backward
    # (fp16/fp32 branch); clip/model.py ResidualAttentionBlock_IVLP and VisionTransformer, FIRST_TRAIN branches
    def __init__(self, clip_model, classnames, s, teacher):
        super().__init__(clip_model)
        if teacher.dtype != self.dtype:
            raise ValueError(f"pass the teacher in the student's dtype ({self.dtype}, not {teacher.dtype}): the "
                             "reference runs the teacher's image encoder on the student-dtype batch")
        self.boost = VLPrompts(clip_model, s["boost_text"], s["boost_vision"], s["boost_depth_text"],
                               s["boost_depth_vision"], s.get("ctx_init", ""))  # IVLP.CTX_INIT (used at <= 4 tokens)
        self.prompts = ClassPrompts(clip_model, self.boost.words, classnames, s["boost_text"])
        fp32 = teacher if teacher.dtype == torch.float32 else copy.deepcopy(teacher).float()
        names = [name.replace("_", " ") for name in classnames]
        with torch.no_grad():
            tokens = clip.tokenize([s["teacher_template"].format(name) for name in names]).to(self.device)
            self.fixed_embeddings_teacher = fp32.encode_text(tokens)
        self.teacher_visual = teacher.visual  # ZS_image_encoder_teacher
        self.temperature = s["temperature"]
        self.params = self.boost.text + self.boost.vision
        self.sgd(self.params + self.held() + list(self.teacher_visual.parameters()), s["lr"])

    def step(self, images, labels):  # labels are not used
        scale = self.logit_scale.exp()
        prompts = self.prompts([self.boost.text[0]])
        text_features = self.encode_text(prompts, self.prompts.tokenized, [self.boost.text])
        image_features = self.encode_image(images.type(self.dtype), [self.boost.vision])
        logits = scale * normalize(image_features) @ normalize(text_features).t()
        fixed = normalize(self.fixed_embeddings_teacher)
        with torch.no_grad():
            teacher_features = normalize(self.teacher_visual(images.type(self.dtype)))
            teacher_logits = scale * teacher_features @ fixed.type(teacher_features.dtype).t()  # .half() there
        t = self.temperature
        pred_teacher = F.softmax(teacher_logits / t, dim=1)
        log_pred_student = F.log_softmax(logits / t, dim=1)
        loss = F.kl_div(log_pred_student, pred_teacher, reduction="sum") * (t ** 2) / pred_teacher.shape[0]
        return self.update(loss)

    def load_caspl(self, trainer):
        self.boost.load(trainer.boost)


METHODS = {"CoOp": CoOp, "MaPLe": MaPLe, "PromptSRC": PromptSRC, "CasPL_PromptSRC": CasPL_PromptSRC,
           "CasPL_Boost": CasPL_Boost}


def build(method, clip_model, classnames, settings, teacher=None):
    """Returns an object with .step(images, labels) -> float (the loss), doing one reference
    training step: forward, loss, backward, optimizer step (SGD with the settings' lr,
    momentum 0.9, weight decay 5e-4 as Dassl's default sgd), and .params (the learnable tensors)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {', '.join(METHODS)}")
    if method == "CasPL_Boost":
        if teacher is None:
            raise ValueError("CasPL_Boost needs the teacher CLIP")
        return CasPL_Boost(clip_model, classnames, settings, teacher)
    return METHODS[method](clip_model, classnames, settings)


def copy_from_caspl(ref, trainer):
    """Copy a caspl trainer's learnable prompt values (and frozen boosting tokens) into `ref`."""
    with torch.no_grad():
        ref.load_caspl(trainer)
