"""Bad files and folders through the command line: each is one line (`error: ...`, exit 2)
naming the file or folder and what to do, and leaves the folders as they were; a damaged
cache is rebuilt with a note; a full disk loses nothing, and the run resumes afterwards."""
import errno
import os
import shutil
import tempfile
import threading

import pytest
import torch

from caspl.testing import make_eurosat
from conftest import ROOT, run_cli, snapshot
from test_caspl import BOOST_CFG, SMALL, teacher_path  # noqa: F401 (fixture)
from trainers.caspl_artifacts import main as export_boost  # what python tools/export_boost.py runs

COOP = "configs/trainers/CoOp/vit_b16_ep50.yaml"
ENOSPC = os.strerror(errno.ENOSPC)


def argv(root, out, clip, *opts, trainer="CoOp", config=COOP, flags=()):
    return ["--root", str(root), "--seed", "1", "--trainer", trainer, *flags,
            "--dataset-config-file", os.path.join(ROOT, "configs/datasets/eurosat.yaml"),
            "--config-file", os.path.join(ROOT, config), "--output-dir", str(out),
            "MODEL.BACKBONE.NAME", clip, "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0",
            "OPTIM.MAX_EPOCH", "1", *opts]


def coop(root, out, clip, *opts, trainer="CoOp", flags=()):
    return argv(root, out, clip, "DATASET.NUM_SHOTS", "2", *opts, trainer=trainer, flags=flags)


def tree(folder):
    """Every file (by content) and folder below `folder`."""
    folders = {os.path.relpath(os.path.join(current, d), folder) + "/"
               for current, dirs, _ in os.walk(folder) for d in dirs}
    return {**snapshot(folder), **dict.fromkeys(folders, "folder")}


def one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    return err[0]


@pytest.fixture
def root(tmp_path):
    return make_eurosat(str(tmp_path / "data"), per_class=6)


@pytest.fixture(scope="module")
def phase1(tmp_path_factory, tiny_clip_path, teacher_path):  # noqa: F811 (the fixture imported above)
    """A finished CasPL_Boost run on one image per class, with its teacher cache: (data root, run)."""
    base = tmp_path_factory.mktemp("phase1")
    root = make_eurosat(str(base / "data"), per_class=6)
    out = base / "boost"
    opts = [x for k, v in SMALL.items() for x in (k.replace("__", "."), str(v))]
    assert run_cli(argv(root, out, tiny_clip_path, "TRAINER.CASPL.TEACHER", teacher_path,
                        "TRAINER.CASPL.FEWSHOT_DATA", "True", "DATASET.NUM_SHOTS", "1",
                        "TRAINER.CASPL.TEACHER_CACHE", "True", "TRAINER.CASPL.CACHE_VIEWS", "1", *opts,
                        trainer="CasPL_Boost", config=BOOST_CFG)) == 0
    return root, out


# ---------------------------------------------------------------------------- data folders

@pytest.mark.parametrize("dataset", ["EuroSAT", "ImageFolder"])
def test_empty_class_folder_is_refused_and_nothing_written(tmp_path, tiny_clip_path, capsys, dataset):
    root = make_eurosat(str(tmp_path / "data"), per_class=6, split_file=False)
    empty = os.path.join(root, "eurosat", "2750", "River")
    for name in os.listdir(empty):
        os.remove(os.path.join(empty, name))
    before = tree(root)
    opts = ("DATASET.NAME", "ImageFolder", "DATASET.DIR", "eurosat/2750") if dataset == "ImageFolder" else ()
    assert run_cli(coop(root, tmp_path / "out", tiny_clip_path, *opts)) == 2
    line = one_error_line(capsys)
    assert f"the class folder {empty} holds no images" in line and "add its images, or remove the folder" in line
    assert tree(root) == before  # no split file, no few-shot cache: the next run is not stuck with them


# ---------------------------------------------------------------------------- a full disk

