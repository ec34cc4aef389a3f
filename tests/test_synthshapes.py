"""SynthShapes: the designed label order (new classes are colours base never shows), the two
lighting domains, the renderer (deterministic, shapes inside the image, both attributes
visible), the generated folder (deterministic, counted, reused, never half-made) and a
zero-shot run."""
import colorsys
import hashlib
import json
import os
from collections import Counter

import numpy as np
import pytest
from PIL import Image

import datasets.synthshapes as S
from caspl import CasplError
from caspl.clip import encode
from caspl.config import get_cfg_default
from caspl.registry import DATASET_REGISTRY
from conftest import zero_shot_eval


def build(root, subsample="all", shots=-1):
    cfg = get_cfg_default()
    cfg.DATASET.ROOT, cfg.DATASET.NAME = root, "SynthShapes"
    cfg.DATASET.NUM_SHOTS, cfg.DATASET.SUBSAMPLE_CLASSES, cfg.SEED = shots, subsample, 1
    return DATASET_REGISTRY.get("SynthShapes")(cfg)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """A root in which constructing the dataset generated it (once for this module)."""
    root = str(tmp_path_factory.mktemp("synth"))
    build(root)
    return root


def sha1(path):
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


# ----------------------------------------------------------------------------- classes

def hue(rgb):
    return colorsys.rgb_to_hls(*(np.asarray(rgb, dtype=np.float64) / 255))[0] * 360


def test_words_are_single_clip_tokens_and_the_palette_runs_around_the_colour_wheel():
    assert len(S.COLOURS) == len(set(S.COLOURS)) == 8 and len(S.SHAPES) == len(set(S.SHAPES)) == 6
    for word in S.COLOURS + S.SHAPES:
        assert len(encode(word)) == 1, word
    hues = [hue(S.PALETTE[c]) for c in S.COLOURS]
    hues[0] -= 360  # red sits just below 360 degrees
    assert hues == sorted(hues) and hues[-1] - hues[0] < 360


def test_label_order_is_colour_major_so_new_classes_have_colours_base_never_shows():
    names = S.class_names()
    assert len(names) == len(set(names)) == len(S.COLOURS) * len(S.SHAPES) == 48
    pairs = [n.split(" ") for n in names]
    assert all(len(p) == 2 and p[0] in S.COLOURS and p[1] in S.SHAPES for p in pairs)
    m = (len(names) + 1) // 2
    base, new = pairs[:m], pairs[m:]
    assert [c for c in dict.fromkeys(c for c, _ in base)] == ["red", "orange", "yellow", "green"]
    assert [c for c in dict.fromkeys(c for c, _ in new)] == ["teal", "blue", "purple", "pink"]
    for half in (base, new):
        assert Counter(s for _, s in half) == {s: 4 for s in S.SHAPES}


# ----------------------------------------------------------------------------- rendering

def test_render_is_deterministic_sized_and_inside_the_image():
    one = S.render("red", "star", np.random.default_rng(5))
    assert one.mode == "RGB" and one.size == (64, 64)
    assert one.tobytes() == S.render("red", "star", np.random.default_rng(5)).tobytes()
    assert one.tobytes() != S.render("red", "star", np.random.default_rng(6)).tobytes()
    assert S.render("blue", "ring", np.random.default_rng(0), size=96).size == (96, 96)
    rng = np.random.default_rng(0)
    extents = []
    for k in range(120):  # saturated colours: the backdrop is greyish, so saturation marks the shape
        a = np.asarray(S.render(("red", "green", "blue")[k % 3], S.SHAPES[k % 6], rng,
                                domain=S.DOMAINS[k % 2]), dtype=np.int16)
        sat = (a.max(-1) - a.min(-1)) > 80
        assert not sat[:2].any() and not sat[-2:].any() and not sat[:, :2].any() and not sat[:, -2:].any()
        ys, xs = np.nonzero(sat)
        extents.append(max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) / 64)
    assert 0.22 < min(extents) and max(extents) < 0.75 and max(extents) - min(extents) > 0.25
    with pytest.raises(ValueError, match="domain"):
        S.render("red", "circle", np.random.default_rng(7), domain="night")


