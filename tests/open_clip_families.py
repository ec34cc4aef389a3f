"""Tiny open_clip models with random weights, one per family caspl prompts, for offline tests:

- openai: open_clip's own CLIP class and towers, shaped as caspl.clip.tiny's OpenAI CLIP (so the
  same state dict loads through both doors);
- siglip: a timm ViT without a class token, pooled by attention ("map"), and a bidirectional
  text tower pooled at its last position, with a logit bias (CustomTextCLIP);
- eva: a timm Eva ViT (rotary positions, SwiGLU) and a causal text tower.

The timm towers are registered with timm under the names below; the configs are written as
open_clip model-config files (`open_clip:<file.json>/<checkpoint>` names them)."""
import json
import math
import os

import torch

TIMM_SIGLIP, TIMM_EVA = "caspl_test_siglip_vit", "caspl_test_eva"
TEXT = {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2}
CONFIGS = {
    "caspl-openai-vit": {"embed_dim": 32, "quick_gelu": True,
                         "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
                         "text_cfg": {**TEXT, "context_length": 77}},
    "caspl-sigmoid": {"embed_dim": 64, "init_logit_scale": math.log(10), "init_logit_bias": -10, "custom_text": True,
                     "vision_cfg": {"image_size": 32, "timm_model_name": TIMM_SIGLIP, "timm_pool": "map",
                                    "timm_proj": "none"},
                     "text_cfg": {**TEXT, "no_causal_mask": True, "proj_bias": True, "pool_type": "last"}},
    "caspl-eva": {"embed_dim": 32, "custom_text": True,
                  "vision_cfg": {"image_size": 32, "timm_model_name": TIMM_EVA, "timm_pool": "token",
                                 "timm_proj": None},
                  "text_cfg": TEXT},
}
FAMILIES = {"openai": "caspl-openai-vit", "siglip": "caspl-sigmoid", "eva": "caspl-eva"}


def register_timm_towers():
    import timm
    from timm.models import register_model
    from timm.models.eva import Eva
    from timm.models.vision_transformer import VisionTransformer

    def tower(cls, **shape):
        def build(pretrained=False, pretrained_cfg=None, pretrained_cfg_overlay=None, cache_dir=None, **kwargs):
            return cls(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=1, **{**shape, **kwargs})
        return build

    if not timm.is_model(TIMM_SIGLIP):
        build = tower(VisionTransformer, class_token=False, global_pool="map")
        build.__name__ = TIMM_SIGLIP
        register_model(build)
    if not timm.is_model(TIMM_EVA):
        build = tower(Eva, mlp_ratio=4 * 2 / 3, qkv_fused=False, swiglu_mlp=True, scale_mlp=True,
                      scale_attn_inner=True, use_rot_pos_emb=True, ref_feat_shape=(4, 4), global_pool="token")
        build.__name__ = TIMM_EVA
        register_model(build)


def write_family(folder, family, seed=0, weights=None):
    """(config file, checkpoint file) of `family` in `folder`: random weights seeded by `seed`, or
    the state dict file `weights` (an OpenAI CLIP's, for the openai family)."""
    import open_clip

    register_timm_towers()
    arch = FAMILIES[family]
    config = os.path.join(folder, f"{arch}.json")
    with open(config, "w") as f:
        json.dump(CONFIGS[arch], f)
    if weights is None:
        open_clip.add_model_config(config)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = open_clip.create_model(arch, pretrained=None)
        weights = os.path.join(folder, f"{arch}-{seed}.pt")
        torch.save(model.state_dict(), weights)
    return config, weights


def spec(config, weights):
    return f"open_clip:{config}/{weights}"