def test_full_disk_at_a_checkpoint_loses_nothing_and_the_run_resumes(tmp_path, root, tiny_clip_path, capsys,
                                                                     monkeypatch):
    save = torch.save

    def save_on_a_full_disk(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("epoch") == 2:  # the second epoch's checkpoint
            f.write(b"PK\x03\x04 the start of a checkpoint")
            try:  # what torch.save raises when its file's write fails: the OSError behind a RuntimeError
                raise OSError(errno.ENOSPC, ENOSPC)
            except OSError:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None
        return save(obj, f, *args, **kwargs)

    out = tmp_path / "out"
    command = coop(root, out, tiny_clip_path, "OPTIM.MAX_EPOCH", "2")
    monkeypatch.setattr(torch, "save", save_on_a_full_disk)
    assert run_cli(command) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: no space left on device (ENOSPC) writing {out / 'prompt_learner'}/model.pth.tar-2:")
    assert "free space" in line
    assert sorted(os.listdir(out / "prompt_learner")) == ["checkpoint", "model.pth.tar-1"]  # no partial file
    assert (out / "prompt_learner" / "checkpoint").read_text() == "model.pth.tar-1\n"
    monkeypatch.undo()
    assert run_cli(command) == 0
    assert "Resuming from" in (out / "log.txt").read_text() and (out / "results.json").is_file()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full, whose writes fail with ENOSPC")
def test_full_disk_for_the_log_is_one_line(tmp_path, root, tiny_clip_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    os.symlink("/dev/full", out / "log.txt")
    assert run_cli(coop(root, out, tiny_clip_path)) == 2
    assert one_error_line(capsys).startswith(f"error: no space left on device (ENOSPC) writing {out / 'log.txt'}:")
    assert not (out / "prompt_learner").exists() and not (out / "tensorboard").exists()  # stopped at the start


def test_full_disk_for_tensorboard_is_one_line(tmp_path, root, tiny_clip_path, capsys, monkeypatch):
    from tensorboard.summary.writer.record_writer import RecordWriter

    def write_on_a_full_disk(self, data):
        raise OSError(errno.ENOSPC, ENOSPC)

    thread_errors = []
    monkeypatch.setattr(threading, "excepthook", thread_errors.append)
    monkeypatch.setattr(RecordWriter, "write", write_on_a_full_disk)  # called in tensorboard's writer thread
    out = tmp_path / "out"
    assert run_cli(coop(root, out, tiny_clip_path)) == 2
    assert one_error_line(capsys).startswith(f"error: no space left on device (ENOSPC) writing {out / 'tensorboard'}:")
    assert thread_errors == []  # the thread's traceback is not printed on top
    assert not (out / "prompt_learner").exists()


def test_full_disk_for_the_data_caches_is_a_warning(tmp_path, tiny_clip_path, capsys, monkeypatch):
    root = make_eurosat(str(tmp_path / "data"), per_class=6, split_file=False)
    mkstemp = tempfile.mkstemp

    def mkstemp_on_a_full_data_disk(*args, dir=None, **kwargs):
        if dir.startswith(root):
            raise OSError(errno.ENOSPC, ENOSPC)
        return mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr("tempfile.mkstemp", mkstemp_on_a_full_data_disk)
    before = tree(root)
    assert run_cli(coop(root, tmp_path / "out", tiny_clip_path)) == 0
    out = capsys.readouterr().out
    for what in ("split file", "few-shot cache"):
        assert f"could not write {what} " in out and f"({ENOSPC}); continuing without it" in out
    assert tree(root) == before  # not even the empty split_fewshot folder


# ---------------------------------------------------------------------------- paths

def test_paths_with_spaces_and_bytes_that_are_not_utf8(tmp_path, tiny_clip_path):
    base = os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9 data")
    root, out = make_eurosat(os.path.join(base, "my data"), per_class=6), os.path.join(base, "run s")
    assert run_cli(coop(root, out, tiny_clip_path)) == 0
    evaluated = os.path.join(base, "eval uated")
    assert run_cli(coop(root, evaluated, tiny_clip_path, flags=["--eval-only", "--model-dir", out])) == 0
    with open(os.path.join(evaluated, "log.txt"), "rb") as f:
        log = f.read()
    assert os.fsencode(os.path.join(out, "prompt_learner", "model.pth.tar-1")) in log and b"* accuracy:" in log
    assert os.path.isfile(os.path.join(evaluated, "results.json"))


# ---------------------------------------------------------------------------- checkpoints

def cut_short(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


@pytest.mark.parametrize("keep,says", [(0, "the file is empty"), (0.5, "the file ends too early")])
def test_cut_short_checkpoint_is_one_line(tmp_path, root, tiny_clip_path, capsys, keep, says):
    out = tmp_path / "out"
    assert run_cli(coop(root, out, tiny_clip_path)) == 0
    ckpt = out / "prompt_learner" / "model.pth.tar-1"
    cut_short(ckpt, keep)
    before = tree(out / "prompt_learner")
    runs = {"a re-run": coop(root, out, tiny_clip_path),
            "--eval-only --model-dir": coop(root, tmp_path / "ev", tiny_clip_path,
                                            flags=["--eval-only", "--model-dir", str(out)]),
            "BOOST_CKPT": coop(root, tmp_path / "b", tiny_clip_path, "TRAINER.CASPL.BOOST_CKPT", str(ckpt),
                               trainer="CasPL_CoOp")}
    for command in runs.values():
        capsys.readouterr()
        assert run_cli(command) == 2
        line = one_error_line(capsys)
        assert f"cannot read checkpoint {ckpt}: {says}" in line and "replace it with a whole copy" in line
    assert tree(out / "prompt_learner") == before


def test_empty_checkpoint_pointer_is_one_line(tmp_path, root, tiny_clip_path, capsys):
    out = tmp_path / "out"
    assert run_cli(coop(root, out, tiny_clip_path)) == 0
    pointer = out / "prompt_learner" / "checkpoint"
    pointer.write_text("")
    capsys.readouterr()
    assert run_cli(coop(root, tmp_path / "ev", tiny_clip_path, flags=["--eval-only", "--model-dir", str(out)])) == 2
    assert one_error_line(capsys) == (f"error: {pointer} is empty: it names the last checkpoint of "
                                      f"{out / 'prompt_learner'} (model.pth.tar-N); write that name into it, or "
                                      "delete it")


# ---------------------------------------------------------------------------- CasPL

def test_damaged_teacher_cache_is_rebuilt_with_a_note(tmp_path, phase1, tiny_clip_path, teacher_path):  # noqa: F811
    root, done = phase1
    out = tmp_path / "boost"
    shutil.copytree(done, out)
    shutil.rmtree(out / "BoostPrompts")  # so that the run trains (and fills the cache) again
    cache = out / "teacher_cache.pt"
    cut_short(cache, 0.5)
    opts = [x for k, v in SMALL.items() for x in (k.replace("__", "."), str(v))]
    assert run_cli(argv(root, out, tiny_clip_path, "TRAINER.CASPL.TEACHER", teacher_path,
                        "TRAINER.CASPL.FEWSHOT_DATA", "True", "DATASET.NUM_SHOTS", "1",
                        "TRAINER.CASPL.TEACHER_CACHE", "True", "TRAINER.CASPL.CACHE_VIEWS", "1", *opts,
                        trainer="CasPL_Boost", config=BOOST_CFG)) == 0
    assert f"Teacher cache {cache} is not a cache caspl can read" in (out / "log.txt").read_text()
    rebuilt, first = (torch.load(path, weights_only=True) for path in (cache, done / "teacher_cache.pt"))
    assert rebuilt["filled"].any() and torch.equal(rebuilt["filled"], first["filled"])
    assert torch.equal(rebuilt["features"], first["features"])


@pytest.mark.parametrize("empty", ["", '""', "''"])
def test_empty_boosting_prompts_are_refused(tmp_path, root, tiny_clip_path, capsys, empty):
    assert run_cli(coop(root, tmp_path / "o", tiny_clip_path, "TRAINER.CASPL.BOOST_CKPT", empty,
                        trainer="CasPL_CoOp")) == 2
    assert "TRAINER.CASPL.BOOST_CKPT is empty" in one_error_line(capsys)


def test_artifact_whose_metadata_contradicts_its_tensors(tmp_path, phase1, tiny_clip_path, capsys):
    root, run = phase1
    shared = tmp_path / "eurosat.pt"
    assert export_boost([str(run), str(shared)]) == 0
    artifact = torch.load(shared, weights_only=True)
    artifact["boost"]["n_ctx_text"] = 4  # the tensors hold 3 tokens
    torch.save(artifact, shared)
    capsys.readouterr()
    assert run_cli(coop(root, tmp_path / "o", tiny_clip_path, "TRAINER.CASPL.BOOST_CKPT", str(shared),
                        trainer="CasPL_CoOp")) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: {shared} contradicts itself: its metadata says n_ctx_text 4,")
    assert "text.ctx would have shape (4, 64), but it holds (3, 64)" in line
