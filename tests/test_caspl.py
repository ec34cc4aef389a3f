"""CasPL: the boosting phase (CasPL_Boost) and the CasPL_<X> wrappers."""
import json
import os

import pytest
import torch
from torch.utils.data import DataLoader

from caspl import CasplError
from caspl.clip import class_prompts, encode
from caspl.clip.tiny import save_tiny_clip
from caspl.data.manager import ImageDataset, collate_readable
from conftest import ROOT, build_trainer, run_cli
from test_methods import CONFIGS, a_batch

BOOST_CFG = "configs/trainers/CasPL_Boost/vit_b16_c2_ep20_batch4_8+8ctx_l12.yaml"
SMALL = {"TRAINER__CASPL__PROMPT_DEPTH_TEXT": 2, "TRAINER__CASPL__PROMPT_DEPTH_VISION": 2,
         "TRAINER__CASPL__N_CTX_TEXT": 3, "TRAINER__CASPL__N_CTX_VISION": 2}


@pytest.fixture(scope="session")
def teacher_path(tmp_path_factory):
    """A larger tiny CLIP (other widths, embedding size and depth than the student)."""
    return save_tiny_clip(str(tmp_path_factory.mktemp("teacher") / "teacher.pt"), embed_dim=48, vision_width=128,
                          text_width=128, vision_layers=3, text_layers=3, seed=5)


def boost_trainer(root, student, teacher, out, **opts):
    return build_trainer(root, student, out, trainer="CasPL_Boost", config=BOOST_CFG,
                         TRAINER__CASPL__TEACHER=teacher, **{**SMALL, **opts})


@pytest.fixture(scope="module")
def boosted(tmp_path_factory, tiny_clip_path, teacher_path):
    """A finished phase-1 run: (data root, output dir)."""
    from caspl.testing import make_eurosat

    base = tmp_path_factory.mktemp("boosted")
    root = make_eurosat(str(base / "data"), per_class=10)
    out = str(base / "boost")
    code = run_cli(["--root", root, "--seed", "1", "--trainer", "CasPL_Boost",
                    "--dataset-config-file", os.path.join(ROOT, "configs/datasets/eurosat.yaml"),
                    "--config-file", os.path.join(ROOT, BOOST_CFG), "--output-dir", out,
                    "MODEL.BACKBONE.NAME", tiny_clip_path, "TRAINER.CASPL.TEACHER", teacher_path,
                    "INPUT.SIZE", "(32, 32)", "OPTIM.MAX_EPOCH", "2", "DATALOADER.NUM_WORKERS", "0"]
                   + [x for k, v in SMALL.items() for x in (k.replace("__", "."), str(v))])
    assert code == 0
    return root, out


def distillation_on(t, items):
    """The phase-1 loss over `items` with the test transform (no augmentation)."""
    from trainers.caspl import distillation_loss

    loader = DataLoader(ImageDataset(items, t.dm.tfm_test), batch_size=64, collate_fn=collate_readable)
    total, n = 0.0, 0
    with torch.no_grad():
        for b in loader:
            s, te = t.model_inference(b["img"]), t.teacher_logits(b, b["img"])
            total += distillation_loss(s, te, 1.0).item() * len(b["img"])
            n += len(b["img"])
    return total / n


# ---------------------------------------------------------------------------- phase 1

def test_boost_learns_to_match_the_teacher(tmp_path, eurosat_root, tiny_clip_path, teacher_path):
    t = boost_trainer(eurosat_root, tiny_clip_path, teacher_path, str(tmp_path / "o"), OPTIM__MAX_EPOCH=6,
                      OPTIM__NAME="adam", OPTIM__LR=0.01, TEST__NO_TEST=True)
    items = t.dm.dataset.train_x
    before = distillation_on(t, items)
    t.train()
    after = distillation_on(t, items)
    assert after < 0.7 * before, f"distillation loss {before:.4f} -> {after:.4f}"