def test_the_lamp_moves_each_palette_hue_halfway_to_the_next():
    hues = [hue(S.PALETTE[c]) for c in S.COLOURS]
    for k, h in enumerate(hues):
        nxt = hues[(k + 1) % len(hues)]
        gap = (nxt - h) % 360
        assert S.lamp_hue(h) == pytest.approx((h + S.LAMP_SHIFT * gap) % 360, abs=1e-6)
        assert hue(S.LAMP_PALETTE[S.COLOURS[k]]) == pytest.approx((h + gap / 2) % 360, abs=1.5)
    # monotone between palette hues, so the lamp never swaps two colours
    grid = np.linspace(hues[1], hues[2], 20)
    assert np.all(np.diff([S.lamp_hue(h) for h in grid]) > 0)


def test_lamp_and_daylight_photos_of_one_scene():
    """The same rng state gives the same object in both domains; under the lamp the object's
    hue is the lamp's and the grey backdrop takes a greenish cast."""
    day = np.asarray(S.render("blue", "circle", np.random.default_rng(7), domain="daylight"), dtype=np.float32)
    lamp = np.asarray(S.render("blue", "circle", np.random.default_rng(7), domain="lamp"), dtype=np.float32)
    shape = ((day.max(-1) - day.min(-1)) > 80) & ((lamp.max(-1) - lamp.min(-1)) > 80)
    assert shape.sum() > 100  # the fill lands on the same pixels
    assert hue(day[shape].mean(0)) == pytest.approx(hue(S.PALETTE["blue"]), abs=6)
    assert hue(lamp[shape].mean(0)) == pytest.approx(hue(S.LAMP_PALETTE["blue"]), abs=6)
    corner_day, corner_lamp = day[:6, :6].reshape(-1, 3).mean(0), lamp[:6, :6].reshape(-1, 3).mean(0)
    assert corner_lamp[1] > corner_lamp[0] > corner_lamp[2]
    assert corner_lamp / corner_day == pytest.approx(np.array(S.LAMP_BACKDROP), abs=0.06)


# ----------------------------------------------------------------------------- the generated folder

def test_generated_split_counts_and_layout(generated):
    ds = build(generated)
    names = S.class_names()
    assert ds.classnames == names and ds.template == "a photo of a {}."
    expected = {"train": 60, "val": 8, "test": 30}
    assert S.SPLIT_SIZES == expected
    for key, items in (("train", ds.train_x), ("val", ds.val), ("test", ds.test)):
        assert Counter(d.label for d in items) == {y: expected[key] for y in range(len(names))}
        for d in items:
            assert d.classname == names[d.label]
            assert os.path.dirname(os.path.relpath(d.impath, ds.image_dir)) == d.classname.replace(" ", "_")
    assert len({d.impath for d in ds.train_x + ds.val + ds.test}) == len(names) * sum(expected.values())
    with Image.open(ds.test[0].impath) as img:
        assert img.mode == "RGB" and img.size == (64, 64)
    split = json.load(open(os.path.join(ds.dataset_dir, "split_SynthShapes.json")))
    assert split["train"][0] == ["red_circle/0.png", 0, "red circle"]
    assert [k for k in os.listdir(generated)] == ["synthshapes"]  # no temporary folder left


def test_generation_is_deterministic(generated, tmp_path):
    """A smaller copy holds the same first images of every class (class k's photos come from
    one rng stream in order), and the split file lists them."""
    lines = []
    sizes = {"train": 2, "val": 1, "test": 1}
    S.generate(str(tmp_path / "synthshapes"), sizes=sizes, log=lines.append)
    assert lines[0].startswith("Generating SynthShapes (48 classes x 4 images")
    assert len(lines) == 1 + len(S.class_names()) // 8 and lines[-1].startswith("  rendered 48/48 classes")
    mine, theirs = tmp_path / "synthshapes", os.path.join(generated, "synthshapes")
    split = json.load(open(mine / "split_SynthShapes.json"))
    assert {k: len(v) for k, v in split.items()} == {k: 48 * n for k, n in sizes.items()}
    assert split["test"][0] == ["red_circle/3.png", 0, "red circle"]
    for rel, _, _ in split["train"][::5] + split["test"][::7]:
        assert sha1(mine / "images" / rel) == sha1(os.path.join(theirs, "images", rel)), rel
    # images differ between classes and between images of a class
    assert sha1(mine / "images" / "red_circle" / "0.png") != sha1(mine / "images" / "red_circle" / "1.png")
    assert sha1(mine / "images" / "red_circle" / "0.png") != sha1(mine / "images" / "orange_circle" / "0.png")


