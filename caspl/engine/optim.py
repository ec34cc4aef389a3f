"""Optimiser and per-epoch LR schedule from cfg.OPTIM (Dassl's names and semantics)."""
import bisect
import math
from types import SimpleNamespace

import torch

from ..errors import CasplError


def build_optimizer(params, optim_cfg):
    params = [p for p in params if p.requires_grad]
    name, lr, wd = optim_cfg.NAME, optim_cfg.LR, optim_cfg.WEIGHT_DECAY
    betas = (optim_cfg.ADAM_BETA1, optim_cfg.ADAM_BETA2)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=optim_cfg.MOMENTUM, weight_decay=wd,
                               dampening=optim_cfg.SGD_DAMPNING, nesterov=optim_cfg.SGD_NESTEROV)
    if name in ("adam", "amsgrad"):
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, betas=betas, amsgrad=name == "amsgrad")
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, betas=betas)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=optim_cfg.MOMENTUM, weight_decay=wd,
                                   alpha=optim_cfg.RMSPROP_ALPHA)
    if name == "radam":
        return torch.optim.RAdam(params, lr=lr, weight_decay=wd, betas=betas)
    raise CasplError(f"unknown OPTIM.NAME {name!r} (sgd, adam, amsgrad, adamw, rmsprop, radam)")


SCHEDULE_KEYS = ("LR", "LR_SCHEDULER", "STEPSIZE", "GAMMA", "MAX_EPOCH", "WARMUP_EPOCH", "WARMUP_TYPE",
                 "WARMUP_CONS_LR", "WARMUP_MIN_LR", "WARMUP_RECOUNT")


class EpochLR:
    """lr(epoch) = base_lr * factor(epoch), stepped once per epoch.

    With WARMUP_EPOCH W > 0 the first W epochs run at WARMUP_CONS_LR (constant) or ramp
    from WARMUP_MIN_LR (linear); after that the schedule counts epochs from W
    (WARMUP_RECOUNT) or from 0. Cosine: (1 + cos(pi * e / MAX_EPOCH)) / 2."""

    def __init__(self, optim_cfg):
        c = optim_cfg
        if c.LR_SCHEDULER not in ("single_step", "multi_step", "cosine"):
            raise CasplError(f"unknown OPTIM.LR_SCHEDULER {c.LR_SCHEDULER!r} (single_step, multi_step, cosine)")
        if c.WARMUP_EPOCH > 0 and c.WARMUP_TYPE not in ("constant", "linear"):
            raise CasplError(f"unknown OPTIM.WARMUP_TYPE {c.WARMUP_TYPE!r} (constant, linear)")
        # the whole schedule, read once (a resumed run past the warmup still ran it)
        self.c = SimpleNamespace(**{k: c[k] for k in SCHEDULE_KEYS})

    def lr(self, epoch):
        c = self.c
        warm = max(c.WARMUP_EPOCH, 0)
        if epoch < warm:
            if c.WARMUP_TYPE == "constant":
                return c.WARMUP_CONS_LR
            return c.WARMUP_MIN_LR if epoch == 0 else c.LR * epoch / warm
        e = epoch - warm if c.WARMUP_RECOUNT else epoch
        if c.LR_SCHEDULER == "cosine":
            return c.LR * (1 + math.cos(math.pi * e / c.MAX_EPOCH)) / 2
        if c.LR_SCHEDULER == "single_step":
            step = c.STEPSIZE[-1] if isinstance(c.STEPSIZE, (list, tuple)) else c.STEPSIZE  # as Dassl
            step = step if step > 0 else c.MAX_EPOCH
            return c.LR * c.GAMMA ** (e // step)
        return c.LR * c.GAMMA ** bisect.bisect_right(sorted(c.STEPSIZE), e)


def set_lr(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr
