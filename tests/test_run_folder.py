"""One output folder, one run: a second run into a folder in use is refused, naming the run
that holds it, and changes nothing there; a killed holder does not block the next run; a
resume continues only a run trained with its settings (caspl/utils/lock.py,
caspl/engine/checkpoints.py)."""
import os
import signal
import socket
import subprocess
import sys

import pytest
import torch

from caspl import CasplError
from caspl.config import get_cfg_default
from caspl.engine import Trainer
from caspl.engine.checkpoints import RESUMABLE_KEYS, resume_conflicts
from caspl.utils import distributed
from caspl.utils.lock import LOCK_FILE, lock_run_folder, unlock_run_folder
from conftest import ROOT, build_trainer, run_cli, snapshot

# a process that holds a folder's lock until it is killed
HOLDER = ("import sys, time; from caspl.utils.lock import lock_run_folder; lock_run_folder(sys.argv[1]); "
          "print('held', flush=True); time.sleep(600)")


class Killed(Exception):
    """Stands for a kill in the middle of a run."""


def argv(root, clip_path, out, seed=1, workers=0, print_freq=1000, extra=()):
    return ["--root", root, "--seed", str(seed), "--trainer", "CoOp", *extra,
            "--dataset-config-file", os.path.join(ROOT, "configs/datasets/eurosat.yaml"),
            "--config-file", os.path.join(ROOT, "configs/trainers/CoOp/vit_b16_ep50.yaml"), "--output-dir", out,
            "MODEL.BACKBONE.NAME", clip_path, "INPUT.SIZE", "(32, 32)", "DATASET.NUM_SHOTS", "1",
            "TRAINER.COOP.N_CTX", "2", "OPTIM.MAX_EPOCH", "2", "TEST.NO_TEST", "True",
            "DATALOADER.NUM_WORKERS", str(workers), "TRAIN.PRINT_FREQ", str(print_freq)]


def error_line(capsys):
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_a_second_run_into_a_folder_in_use_is_refused_and_a_killed_holder_blocks_nothing(
        tmp_path, eurosat_root, tiny_clip_path, capsys):
    out = str(tmp_path / "out")
    assert run_cli(argv(eurosat_root, tiny_clip_path, out)) == 0
    assert not os.path.exists(os.path.join(out, LOCK_FILE))  # a run that ended leaves no lock file
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, out], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(out)
        capsys.readouterr()
        for extra in ((), ("--eval-only",)):  # training or evaluating: both write there
            assert run_cli(argv(eurosat_root, tiny_clip_path, out, seed=2, extra=extra)) == 2
            line = error_line(capsys)
            assert f"another run is using the output folder {out} (pid {holder.pid} on {socket.gethostname()}, " \
                   "started " in line
            assert f"-c {out}); wait for it to end, or give this run another --output-dir" in line
            assert snapshot(out) == before  # not even the log
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    assert os.path.exists(os.path.join(out, LOCK_FILE))  # the killed holder's file, which no process locks
    assert run_cli(argv(eurosat_root, tiny_clip_path, out)) == 0
    assert "Training already finished" in open(os.path.join(out, "log.txt")).read()


def test_under_torchrun_rank_0_holds_the_lock_for_the_run(tmp_path, monkeypatch):
    out = str(tmp_path / "out")
    lock_run_folder(out)  # rank 0 of a run
    try:
        with pytest.raises(CasplError, match=f"another run is using the output folder {out} \\(pid {os.getpid()} "):
            lock_run_folder(out)  # rank 0 of another run
        monkeypatch.setattr(distributed, "is_main", lambda: False)
        lock_run_folder(out)  # another process of the first run
    finally:
        unlock_run_folder()
    assert os.listdir(out) == []


def test_a_killed_run_resumes_only_with_its_own_settings(tmp_path, eurosat_root, tiny_clip_path, monkeypatch,
                                                         capsys):
    out = str(tmp_path / "out")
    folder = os.path.join(out, "prompt_learner")

    def killed_in_epoch_2(self):
        if self.epoch == 1:
            raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "before_epoch", killed_in_epoch_2)
        with pytest.raises(Killed):
            run_cli(argv(eurosat_root, tiny_clip_path, out))
    assert sorted(os.listdir(folder)) == ["checkpoint", "model.pth.tar-1"]
    saved = snapshot(folder)

    capsys.readouterr()
    assert run_cli(argv(eurosat_root, tiny_clip_path, out, seed=2)) == 2
    line = error_line(capsys)
    assert line == (f"error: cannot resume from {os.path.join(folder, 'model.pth.tar-1')}: it was trained with other "
                    "settings (SEED 1 there, 2 in this run); run with its settings to resume it, or give this run "
                    "another --output-dir")
    assert snapshot(folder) == saved

    # other loading and logging settings: the same run, resumed
    assert run_cli(argv(eurosat_root, tiny_clip_path, out, workers=1, print_freq=5)) == 0
    assert "Resuming from" in capsys.readouterr().out
    assert sorted(os.listdir(folder)) == ["checkpoint", "model.pth.tar-2"]

    # re-running the finished run evaluates it: a resume too
    assert run_cli(argv(eurosat_root, tiny_clip_path, out, seed=2)) == 2
    assert "(SEED 1 there, 2 in this run)" in error_line(capsys)


def test_a_checkpoint_without_its_config_resumes_with_a_note(tmp_path, eurosat_root, tiny_clip_path, capsys):
    out = str(tmp_path / "out")
    opts = dict(TRAINER__COOP__N_CTX=2, DATASET__NUM_SHOTS=1, OPTIM__MAX_EPOCH=2)
    build_trainer(eurosat_root, tiny_clip_path, out, **opts).save_model(1)
    path = os.path.join(out, "prompt_learner", "model.pth.tar-1")
    ckpt = torch.load(path, weights_only=True)
    del ckpt["meta"]["config"]
    torch.save(ckpt, path)
    resumed = build_trainer(eurosat_root, tiny_clip_path, out, **opts)
    capsys.readouterr()
    resumed.resume()
    assert resumed.start_epoch == 1
    assert f"Note: {path} records no config; resuming without checking that this run's settings are its own" \
           in capsys.readouterr().out


def test_what_a_resume_may_change():
    recorded = "OPTIM:\n  LR: 0.002\nTEST:\n  FINAL_MODEL: last_step\n  NO_TEST: false\nTRAIN:\n  PRINT_FREQ: 10\n"
    assert resume_conflicts(recorded, recorded.replace("10", "5").replace("false", "true")) == []
    assert resume_conflicts(recorded, recorded.replace("0.002", "0.01")) == [("OPTIM.LR", 0.002, 0.01)]
    # with the best-val model, NO_TEST also decides whether each epoch is validated
    best_val = recorded.replace("last_step", "best_val")
    assert resume_conflicts(best_val, best_val.replace("false", "true")) == [("TEST.NO_TEST", False, True)]
    assert resume_conflicts(recorded, recorded + "SEED: 1\n") == []  # a key one side lacks: another version


def test_the_resumable_keys_are_config_keys():
    defaults = get_cfg_default()
    for key, reason in RESUMABLE_KEYS:
        node = defaults
        for part in key.split("."):
            node = node[part]
        assert reason