def test_second_construction_reuses_the_folder(generated, monkeypatch, capsys):
    folder = os.path.join(generated, "synthshapes")
    before = {p: os.stat(os.path.join(folder, p)).st_mtime_ns for p in ("split_SynthShapes.json", "images")}

    def no_render(*args, **kwargs):
        raise AssertionError("regenerated an existing SynthShapes folder")

    monkeypatch.setattr(S, "render", no_render)
    monkeypatch.setattr(S, "generate", no_render)
    assert build(generated).num_classes == 48
    assert "Generating" not in capsys.readouterr().out
    assert before == {p: os.stat(os.path.join(folder, p)).st_mtime_ns for p in before}


def test_a_folder_from_another_version_is_refused_and_left_alone(tmp_path):
    """A SynthShapes folder generated by an earlier version (here: its labels in another order)
    is not read as this one: one line says so, and nothing in it is changed."""
    S.generate(str(tmp_path / "synthshapes"), sizes={"train": 1, "val": 1, "test": 1}, log=lambda *a: None)
    path = tmp_path / "synthshapes" / S.SPLIT_FILE
    split = json.load(open(path))
    names = S.class_names()
    swap = {names[0]: names[1], names[1]: names[0]}
    split = {k: [[p, y, swap.get(c, c)] for p, y, c in rows] for k, rows in split.items()}
    path.write_text(json.dumps(split))
    before = sha1(path)
    with pytest.raises(CasplError, match="another version of SynthShapes.*delete it to regenerate it"):
        build(str(tmp_path))
    assert sha1(path) == before and len(os.listdir(tmp_path / "synthshapes" / "images")) == 48


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    real, calls = S.render, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) > 100:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(S, "render", flaky)
    with pytest.raises(KeyboardInterrupt):
        build(str(tmp_path))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("subsample", ["base", "new"])
def test_base_and_new_halves(generated, subsample):
    ds = build(generated, subsample=subsample)
    names = S.class_names()
    assert ds.classnames == (names[:24] if subsample == "base" else names[24:])
    assert len(ds.classnames) == 24
    assert Counter(d.label for d in ds.train_x) == {y: 60 for y in range(24)}
    assert {d.classname for d in ds.test} == set(ds.classnames) and len(ds.test) == 24 * 30


def test_images_carry_colour_and_shape(generated):
    """Nearest class means on plain pixel features: colour from raw 16x16 RGB pixels (class
    means over the 48 classes), shape from the 16x16 foreground silhouette cropped to its box."""
    ds = build(generated)
    grid = [n.split(" ") for n in ds.classnames]

    def features(items):
        raw, shape = [], []
        for d in items:
            with Image.open(d.impath) as img:
                a = np.asarray(img.convert("RGB"), dtype=np.float32) / 255
            raw.append(np.asarray(Image.fromarray(np.uint8(a * 255)).resize((16, 16), Image.BOX), np.float32).ravel())
            background = np.median(np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]]), axis=0)
            fg = np.abs(a - background).max(-1) > 0.2
            ys, xs = np.nonzero(fg)
            box = fg[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
            silhouette = Image.fromarray(np.uint8(box) * 255).resize((16, 16), Image.BOX)
            shape.append(np.asarray(silhouette, np.float32).ravel())
        return np.stack(raw), np.stack(shape), np.array([d.label for d in items])

    def nearest_mean(x_train, keys_train, x_test):
        keys = sorted(set(keys_train))
        means = np.stack([x_train[np.array(keys_train) == k].mean(0) for k in keys])
        return [keys[i] for i in ((x_test[:, None] - means[None]) ** 2).sum(-1).argmin(1)]

    raw_tr, shape_tr, y_tr = features(ds.train_x)
    raw_te, shape_te, y_te = features(ds.test)
    pred = nearest_mean(raw_tr, list(y_tr), raw_te)
    colour_acc = np.mean([grid[p][0] == grid[y][0] for p, y in zip(pred, y_te)])
    shape_pred = nearest_mean(shape_tr, [grid[y][1] for y in y_tr], shape_te)
    shape_acc = np.mean([p == grid[y][1] for p, y in zip(shape_pred, y_te)])
    # chance: 1/8 for colour, 1/6 for shape
    assert colour_acc > 0.75, colour_acc
    assert shape_acc > 0.75, shape_acc


def test_zeroshot_clip_eval_only_through_the_config_file(generated, tmp_path, tiny_clip_path):
    out = str(tmp_path / "out")
    code, log = zero_shot_eval(generated, "synthshapes", tiny_clip_path, out)
    assert code == 0
    assert "* accuracy:" in log and f"* total: {48 * 30:,}\n" in log
    assert "Prompt template: 'a photo of a {}.'" in log