def test_boost_setup(tmp_path, eurosat_root, tiny_clip_path, teacher_path, tiny_clip):
    from caspl.clip import load_clip

    t = boost_trainer(eurosat_root, tiny_clip_path, teacher_path, str(tmp_path / "o"), DATASET__NUM_SHOTS=1,
                      DATASET__SUBSAMPLE_CLASSES="base")
    # labels are not used and few-shot / base-new limits are ignored: every training image, every class
    assert len(t.dm.dataset.train_x) == 50 and t.num_classes == 10
    assert len(t.dm.train_loader_x.dataset) == 50
    params = {n: tuple(p.shape) for n, p in t.boost.named_parameters()}
    assert params == {"text.ctx": (3, 64), "text.deep_ctx": (1, 3, 64), "vision.ctx": (2, 64),
                      "vision.deep_ctx": (1, 2, 64)}
    assert sum(p.numel() for m in t._models.values() for p in m.parameters()
               if p.requires_grad) == 3 * 64 * 2 + 2 * 64 * 2
    assert not any(p.requires_grad for p in t.teacher.parameters())
    # the teacher's class features: its own text encoder, the dataset's template, computed once
    import clip
    teacher = load_clip(teacher_path)
    expected = teacher.encode_text(clip.tokenize(class_prompts("a centered satellite photo of {}.", t.classnames)))
    torch.testing.assert_close(t.teacher_text, torch.nn.functional.normalize(expected, dim=-1), rtol=1e-5, atol=1e-6)
    # the student's prompt: [SOS] boost class-name . [EOS]
    assert t.text_encoder.pos_boost[0].tolist() == [1, 2, 3]


def test_boost_loss_is_kl_teacher_student(tmp_path, eurosat_root, tiny_clip_path, teacher_path):
    t = boost_trainer(eurosat_root, tiny_clip_path, teacher_path, str(tmp_path / "o"),
                      TRAINER__CASPL__TEMPERATURE=2.0)
    batch = a_batch(t)
    with torch.no_grad():
        s, te = t.model_inference(batch["img"]), t.teacher_logits(batch, batch["img"])
        p_t, log_p_t, log_p_s = (te / 2).softmax(1), (te / 2).log_softmax(1), (s / 2).log_softmax(1)
        expected = (p_t * (log_p_t - log_p_s)).sum(1).mean().item() * 4
    t.set_model_mode(True)
    assert t.forward_backward(batch)["loss"] == pytest.approx(expected, rel=1e-5)


def test_boost_checkpoint_says_what_it_is(boosted, tiny_clip_path, teacher_path):
    _, out = boosted
    ckpt = torch.load(os.path.join(out, "BoostPrompts", "model.pth.tar-2"), weights_only=True)
    assert set(ckpt["state_dict"]) == {"text.ctx", "text.deep_ctx", "vision.ctx", "vision.deep_ctx"}
    meta = ckpt["meta"]["boost"]
    assert meta == {"student": tiny_clip_path, "teacher": teacher_path, "n_ctx_text": 3, "n_ctx_vision": 2,
                    "depth_text": 2, "depth_vision": 2, "text_width": 64, "vision_width": 64, "text_layers": 2,
                    "vision_layers": 2}
    assert ckpt["meta"]["dataset"] == "EuroSAT" and len(ckpt["meta"]["classnames"]) == 10


# ---------------------------------------------------------------------------- teacher cache

def test_teacher_cache_gives_the_online_loss_on_the_same_views(tmp_path, eurosat_root, tiny_clip_path, teacher_path):
    t = boost_trainer(eurosat_root, tiny_clip_path, teacher_path, str(tmp_path / "o"),
                      TRAINER__CASPL__TEACHER_CACHE=True, TRAINER__CASPL__CACHE_VIEWS=2)
    loader = t.dm.train_loader_x
    t.set_model_mode(True)
    for epoch in range(3):
        loader.dataset.epoch = epoch
        t.dm.set_epoch(1, epoch)
        batch = next(iter(loader))
        assert batch["view"].tolist() == [epoch % 2] * len(batch["view"])
        with torch.no_grad():
            cached = t.teacher_logits(batch, batch["img"])
            t.cache, saved = None, t.cache
            online = t.teacher_logits(batch, batch["img"])
            t.cache = saved
        torch.testing.assert_close(cached, online, rtol=1e-5, atol=1e-5)
    assert int(t.cache.filled.sum()) > 0
    # a view is the same picture whenever it is drawn
    loader.dataset.epoch = 4
    a, b = loader.dataset[3]["img"], loader.dataset[3]["img"]
    loader.dataset.epoch = 5
    assert torch.equal(a, b) and not torch.equal(a, loader.dataset[3]["img"])


