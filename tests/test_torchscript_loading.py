"""A TorchScript archive (the form OpenAI releases CLIP in) is read without running code from
it: caspl.utils.torchscript parses the archive instead of loading it, and torch.jit.load, which
runs an archive's __setstate__ methods, is kept for the files OpenAI released. Each crafted
archive below creates a marker file when torch.jit.load reads it; each test checks that first."""
import os
import pickle
import warnings
import zipfile
from typing import Optional, Tuple

import clip
import pytest
import torch

from caspl import CasplError
from caspl.clip import load_backbone, load_clip, loader
from caspl.clip.tiny import save_tiny_clip, tiny_clip
from caspl.utils.fetch import file_sha256
from caspl.utils.torchscript import UnreadableTorchScript, read_torchscript_weights
from conftest import ROOT, build_trainer, run_cli
from test_caspl import BOOST_CFG, SMALL


class OpensMarkerModule(torch.nn.Module):
    """A module whose __setstate__ creates the file `marker` (what an attacker's code would do, harmlessly)."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker
        self.weight = torch.nn.Parameter(torch.ones(2))
        self.opened = torch.zeros(1)

    def forward(self, x):
        return x * self.weight + self.opened

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, torch.Tensor, bool]:
        return self.marker, self.weight, self.training

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, torch.Tensor, bool]) -> None:
        self.marker, self.weight, self.training = state
        self.opened = torch.from_file(self.marker, shared=True, size=1)  # creates the file


class OpensMarker:
    """A TorchScript class (not a module) whose __setstate__ creates the file `path`."""

    def __init__(self, path: str):
        self.path = path
        self.opened = torch.zeros(1)

    def __getstate__(self) -> str:
        return self.path

    def __setstate__(self, state: str) -> None:
        self.path = state
        self.opened = torch.from_file(state, shared=True, size=1)


class HoldsOpensMarker(torch.nn.Module):
    def __init__(self, marker: str):
        super().__init__()
        self.held = OpensMarker(marker)
        self.weight = torch.nn.Parameter(torch.ones(2))

    def forward(self, x):
        return x * self.weight + self.held.opened


def scripted(module):
    with warnings.catch_warnings():  # jit's deprecation notes
        warnings.simplefilter("ignore")
        return torch.jit.script(module)


def jit_load(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(path, map_location="cpu")


@pytest.fixture(params=["module", "class"])
def crafted(request, tmp_path):
    """(archive, marker): an archive that creates `marker` when torch.jit.load reads it (checked
    here, then the marker is removed)."""
    marker, path = str(tmp_path / "marker"), str(tmp_path / "crafted.pt")
    if request.param == "class":
        scripted(OpensMarker)
    model = OpensMarkerModule(marker) if request.param == "module" else HoldsOpensMarker(marker)
    scripted(model).save(path)
    assert not os.path.exists(marker)
    jit_load(path)
    assert os.path.exists(marker), "the premise: torch.jit.load runs the archive's __setstate__"
    os.remove(marker)
    return path, marker


def assert_refused(err, path):
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"refusing to load {path}: ")
    assert "would run code" in message and "defines __setstate__" in message
    assert "plain state dict" in message and "torch.save" in message


@pytest.fixture(scope="module")
def clip_archive(tmp_path_factory):
    """A tiny CLIP (seed 4) traced and saved as OpenAI saves theirs."""
    return save_tiny_clip(str(tmp_path_factory.mktemp("archive") / "jit.pt"), torchscript=True, seed=4)


def same_tensors(mine, theirs):
    assert list(mine) == list(theirs)
    for key, value in theirs.items():
        ours = mine[key]
        assert (ours.dtype, ours.shape, ours.stride(), ours.storage_offset()) == \
               (value.dtype, value.shape, value.stride(), value.storage_offset()), key
        assert torch.equal(ours, value), key


def test_reader_gives_what_torch_jit_load_gives_for_a_clip_archive(clip_archive):
    weights = read_torchscript_weights(clip_archive)
    same_tensors(weights, jit_load(clip_archive).state_dict())
    same_tensors(weights, tiny_clip(seed=4).state_dict())


class Everything(torch.nn.Module):
    """What a state dict takes from a module beyond CLIP's needs: buffers (one typed
    Optional[Tensor], which torch leaves out), a None parameter, a tensor attribute that is no
    parameter, typed lists and dicts, half weights, a strided view, weights two layers share."""

    maybe: Optional[torch.Tensor]

    def __init__(self):
        super().__init__()
        self.norm = torch.nn.BatchNorm1d(4)
        self.register_buffer("maybe", torch.zeros(3))
        self.plain = torch.ones(2)
        self.sizes, self.names = [1, 2], {"a": 1.5}
        self.layers = torch.nn.Sequential(torch.nn.Linear(4, 4, bias=False), torch.nn.Linear(4, 4))
        self.layers[1].weight = self.layers[0].weight
        self.halves = torch.nn.Parameter(torch.randn(3).half())
        self.view = torch.nn.Parameter(torch.arange(12.0).reshape(3, 4)[1:].t())
        self.absent = None

    def forward(self, x):
        return self.layers(self.norm(x)) + self.plain.sum() + self.sizes[0] + self.names["a"] + self.view.sum()


def test_reader_follows_torch_on_buffers_views_and_shared_weights(tmp_path):
    path = str(tmp_path / "everything.pt")
    scripted(Everything()).save(path)
    weights = read_torchscript_weights(path)
    same_tensors(weights, jit_load(path).state_dict())
    assert "maybe" not in weights and weights["layers.0.weight"].data_ptr() == weights["layers.1.weight"].data_ptr()


def test_load_clip_reads_the_archive_without_torch_jit_load(clip_archive, monkeypatch):
    torch.manual_seed(0)
    images, text = torch.randn(2, 3, 32, 32), clip.tokenize(["a photo of a dog.", "sea or lake"])
    with torch.no_grad():
        expected = tiny_clip(seed=4)(images, text)[0]

    def refused(*args, **kwargs):
        raise AssertionError("torch.jit.load called")

    monkeypatch.setattr(torch.jit, "load", refused)
    with torch.no_grad():
        assert torch.equal(load_clip(clip_archive)(images, text)[0], expected)


def test_crafted_archive_as_backbone_is_refused(crafted):
    path, marker = crafted
    with pytest.raises(CasplError) as err:
        load_backbone(path)
    assert not os.path.exists(marker)
    assert_refused(err, path)


def test_crafted_backbone_is_one_line_from_train_py(crafted, eurosat_root, tmp_path):
    path, marker = crafted
    out = str(tmp_path / "out")
    code = run_cli(["--root", eurosat_root, "--seed", "1", "--trainer", "CoOp",
                    "--dataset-config-file", os.path.join(ROOT, "configs/datasets/eurosat.yaml"),
                    "--config-file", os.path.join(ROOT, "configs/trainers/CoOp/vit_b16_ep50.yaml"),
                    "--output-dir", out, "MODEL.BACKBONE.NAME", path, "INPUT.SIZE", "(32, 32)",
                    "DATALOADER.NUM_WORKERS", "0", "DATASET.NUM_SHOTS", "2"])
    assert code == 2 and not os.path.exists(marker)
    with open(os.path.join(out, "log.txt")) as f:
        last = f.read().strip().splitlines()[-1]
    assert last.startswith(f"error: refusing to load {path}: ") and "defines __setstate__" in last


def test_crafted_archive_as_teacher_is_refused(crafted, eurosat_root, tiny_clip_path, tmp_path):
    path, marker = crafted
    with pytest.raises(CasplError) as err:
        build_trainer(eurosat_root, tiny_clip_path, str(tmp_path / "out"), trainer="CasPL_Boost", config=BOOST_CFG,
                      TRAINER__CASPL__TEACHER=path, **SMALL)
    assert not os.path.exists(marker)
    assert_refused(err, path)


def test_an_archive_the_reader_refuses_is_loaded_by_torch_only_when_openai_released_it(crafted, monkeypatch):
    path, marker = crafted
    monkeypatch.setattr(loader, "OPENAI_SHA256", frozenset({file_sha256(path)}))
    with pytest.raises(CasplError, match="not a valid CLIP checkpoint"):  # torch.jit.load read it: not a CLIP
        load_clip(path)
    assert os.path.exists(marker)


class OpensMarkerWhenUnpickled:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_data_pkl_naming_anything_else_is_refused(clip_archive, tmp_path):
    """Globals outside TorchScript's classes and tensor rebuilding are refused before anything runs."""
    path, marker = str(tmp_path / "forged.pt"), str(tmp_path / "marker")
    with zipfile.ZipFile(clip_archive) as original, zipfile.ZipFile(path, "w") as forged:
        for item in original.infolist():
            data = original.read(item)
            if item.filename.endswith("/data.pkl"):
                data = pickle.dumps({"weight": OpensMarkerWhenUnpickled(marker)}, protocol=2)
            forged.writestr(item, data)
    with pytest.raises(UnreadableTorchScript, match=r"data.pkl names io\.open, which is neither"):
        read_torchscript_weights(path)
    with pytest.raises(CasplError, match=r"refusing to load .*forged\.pt: .*io\.open"):
        load_clip(path)
    assert not os.path.exists(marker)
