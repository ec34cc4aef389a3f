"""Prompt interpretation: the nearest words of a context initialised from known words are
those words, read from a real CoOp checkpoint."""
import glob
import os
import sys

from conftest import ROOT, run_cli

sys.path.insert(0, os.path.join(ROOT, "tools"))


def test_context_initialised_from_words_finds_those_words(tmp_path, eurosat_root, tiny_clip_path, capsys):
    import interpret_prompt

    out = str(tmp_path / "coop")
    assert run_cli(["--root", eurosat_root, "--seed", "1", "--trainer", "CoOp",
                    "--dataset-config-file", os.path.join(ROOT, "configs/datasets/eurosat.yaml"),
                    "--config-file", os.path.join(ROOT, "configs/trainers/CoOp/vit_b16_ep50_ctxv1.yaml"),
                    "--output-dir", out, "MODEL.BACKBONE.NAME", tiny_clip_path, "INPUT.SIZE", "(32, 32)",
                    "DATASET.NUM_SHOTS", "1", "OPTIM.MAX_EPOCH", "1", "OPTIM.LR", "0.0", "OPTIM.WARMUP_EPOCH", "0",
                    "DATALOADER.NUM_WORKERS", "0", "TRAINER.COOP.CTX_INIT", "a photo of dog"]) == 0
    ckpt = glob.glob(os.path.join(out, "*", "model.pth.tar-1"))[0]
    capsys.readouterr()
    assert interpret_prompt.main([ckpt, "--topk", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split(":", 1)[1].strip() for line in lines if line.startswith("    ") or line.lstrip()[:1].isdigit()]
    assert [r.split(" (")[0] for r in rows] == ["a", "photo", "of", "dog"]
    distances = [[float(w.split("(")[1].rstrip(")")) for w in r.split(", ")] for r in rows]
    assert all(d[0] < 1e-3 < d[1] for d in distances)  # on the word's own embedding, others far
    assert interpret_prompt.main([ckpt, "--key", "nope"]) == 2
    assert "no tensor 'nope'" in capsys.readouterr().err
