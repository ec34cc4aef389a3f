"""What `TRAINER.<NAME>.PREC` means on the device a run uses.

- `fp32`: every weight and activation in fp32.
- `fp16`: CLIP keeps its own half-precision weights (the OpenAI release), so the frozen
  towers run in fp16; learnable parameters stay fp32 and are cast where they enter a tower.
  On a CUDA GPU only: a CPU runs it as fp32, with a note.
- `amp`: fp32 weights under autocast, to bf16 where the device has it (no gradient scaler
  needed) and to fp16 with a gradient scaler otherwise.

`CASPL_CPU_AS_GPU=1` makes the CPU behave as a CUDA GPU without bf16 does: `fp16` keeps the
half weights and `amp` autocasts to fp16 with a gradient scaler. torch runs every op caspl
uses in half precision on the CPU (slowly), so the GPU path can be tested on a machine
without one. Unset (or 0), nothing changes."""
import os

import torch

from ..errors import CasplError

PRECISIONS = ("fp16", "fp32", "amp")
CPU_AS_GPU = "CASPL_CPU_AS_GPU"


def cpu_as_gpu():
    value = os.environ.get(CPU_AS_GPU, "").strip()
    if value not in ("", "0", "1"):
        raise CasplError(f"{CPU_AS_GPU} is {value!r}: set it to 1 (the CPU behaves as a CUDA GPU without bf16) "
                         "or leave it unset")
    return value == "1"


def resolve_precision(prec, device, key):
    """The precision a run with PREC `prec` (the config key `key`) uses on `device`."""
    if prec not in PRECISIONS:
        raise CasplError(f"{key} must be one of {', '.join(PRECISIONS)}, not {prec!r}")
    if prec == "fp16" and device.type == "cpu" and not cpu_as_gpu():
        print(f"Note: PREC fp16 runs as fp32 on the CPU (half precision is slow there; {CPU_AS_GPU}=1 keeps it, "
              "to test the GPU path)")
        return "fp32"
    return prec


def amp_dtype(device):
    """amp's autocast dtype: bf16 where the device has it (no gradient scaler needed), else fp16."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float16 if cpu_as_gpu() else torch.bfloat16


def precision_line(precision, device):
    """One line for the log: what the run's precision is made of."""
    emulated = f" ({CPU_AS_GPU}=1: the CPU as a CUDA GPU without bf16)" if device.type == "cpu" and cpu_as_gpu() else ""
    if precision == "fp16":
        return f"Precision fp16: CLIP's half weights, learnable parameters in fp32{emulated}"
    if precision == "amp":
        kind = "bf16" if amp_dtype(device) == torch.bfloat16 else "fp16 with a gradient scaler"
        return f"Mixed precision: {kind}; learnable parameters in fp32{emulated}"
    return "Precision fp32"


def grad_scaler(precision, device):
    """A gradient scaler where amp autocasts to fp16 (its small range underflows gradients), else None."""
    if precision == "amp" and amp_dtype(device) == torch.float16:
        return torch.amp.GradScaler(device.type)
    return None