def test_teacher_cache_is_reused_and_invalidated(tmp_path, eurosat_root, tiny_clip_path, teacher_path, capsys):
    out = str(tmp_path / "o")
    opts = dict(TRAINER__CASPL__TEACHER_CACHE=True, TRAINER__CASPL__CACHE_VIEWS=1, OPTIM__MAX_EPOCH=1,
                TEST__NO_TEST=True)
    boost_trainer(eurosat_root, tiny_clip_path, teacher_path, out, **opts).train()
    assert os.path.isfile(os.path.join(out, "teacher_cache.pt"))
    calls = []
    t = boost_trainer(eurosat_root, tiny_clip_path, teacher_path, out, **opts)
    assert "Teacher cache: 48 of 50 views" in capsys.readouterr().out  # 12 batches of 4 (the last one dropped)
    t.teacher_image_features = lambda images: calls.append(1)
    t.set_model_mode(True)
    t.dm.set_epoch(1, 0)  # the first run's epoch-0 order: every view cached, the teacher does not run
    t.forward_backward(next(iter(t.dm.train_loader_x)))
    assert calls == []
    other = save_tiny_clip(str(tmp_path / "other.pt"), embed_dim=48, vision_width=128, text_width=128,
                           vision_layers=3, text_layers=3, seed=9)
    boost_trainer(eurosat_root, tiny_clip_path, other, out, **opts)
    assert "made for another teacher, data or transform" in capsys.readouterr().out


# ---------------------------------------------------------------------------- phase 2

WRAPPED = ["CoOp", "CoCoOp", "IVLP", "MaPLe", "PromptSRC", "LAMM", "LAMM_CoOp", "LAMM_MaPLe"]


def wrapped(name, root, clip_path, out, boost, **opts):
    config, base = CONFIGS[name]
    return build_trainer(root, clip_path, out, trainer=f"CasPL_{name}", config=config,
                         TRAINER__CASPL__BOOST_CKPT=boost, **{**base, **opts})


@pytest.mark.parametrize("name", WRAPPED)
def test_wrapper_is_the_method_plus_frozen_boosting_tokens(tmp_path, boosted, tiny_clip_path, name):
    root, boost = boosted
    config, base = CONFIGS[name]
    plain = build_trainer(root, tiny_clip_path, str(tmp_path / "x"), trainer=name, config=config, **base)
    casc = wrapped(name, root, tiny_clip_path, str(tmp_path / "c"), boost)
    # X's trainable parameters: the same names, shapes and (same seed) values
    own = {k: v for m in plain._models.values() for k, v in m.state_dict().items()}
    theirs = {k: v for m in casc._models.values() for k, v in m.state_dict().items()}
    assert own.keys() == theirs.keys() and all(torch.equal(own[k], theirs[k]) for k in own)
    assert not any(p.requires_grad for p in casc.boost.parameters())
    # text: [SOS] X's tokens ... boosting tokens, then the class name; image: boosting tokens first
    pos = casc.text_encoder.pos_boost
    assert pos.shape[1] == 3
    for c, name_ in enumerate(casc.classnames):
        assert all(int(pos[c, 0]) > int(p) for k, p in casc.text_encoder.named_buffers()
                   if k.startswith("pos_") and k != "pos_boost" and k != "pos_label" for p in p[c])
        label_or_name = casc.text_encoder.pos_label[c, 0] if name.startswith("LAMM") else None
        end = int(pos[c, -1])
        if label_or_name is not None:
            assert int(label_or_name) == end + 1
        else:
            name_ids = encode(name_.replace("_", " "))
            assert casc.text_encoder.token_ids[c, end + 1:end + 1 + len(name_ids)].tolist() == name_ids
    assert list(casc.image_groups())[0] == "vboost"
    # a training step leaves the boosting prompts untouched, without gradients
    before = {k: v.clone() for k, v in casc.boost.state_dict().items()}
    casc.set_model_mode(True)
    casc.forward_backward(a_batch(casc))
    assert all(p.grad is None for p in casc.boost.parameters())
    assert all(torch.equal(before[k], v) for k, v in casc.boost.state_dict().items())


