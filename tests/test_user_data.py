"""Your own data from the CLI: ImageFolder, extra unlabeled folders, bad images and split files."""
import json
import os

import numpy as np
import pytest

from caspl.cli import main
from caspl.testing import class_image
from conftest import ROOT, build_trainer

CLASSES = ["red_fox", "blue_whale", "green_frog", "snow_owl"]


def make_folder(path, per_class=6, classes=CLASSES):
    rng = np.random.default_rng(0)
    for label, name in enumerate(classes):
        os.makedirs(os.path.join(path, name))
        for i in range(per_class):
            class_image(label, len(classes), rng).save(os.path.join(path, name, f"{i}.png"))
    open(os.path.join(path, "README.txt"), "w").write("not a class")
    return path


def cli(tmp_path, out, *opts, trainer="CoOp", config="configs/trainers/CoOp/vit_b16_ep50.yaml", extra=()):
    argv = ["--root", str(tmp_path), "--seed", "1", "--trainer", trainer, "--config-file", os.path.join(ROOT, config),
            "--output-dir", str(tmp_path / out), *extra,
            "DATASET.NAME", "ImageFolder", "DATASET.DIR", "mine", "INPUT.SIZE", "(32, 32)",
            "DATALOADER.NUM_WORKERS", "0", *opts]
    return main(argv)


def test_image_folder_end_to_end(tmp_path, tiny_clip_path, capsys):
    make_folder(str(tmp_path / "mine"))
    code = cli(tmp_path, "run", "MODEL.BACKBONE.NAME", tiny_clip_path, "OPTIM.MAX_EPOCH", "1", "DATASET.NUM_SHOTS", "2")
    assert code == 0
    out = capsys.readouterr().out
    assert "# classes  4" in out and "* accuracy:" in out
    split = json.load(open(tmp_path / "mine" / "split.json"))
    assert sorted({c for _, _, c in split["train"]}) == sorted(CLASSES)
    # per class: 6 images -> 3 train, 1 val (round(1.2)), 2 test; labels follow the sorted folder names
    assert [sum(1 for _, y, _ in split[k] if y == 0) for k in ("train", "val", "test")] == [3, 1, 2]
    assert {c for _, y, c in split["train"] if y == 0} == {"blue_whale"}
    # the written split is reused, unchanged
    mtime = os.path.getmtime(tmp_path / "mine" / "split.json")
    assert cli(tmp_path, "again", "MODEL.BACKBONE.NAME", tiny_clip_path, "OPTIM.MAX_EPOCH", "1",
               "DATASET.NUM_SHOTS", "2") == 0
    assert os.path.getmtime(tmp_path / "mine" / "split.json") == mtime
    assert "Writing a seeded" not in capsys.readouterr().out


def test_image_folder_zero_shot_uses_the_template_key(tmp_path, tiny_clip_path):
    make_folder(str(tmp_path / "mine"))
    t = build_trainer(str(tmp_path), tiny_clip_path, str(tmp_path / "o"), trainer="ZeroshotCLIP",
                      config="configs/trainers/ZeroshotCLIP/vit_b16.yaml", DATASET__NAME="ImageFolder",
                      DATASET__DIR="mine", DATASET__TEMPLATE="a drawing of a {}.")
    assert t.dm.dataset.template == "a drawing of a {}."
    assert t.classnames == sorted(CLASSES)


def test_unlabeled_folders_are_listed(tmp_path, tiny_clip_path, capsys):
    make_folder(str(tmp_path / "mine"))
    make_folder(str(tmp_path / "extra" / "a"), per_class=2)
    os.makedirs(tmp_path / "extra2" / ".hidden")
    class_image(0, 2, np.random.default_rng(1)).save(tmp_path / "extra2" / "x.jpg")
    class_image(0, 2, np.random.default_rng(1)).save(tmp_path / "extra2" / ".hidden" / "y.jpg")
    code = cli(tmp_path, "u", "MODEL.BACKBONE.NAME", tiny_clip_path, "DATASET.UNLABELED_DIRS",
               f"['extra', '{tmp_path / 'extra2'}']", extra=["--no-train"])
    assert code == 0
    assert "# train_u (unlabeled)  9" in capsys.readouterr().out
    t = build_trainer(str(tmp_path), tiny_clip_path, str(tmp_path / "o"), DATASET__NAME="ImageFolder",
                      DATASET__DIR="mine", DATASET__UNLABELED_DIRS=["extra", str(tmp_path / "extra2")],
                      DATALOADER__TRAIN_X__BATCH_SIZE=4)
    assert all(d.label == -1 for d in t.dm.dataset.train_u)
    batch = next(iter(t.dm.batches(t.dm.make_train_loader(t.dm.dataset.train_u))))
    assert batch["img"].shape == (4, 3, 32, 32)
    assert cli(tmp_path, "u2", "MODEL.BACKBONE.NAME", tiny_clip_path, "DATASET.UNLABELED_DIRS", "['nowhere']",
               extra=["--no-train"]) == 2
    assert "unlabeled image folder not found" in capsys.readouterr().err


def test_unreadable_images_stop_or_are_skipped_and_counted(tmp_path, tiny_clip_path, capsys):
    make_folder(str(tmp_path / "mine"))
    opts = ["MODEL.BACKBONE.NAME", tiny_clip_path, "OPTIM.MAX_EPOCH", "1"]
    assert cli(tmp_path, "first", *opts, extra=["--no-train"]) == 0  # writes the split
    split = json.load(open(tmp_path / "mine" / "split.json"))
    bad = [p for p, _, _ in split["train"][:2]]
    for p in bad:
        open(tmp_path / "mine" / p, "w").write("broken")
    capsys.readouterr()
    assert cli(tmp_path, "stop", *opts) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot read image" in err[0] and "DATASET.SKIP_BAD_IMAGES" in err[0]
    assert cli(tmp_path, "skip", *opts, "DATASET.SKIP_BAD_IMAGES", "True") == 0
    out = capsys.readouterr().out
    for p in bad:
        assert f"skipping unreadable image {tmp_path / 'mine' / p}" in out
    assert "(2 skipped so far)" in out and "* accuracy:" in out


def test_split_file_with_missing_images_says_how_many(tmp_path, tiny_clip_path, capsys):
    make_folder(str(tmp_path / "mine"))
    split = {"train": [["red_fox/0.png", 0, "red_fox"], ["red_fox/77.png", 0, "red_fox"]],
             "val": [], "test": [["gone/1.png", 0, "red_fox"], ["gone/2.png", 0, "red_fox"]]}
    json.dump(split, open(tmp_path / "mine" / "split.json", "w"))
    assert cli(tmp_path, "m", "MODEL.BACKBONE.NAME", tiny_clip_path, extra=["--no-train"]) == 2
    err = capsys.readouterr().err
    assert "lists 3 images that are not on disk" in err and "red_fox/77.png, gone/1.png, gone/2.png" in err


@pytest.mark.parametrize("opts,message", [
    ((), None),
    (("DATASET.SPLIT_RATIOS", "(0.5, 0.5, 0.5)"), "must be three shares"),
])
def test_image_folder_config_errors(tmp_path, tiny_clip_path, capsys, opts, message):
    make_folder(str(tmp_path / "mine"))
    argv = ["MODEL.BACKBONE.NAME", tiny_clip_path, *opts]
    if message is None:  # no DATASET.DIR
        code = main(["--root", str(tmp_path), "--trainer", "CoOp", "--output-dir", str(tmp_path / "o"),
                     "DATASET.NAME", "ImageFolder", *argv])
        message = "ImageFolder needs DATASET.DIR"
    else:
        code = cli(tmp_path, "o", *argv, extra=["--no-train"])
    assert code == 2 and message in capsys.readouterr().err
