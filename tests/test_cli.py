"""train.py end to end, as a user runs it (subprocesses): train, evaluate, resume, errors."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT

pytestmark = pytest.mark.slow


def train_cmd(root, clip_path, out, *extra, epochs=2, shots=2, config="vit_b16_ep50.yaml"):
    return [sys.executable, os.path.join(ROOT, "train.py"), "--root", root, "--seed", "1", "--trainer", "CoOp",
            "--dataset-config-file", os.path.join(ROOT, "configs/datasets/eurosat.yaml"),
            "--config-file", os.path.join(ROOT, "configs/trainers/CoOp", config), "--output-dir", out,
            *extra, "MODEL.BACKBONE.NAME", clip_path, "DATASET.NUM_SHOTS", str(shots),
            "OPTIM.MAX_EPOCH", str(epochs), "INPUT.SIZE", "(32, 32)"]


def run(cmd, check=True):
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def accuracy_line(text):
    return [line for line in text.splitlines() if line.startswith("* accuracy:")][-1]


def test_train_then_eval_only_prints_the_same_accuracy(tmp_path, eurosat_root, tiny_clip_path, capsys):
    out = str(tmp_path / "out")
    proc = run(train_cmd(eurosat_root, tiny_clip_path, out))
    with open(os.path.join(out, "log.txt")) as f:
        log = f.read()
    tail = log.strip().splitlines()[-6:]
    assert tail[0] == "=> result" and tail[1] == "* total: 30"
    assert [line.split(":")[0] for line in tail[2:]] == ["* correct", "* accuracy", "* error", "* macro_f1"]
    # Dassl's line exactly (the reference repos' parse_test_res.py waits for it), elapsed time after it,
    # then the result block they read
    lines = log.splitlines()
    end = lines.index("Finish training")
    assert lines[end + 1].startswith("Elapsed: ") and "* accuracy:" in "\n".join(lines[end:])
    assert "rng_state" in torch.load(os.path.join(out, "prompt_learner", "model.pth.tar-2"), weights_only=True)
    # Dassl's layout: <out>/<model name>/model.pth.tar-<epoch> and a `checkpoint` pointer
    folder = os.path.join(out, "prompt_learner")
    assert sorted(os.listdir(folder)) == ["checkpoint", "model.pth.tar-2"]
    ckpt = torch.load(os.path.join(folder, "model.pth.tar-2"), weights_only=True)
    assert {"state_dict", "epoch", "optimizer", "scheduler"} <= set(ckpt)
    assert ckpt["epoch"] == 2 and list(ckpt["state_dict"]) == ["ctx"]  # no frozen CLIP weights
    assert ckpt["state_dict"]["ctx"].dtype == torch.float32
    assert ckpt["meta"]["backbone"] == tiny_clip_path and len(ckpt["meta"]["classnames"]) == 10

    from conftest import run_cli

    capsys.readouterr()
    assert run_cli(train_cmd(eurosat_root, tiny_clip_path, str(tmp_path / "eval"), "--eval-only", "--model-dir", out,
                             "--load-epoch", "2")[2:]) == 0  # in this process: only its output counts
    assert accuracy_line(capsys.readouterr().out) == accuracy_line(proc.stdout)


def test_killed_run_resumes_to_the_same_prompts(tmp_path, eurosat_root, tiny_clip_path):
    epochs = 8
    whole = str(tmp_path / "whole")
    run(train_cmd(eurosat_root, tiny_clip_path, whole, epochs=epochs, shots=4))

    out = str(tmp_path / "killed")
    cmd = train_cmd(eurosat_root, tiny_clip_path, out, epochs=epochs, shots=4)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pointer = os.path.join(out, "prompt_learner", "checkpoint")
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if os.path.isfile(pointer) and open(pointer).read().strip() not in ("", "model.pth.tar-1"):
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stopped_at = open(pointer).read().strip()
    assert stopped_at != f"model.pth.tar-{epochs}"

    resumed = run(cmd)
    assert "Resuming from" in resumed.stdout
    def final(d):
        return torch.load(os.path.join(d, "prompt_learner", f"model.pth.tar-{epochs}"),
                          weights_only=True)["state_dict"]["ctx"]

    assert torch.equal(final(out), final(whole))
    assert sorted(os.listdir(os.path.join(out, "prompt_learner"))) == ["checkpoint", f"model.pth.tar-{epochs}"]


def test_rerun_of_a_finished_run_says_so(tmp_path, eurosat_root, tiny_clip_path, capsys):
    from conftest import run_cli

    out = str(tmp_path / "out")
    assert run_cli(train_cmd(eurosat_root, tiny_clip_path, out)[2:]) == 0  # in this process: only the output counts
    first = capsys.readouterr().out
    assert run_cli(train_cmd(eurosat_root, tiny_clip_path, out)[2:]) == 0
    again = capsys.readouterr().out
    assert "Training already finished" in again
    assert accuracy_line(again) == accuracy_line(first)


# as a user runs them: a process of its own; the others in this process (a Python process takes
# seconds to start), where an uncaught exception fails the test as a traceback would show
IN_A_PROCESS = ("missing_dataset", "corrupt_image")


@pytest.mark.parametrize("case", ["missing_dataset", "unknown_key", "missing_backbone", "wrong_size",
                                  "unknown_key_in_file", "corrupt_image", "output_dir_is_a_file"])
def test_bad_input_is_one_clear_line(tmp_path, eurosat_root, tiny_clip_path, case, capsys):
    out = str(tmp_path / "out")
    extra, expect = [], ""
    root, clip_path = eurosat_root, tiny_clip_path
    cmd = None
    if case == "missing_dataset":
        root, expect = str(tmp_path / "nowhere"), os.path.join(str(tmp_path / "nowhere"), "eurosat", "2750")
    elif case == "unknown_key":
        extra, expect = ["OPTIM.NOT_A_KEY", "1"], "unknown config key OPTIM.NOT_A_KEY"
    elif case == "missing_backbone":
        clip_path, expect = str(tmp_path / "absent.pt"), "absent.pt"
    elif case == "wrong_size":
        cmd = train_cmd(root, clip_path, out)
        cmd[cmd.index("(32, 32)")] = "(224, 224)"
        expect = "INPUT.SIZE (224, 224) does not match"
    elif case == "corrupt_image":  # read in a DataLoader worker, which wraps the error
        folder = os.path.join(root, "eurosat", "2750", "Forest")
        for name in os.listdir(folder):
            with open(os.path.join(folder, name), "w") as f:
                f.write("not an image")
        cmd = train_cmd(root, clip_path, out) + ["DATALOADER.NUM_WORKERS", "1"]
        expect = "cannot read image " + folder
    elif case == "output_dir_is_a_file":
        open(out, "w").close()
        expect = f"the output folder {out} is a file: choose another --output-dir"
    else:
        bad = tmp_path / "bad.yaml"
        bad.write_text("OPTIM:\n  LR: 0.1\n  LR_TYPO: 2\n")
        cmd = train_cmd(root, clip_path, out, config=str(bad))
        expect = f"unknown config key OPTIM.LR_TYPO in {bad}"
    cmd = cmd or train_cmd(root, clip_path, out) + extra
    if case in IN_A_PROCESS:
        proc = run(cmd, check=False)
        code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    else:
        from conftest import run_cli

        code = run_cli(cmd[2:])  # without the interpreter and train.py
        stdout, stderr = capsys.readouterr()
    assert code != 0
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert expect in lines[0]
    assert "Traceback" not in stdout + stderr


@pytest.mark.parametrize("extra,message", [
    (["--head", "mlp"], "MODEL.HEAD.NAME 'mlp' (set by --head, default '')"),
    (["--source-domains", "photo"], "DATASET.SOURCE_DOMAINS ['photo'] (set by --source-domains, default ())"),
    (["DATALOADER.TRAIN_X.SAMPLER", "RandomDomainSampler"],
     "DATALOADER.TRAIN_X.SAMPLER 'RandomDomainSampler' (set on the command line, default 'RandomSampler')"),
    (["INPUT.COLORJITTER_B", "0.8"], "INPUT.COLORJITTER_B 0.8 (set on the command line, default 0.4)"),
])
def test_dassl_keys_caspl_does_not_read_are_refused_not_ignored(tmp_path, eurosat_root, tiny_clip_path, extra,
                                                                 message, capsys):
    from conftest import run_cli

    out = str(tmp_path / "o")
    argv = train_cmd(eurosat_root, tiny_clip_path, out)[2:]
    flags = extra if extra[0].startswith("--") else []  # flags first (nargs="+" takes what follows)
    assert run_cli(flags + argv + [x for x in extra if x not in flags]) == 2
    assert message in capsys.readouterr().err
    assert os.listdir(out) == ["log.txt"]  # refused after the first step, before anything is saved
    # their defaults (what a reference YAML writes) load as before
    assert run_cli(argv + ["DATALOADER.TRAIN_X.SAMPLER", "RandomSampler", "TEST.EVALUATOR", "Classification",
                           "OPTIM.MAX_EPOCH", "1", "TEST.NO_TEST", "True"]) == 0


def test_a_write_a_killed_run_left_unfinished_is_removed_by_the_next_run(tmp_path, eurosat_root, tiny_clip_path,
                                                                       capsys):
    """Only caspl's own temporary files, and only those of processes that are gone."""
    from caspl.utils.io import PARTIAL
    from conftest import build_trainer

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    out = tmp_path / "out"
    folder = out / "prompt_learner"
    folder.mkdir(parents=True)
    left = folder / f"{PARTIAL}{int(gone.stdout)}-abc123-model.pth.tar-1"
    live = folder / f"{PARTIAL}{os.getpid()}-def456-model.pth.tar-1"  # a write in progress elsewhere
    other = folder / ".tmp-not-ours"
    for f in (left, live, other):
        f.write_bytes(b"half a checkpoint")
    trainer = build_trainer(eurosat_root, tiny_clip_path, str(out), OPTIM__MAX_EPOCH=1)
    trainer.train()
    assert f"Removed {left}, a write that a killed run left unfinished" in capsys.readouterr().out
    assert not left.exists() and live.exists() and other.exists()
    assert (folder / "model.pth.tar-1").is_file()