@pytest.mark.parametrize("name", ["CoOp", "MaPLe", "PromptSRC", "LAMM_CoOp"])
def test_without_the_boosting_groups_the_loss_is_exactly_the_methods(tmp_path, boosted, tiny_clip_path, name):
    from caspl.engine import PromptTrainer

    root, boost = boosted
    config, base = CONFIGS[name]
    plain = build_trainer(root, tiny_clip_path, str(tmp_path / "x"), trainer=name, config=config, **base)
    casc = wrapped(name, root, tiny_clip_path, str(tmp_path / "c"), boost)
    # remove the boosting tokens: X's prompts and encoders, X's groups
    casc.text_encoder = plain.text_encoder
    if hasattr(plain, "reference_encoder"):
        casc.reference_encoder = plain.reference_encoder
    cls = type(plain)
    casc.text_groups = lambda image_features=None: cls.text_groups(casc, image_features)
    casc.image_groups = lambda: cls.image_groups(casc)
    assert isinstance(casc, PromptTrainer)
    batch = a_batch(plain)
    plain.set_model_mode(True)
    casc.set_model_mode(True)
    assert casc.forward_backward(batch) == plain.forward_backward(batch)


def test_boosting_tokens_enter_every_layer_below_their_depth(tmp_path, boosted, tiny_clip_path):
    root, boost = boosted
    casc = wrapped("IVLP", root, tiny_clip_path, str(tmp_path / "c"), boost)
    casc.text_encoder.shared_prefix = False  # the plain pass's layout (the shared-prefix pass equals it)
    seen_text, seen_image = [], []
    # each block's input, as its first norm sees it (the encoders run a block's parts)
    hooks = [b.ln_1.register_forward_pre_hook(lambda m, a, seen=seen: seen.append(a[0].detach()))
             for blocks, seen in ((casc.clip.model.transformer.resblocks, seen_text),
                                  (casc.clip.model.visual.transformer.resblocks, seen_image)) for b in blocks]
    with torch.no_grad():
        casc.text_features()
        casc.image_features(a_batch(casc)["img"])
    for h in hooks:
        h.remove()
    pos = casc.text_encoder.pos_boost[0]
    text_layers, vision_layers = casc.boost.text.layers(), casc.boost.vision.layers()
    assert torch.equal(seen_text[1][pos, 0], text_layers[1])  # layer 1: that layer's boosting tokens
    n_fixed = 1 + 16  # [CLS] + 4x4 patches
    assert torch.equal(seen_image[1][n_fixed:n_fixed + 2, 0], vision_layers[1])  # right after the patches
    assert seen_image[1].shape[0] == n_fixed + 2 + 4  # then IVLP's own 4 vision tokens


