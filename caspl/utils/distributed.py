"""Data-parallel training across processes started by torchrun (one per GPU, or CPU processes
with gloo). What DistributedDataParallel does, for modules that are not called through one
forward (our learnable parts are prompt tensors read by the encoders): every process starts
from rank 0's parameters, sees its own share of each global batch, and averages gradients
(one flat all-reduce per step) before the optimiser step. Results and metrics are reduced
across processes; only rank 0 writes logs, checkpoints and caches."""
import os

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


def launched():
    """True in a process started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(use_cuda=True):
    """Join the process group torchrun describes (nccl on GPUs, gloo otherwise); a no-op
    outside torchrun. On GPUs each process's default device becomes its LOCAL_RANK."""
    if not launched() or dist.is_initialized():
        return
    cuda = use_cuda and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")


def shutdown():
    """Leave the process group once every process is done. Torch asks for this before exit:
    without it, gloo's threads can abort a process at interpreter teardown ("terminate called
    without an active exception"), failing a run whose work was complete."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def active():
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size():
    return dist.get_world_size() if active() else 1


def rank():
    return dist.get_rank() if active() else 0


def is_main():
    return rank() == 0


def barrier():
    if active():
        dist.barrier()


def all_true(flag, device):
    """Whether `flag` holds in every process (so that all take the same branch)."""
    if not active():
        return bool(flag)
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def mean_scalars(values, device):
    """A dict of floats averaged over the processes."""
    if not active() or not values:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(values, (t / world_size()).tolist()))


def average_gradients(params):
    """Replace each parameter's gradient by its mean over the processes (a missing gradient
    counts as zero, so every process reduces the same buffer)."""
    if not active() or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p)
        offset += n


def broadcast_parameters(modules):
    """Every process takes rank 0's values of the modules' parameters and buffers."""
    if not active():
        return
    for module in modules:
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def gather_tensors(tensor):
    """Rank-ordered concatenation of every process's 1-D (or N-D on dim 0) tensor; sizes may differ."""
    if not active():
        return tensor
    parts = [None] * world_size()
    dist.all_gather_object(parts, tensor.cpu())
    return torch.cat(parts)


def broadcast_object(obj):
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sum_tensor(tensor):
    """In-place sum over the processes (for tensors already on a device the backend supports)."""
    if active():
        dist.all_reduce(tensor)
    return tensor


class ShardSampler(Sampler):
    """Evaluation shards: process r takes items r, r + W, r + 2W, ... (no padding, so every
    item is evaluated exactly once over all processes)."""

    def __init__(self, n):
        self.indices = list(range(rank(), n, world_size()))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)
