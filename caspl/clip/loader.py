"""Loading OpenAI CLIP behind one function: a model name (downloaded with openai-clip's URL
and checksum, cached) or a local file (a TorchScript archive or a plain state dict), read
without running code from the file."""
import http.client
import os
import urllib.error
import warnings
import zipfile

import torch

with warnings.catch_warnings():  # openai-clip imports pkg_resources, which warns on import
    warnings.simplefilter("ignore")
    import clip as openai_clip
    from clip.model import build_model

from ..errors import CasplError
from ..utils.fetch import file_sha256
from ..utils.torchscript import UnreadableTorchScript, read_torchscript_weights

NON_WEIGHT_KEYS = ("input_resolution", "context_length", "vocab_size")  # stored in OpenAI's archives
DOWNLOAD_ROOT = os.environ.get("CASPL_CLIP_CACHE", os.path.expanduser("~/.cache/clip"))
# the sha256 of each file OpenAI released: the folder it sits in, in openai-clip's download URLs
OPENAI_SHA256 = frozenset(url.split("/")[-2] for url in openai_clip.clip._MODELS.values())


def resolve_backbone(name):
    """The local file that holds backbone `name` (downloading a named OpenAI model if needed)."""
    if name in openai_clip.available_models():
        url = openai_clip.clip._MODELS[name]
        try:
            return openai_clip.clip._download(url, DOWNLOAD_ROOT)
        except (urllib.error.URLError, http.client.HTTPException, OSError, RuntimeError) as err:
            # no network (as on many GPU nodes), or a damaged download (openai-clip's checksum)
            reason = str(getattr(err, "reason", None) or err).splitlines()[0] or type(err).__name__
            raise CasplError(f"cannot download CLIP {name} from {url} ({reason}): put that file in {DOWNLOAD_ROOT} "
                             "(the cache; CASPL_CLIP_CACHE sets it) by hand, or give MODEL.BACKBONE.NAME a local "
                             "file") from None
    path = os.path.expanduser(name)
    if os.path.isfile(path):
        return path
    raise CasplError(
        f"CLIP backbone not found: {name!r} is neither a file nor one of {', '.join(openai_clip.available_models())}"
    )


def _is_torchscript(path):
    """The OpenAI release files are TorchScript archives: zip files with a code/ folder."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/")[1:2] == ["code"] for name in archive.namelist())


def _read_torchscript(path):
    """The weights of a TorchScript archive, read without running it (torch.jit.load runs an
    archive's code). One that reader cannot read is loaded with torch.jit.load only when it is
    a file OpenAI released; any other is refused."""
    try:
        return read_torchscript_weights(path)
    except UnreadableTorchScript as err:
        if file_sha256(path) not in OPENAI_SHA256:
            raise CasplError(f"refusing to load {path}: loading this TorchScript archive would run code from it "
                             f"({err}), and it is not a CLIP file OpenAI released; give its weights as a plain state "
                             "dict instead, saved with torch.save(model.state_dict(), path)") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(path, map_location="cpu").state_dict()


def _read_state_dict(path):
    if _is_torchscript(path):
        return _read_torchscript(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CasplError(f"cannot read CLIP weights from {path}: {err}".splitlines()[0]) from None
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or "text_projection" not in obj:
        raise CasplError(f"{path} does not hold a CLIP state dict (no 'text_projection' key)")
    return obj


def load_clip(name, device="cpu", fp16=False):
    """Build an unmodified `clip.model.CLIP` from `name`, frozen and in eval mode.

    fp16=True keeps CLIP's own half-precision weights (as the OpenAI release); otherwise
    every weight is fp32."""
    path = resolve_backbone(name)
    state_dict = _read_state_dict(path)
    try:
        model = build_model(dict(state_dict))  # builds with half weights (OpenAI's convert_weights)
        if not fp16:  # reload in fp32 so fp32 checkpoints keep their exact values
            model.float()
            model.load_state_dict({k: v for k, v in state_dict.items() if k not in NON_WEIGHT_KEYS})
    except (KeyError, RuntimeError) as err:
        raise CasplError(f"{path} is not a valid CLIP checkpoint: {str(err).splitlines()[0]}") from None
    model.requires_grad_(False)
    return model.to(device).eval()