@pytest.mark.slow
@pytest.mark.parametrize("name", WRAPPED)
def test_phase_two_from_the_cli_base_to_new(tmp_path, boosted, tiny_clip_path, name):
    root, boost = boosted
    config, base = CONFIGS[name]
    opts = ["MODEL.BACKBONE.NAME", tiny_clip_path, "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0",
            "DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "2"]
    for k, v in base.items():
        opts += [k.replace("__", "."), str(v)]
    common = ["--root", root, "--seed", "1", "--trainer", f"CasPL_{name}",
              "--dataset-config-file", os.path.join(ROOT, "configs/datasets/eurosat.yaml"),
              "--config-file", os.path.join(ROOT, config)]
    train, new = str(tmp_path / "train"), str(tmp_path / "new")
    assert run_cli(common + ["--output-dir", train] + opts + ["DATASET.SUBSAMPLE_CLASSES", "base",
                                                              "TRAINER.CASPL.BOOST_CKPT", boost]) == 0
    # evaluation finds the boosting prompts the checkpoint recorded
    assert run_cli(common + ["--output-dir", new, "--eval-only", "--model-dir", train, "--load-epoch", "2"]
                   + opts + ["DATASET.SUBSAMPLE_CLASSES", "new"]) == 0
    log = open(os.path.join(new, "log.txt")).read()
    assert "CasPL: frozen boosting prompts from" in log and "* total: 15" in log


def test_zero_shot_clip_with_boosting_prompts(tmp_path, boosted, tiny_clip_path):
    root, boost = boosted
    t = build_trainer(root, tiny_clip_path, str(tmp_path / "z"), trainer="CasPL_ZeroshotCLIP",
                      config="configs/trainers/ZeroshotCLIP/vit_b16.yaml", TRAINER__CASPL__BOOST_CKPT=boost)
    """CasPL_ZeroshotCLIP is "CLIP + boosting" zero-shot: phase 1's student image encoder and
    the dataset's template with the boosting tokens before the class name."""
    phase1 = boost_trainer(root, tiny_clip_path, tiny_clip_path, str(tmp_path / "p"))
    phase1.boost.load_state_dict(t.boost.state_dict())
    images = a_batch(t)["img"]
    with torch.no_grad():
        torch.testing.assert_close(t.image_features(images), phase1.image_features(images))
    assert t._models == {}
    n_name = len(encode("Annual Crop Land"))
    assert t.text_encoder.pos_boost[0].tolist() == [6, 7, 8]  # after "a centered satellite photo of"
    assert t.text_encoder.eos[0] == 9 + n_name + 1


def test_promptsrc_anchor_choice(tmp_path, boosted, tiny_clip_path):
    root, boost = boosted
    vanilla = wrapped("PromptSRC", root, tiny_clip_path, str(tmp_path / "v"), boost)
    boosted_anchor = wrapped("PromptSRC", root, tiny_clip_path, str(tmp_path / "b"), boost,
                             TRAINER__CASPL__ANCHOR="boosted")
    images = a_batch(vanilla)["img"]
    with torch.no_grad():
        assert torch.equal(vanilla.frozen_image_features(images), vanilla.clip.encode_image(images))
        torch.testing.assert_close(boosted_anchor.frozen_image_features(images),
                                   boosted_anchor.image_encoder(images,
                                                                {"vboost": boosted_anchor.boost.vision.group()}))
    assert not torch.allclose(vanilla.frozen_text, boosted_anchor.frozen_text)


def test_learnable_boosting_prompts_ablation(tmp_path, boosted, tiny_clip_path):
    """BOOST_LEARNABLE: the boosting prompts train with X's (checkpointed, found again at
    evaluation without the key); the frozen anchor stays phase 1's."""
    root, boost = boosted
    casc = wrapped("PromptSRC", root, tiny_clip_path, str(tmp_path / "l"), boost,
                   TRAINER__CASPL__BOOST_LEARNABLE=True, TRAINER__CASPL__ANCHOR="boosted")
    assert "BoostPrompts" in casc._models and all(p.requires_grad for p in casc.boost.parameters())
    before = {k: v.clone() for k, v in casc.boost.state_dict().items()}
    images = a_batch(casc)["img"]
    with torch.no_grad():
        anchor = casc.frozen_image_features(images)
    casc.set_model_mode(True)
    casc.forward_backward(a_batch(casc))
    assert not all(torch.equal(before[k], v) for k, v in casc.boost.state_dict().items())
    assert all(torch.equal(before[k], v) for k, v in casc.phase1_boost.state_dict().items())
    with torch.no_grad():
        assert torch.equal(casc.frozen_image_features(images), anchor)

    config, base = CONFIGS["CoOp"]
    common = ["--root", root, "--seed", "1", "--trainer", "CasPL_CoOp",
              "--dataset-config-file", os.path.join(ROOT, "configs/datasets/eurosat.yaml"),
              "--config-file", os.path.join(ROOT, config), "MODEL.BACKBONE.NAME", tiny_clip_path,
              "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0", "DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "1"]
    train, again = tmp_path / "train", tmp_path / "again"
    assert run_cli(common[:8] + ["--output-dir", str(train)] + common[8:] +
                   ["TRAINER.CASPL.BOOST_CKPT", boost, "TRAINER.CASPL.BOOST_LEARNABLE", "True"]) == 0
    assert (train / "BoostPrompts" / "model.pth.tar-1").is_file()
    assert run_cli(common[:8] + ["--output-dir", str(again), "--eval-only", "--model-dir", str(train)] +
                   common[8:]) == 0
    log = (again / "log.txt").read_text()
    assert "CasPL: learnable boosting prompts from" in log and "Loaded" in log and "BoostPrompts" in log
    trained = json.loads((train / "results.json").read_text())
    assert json.loads((again / "results.json").read_text())["accuracy"] == trained["accuracy"]


# ---------------------------------------------------------------------------- errors

def test_boosting_checkpoint_errors(tmp_path, boosted, tiny_clip_path, teacher_path):
    root, boost = boosted
    with pytest.raises(CasplError, match="boosting checkpoint not found: .*nowhere"):
        wrapped("CoOp", root, tiny_clip_path, str(tmp_path / "a"), str(tmp_path / "nowhere"))
    with pytest.raises(CasplError, match="BOOST_CKPT is empty"):
        wrapped("CoOp", root, tiny_clip_path, str(tmp_path / "a"), "")
    # made for another student (other widths / layers)
    other = boost_trainer(root, teacher_path, tiny_clip_path, str(tmp_path / "other"), OPTIM__MAX_EPOCH=1,
                          TEST__NO_TEST=True, DATASET__NUM_SHOTS=1, TRAINER__CASPL__FEWSHOT_DATA=True)
    other.train()
    with pytest.raises(CasplError, match="were made for student .*teacher.pt.*this run's backbone"):
        wrapped("CoOp", root, tiny_clip_path, str(tmp_path / "b"), str(tmp_path / "other"))
    # a phase-1 directory that has not finished
    part = boost_trainer(root, tiny_clip_path, teacher_path, str(tmp_path / "part"), OPTIM__MAX_EPOCH=3,
                         TEST__NO_TEST=True)
    part.before_epoch = lambda: (_ for _ in ()).throw(KeyboardInterrupt) if part.epoch == 1 else None
    with pytest.raises(KeyboardInterrupt):
        part.train()
    with pytest.raises(CasplError, match="stopped at epoch 1/3"):
        wrapped("CoOp", root, tiny_clip_path, str(tmp_path / "c"), str(tmp_path / "part"))
    # depths beyond the student's layers (a doctored checkpoint: phase 1 cannot write one)
    ckpt = torch.load(os.path.join(boost, "BoostPrompts", "model.pth.tar-2"), weights_only=True)
    ckpt["meta"]["boost"]["depth_vision"] = 5
    torch.save(ckpt, tmp_path / "deep.pth.tar")
    with pytest.raises(CasplError, match="depth_vision 5, more than the student's 2 layers"):
        wrapped("CoOp", root, tiny_clip_path, str(tmp_path / "e"), str(tmp_path / "deep.pth.tar"))
    # a checkpoint of another method
    coop = build_trainer(root, tiny_clip_path, str(tmp_path / "coop"), OPTIM__MAX_EPOCH=1, TEST__NO_TEST=True,
                         DATASET__NUM_SHOTS=1)
    coop.train()
    with pytest.raises(CasplError, match="is not a CasPL_Boost checkpoint"):
        wrapped("CoOp", root, tiny_clip_path, str(tmp_path / "d"),
                str(tmp_path / "coop" / "prompt_learner" / "model.pth.tar-1"))
