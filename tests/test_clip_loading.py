"""Loading CLIP by name or file: plain state dicts, TorchScript archives, bad files."""
import clip
import pytest
import torch

from caspl import CasplError
from caspl.clip import load_clip, resolve_backbone
from caspl.clip.tiny import save_tiny_clip, tiny_clip

TEXT = clip.tokenize(["a photo of a dog.", "sea or lake"])


def features(model):
    torch.manual_seed(0)
    with torch.no_grad():
        return model.encode_image(torch.randn(2, 3, 32, 32)), model.encode_text(TEXT)


def test_plain_state_dict_and_wrapped_state_dict(tmp_path):
    original = tiny_clip(seed=3)
    torch.save(original.state_dict(), tmp_path / "plain.pt")
    torch.save({"state_dict": original.state_dict(), "config": {"note": "tiny"}}, tmp_path / "wrapped.pt")
    for name in ("plain.pt", "wrapped.pt"):
        model = load_clip(str(tmp_path / name))
        assert not any(p.requires_grad for p in model.parameters()) and not model.training
        for a, b in zip(features(model), features(original)):
            assert torch.equal(a, b)


def test_torchscript_archive_as_openai_releases_them(tmp_path):
    model = load_clip(save_tiny_clip(str(tmp_path / "jit.pt"), torchscript=True, seed=4))
    for a, b in zip(features(model), features(tiny_clip(seed=4))):
        assert torch.equal(a, b)


def test_fp16_keeps_clip_half_weights(tmp_path):
    torch.save(tiny_clip().state_dict(), tmp_path / "m.pt")
    model = load_clip(str(tmp_path / "m.pt"), fp16=True)
    assert model.dtype == torch.float16 and model.text_projection.dtype == torch.float16
    assert load_clip(str(tmp_path / "m.pt")).dtype == torch.float32


def test_a_model_name_goes_through_the_checksummed_download(tmp_path, monkeypatch):
    import clip.clip as openai

    torch.save(tiny_clip().state_dict(), tmp_path / "m.pt")
    calls = []
    monkeypatch.setattr(openai, "_download", lambda url, root: calls.append((url, root)) or str(tmp_path / "m.pt"))
    assert resolve_backbone("ViT-B/16") == str(tmp_path / "m.pt")
    assert calls[0][0] == openai._MODELS["ViT-B/16"]


def test_a_model_name_without_network_is_one_line_naming_the_url_and_the_cache(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    import clip.clip as openai
    from caspl.clip import loader

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setattr(loader, "DOWNLOAD_ROOT", str(tmp_path / "cache"))
    with pytest.raises(CasplError) as err:
        resolve_backbone("ViT-B/16")
    message = str(err.value)
    assert "\n" not in message and openai._MODELS["ViT-B/16"] in message and "Temporary failure" in message
    assert f"put that file in {tmp_path / 'cache'} (the cache; CASPL_CLIP_CACHE sets it)" in message
    assert "MODEL.BACKBONE.NAME a local file" in message


@pytest.mark.parametrize("content,message", [
    (None, "neither a file nor one of"),
    (b"not a checkpoint at all", "cannot read CLIP weights"),
    ({"weights": torch.zeros(2)}, "does not hold a CLIP state dict"),
])
def test_bad_backbones_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(CasplError, match=message):
        load_clip(str(path))
