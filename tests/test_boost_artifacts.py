"""Boosting prompts as files people share: `python tools/export_boost.py`, BOOST_CKPT
as a sha256-pinned URL fetched once into the cache, and the student's weights checksum."""
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch

from caspl import CasplError
from caspl.clip.checksum import backbone_sha256
from caspl.clip.tiny import save_tiny_clip
from trainers.caspl_artifacts import ARTIFACT_FORMAT, export
from trainers.caspl_artifacts import main as export_main
from conftest import ROOT
from test_caspl import boosted, teacher_path, wrapped  # noqa: F401 (fixtures)
from test_methods import a_batch


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("CASPL_CACHE", str(folder))
    return folder


def url_of(path, sha256):
    return f"{pathlib.Path(os.path.abspath(path)).as_uri()}#sha256={sha256}"


def cached_files(cache):
    folder = cache / "files"
    return sorted(os.listdir(folder)) if folder.is_dir() else []


def logits(t, batch):
    with torch.no_grad():
        return t.model_inference(batch["img"])


def test_shared_file_gives_phase_two_exactly_the_phase_one_prompts(tmp_path, boosted, tiny_clip_path, cache):
    root, run = boosted
    sha = export(run, str(tmp_path / "made" / "eurosat.pt"))
    shared = tmp_path / "elsewhere" / "eurosat.pt"
    shared.parent.mkdir()
    shutil.move(tmp_path / "made" / "eurosat.pt", shared)
    url = url_of(shared, sha)
    original = wrapped("CoOp", root, tiny_clip_path, str(tmp_path / "a"), run)
    fetched = wrapped("CoOp", root, tiny_clip_path, str(tmp_path / "b"), url)
    batch = a_batch(original)
    assert torch.equal(logits(original, batch), logits(fetched, batch))
    assert fetched.boost_source == url and fetched.boost_fingerprint == original.boost_fingerprint
    assert cached_files(cache) == [sha]
    # the second load reads the cache: the source may be gone, the cached file is not rewritten
    stamp = os.stat(cache / "files" / sha).st_mtime_ns
    shared.unlink()
    again = wrapped("CoOp", root, tiny_clip_path, str(tmp_path / "c"), url)
    assert torch.equal(logits(again, batch), logits(original, batch))
    assert os.stat(cache / "files" / sha).st_mtime_ns == stamp
    # the artifact file itself (not a URL) serves too, and so does the CLIP at another path
    copy = shutil.copy(tiny_clip_path, tmp_path / "same_weights.pt")
    export(run, str(tmp_path / "local.pt"))
    local = wrapped("CoOp", root, str(copy), str(tmp_path / "d"), str(tmp_path / "local.pt"))
    assert torch.equal(logits(local, batch), logits(original, batch))


def test_a_changed_file_is_refused_and_never_cached(tmp_path, boosted, tiny_clip_path, cache, capsys):
    root, run = boosted
    good = tmp_path / "good.pt"
    sha = export(run, str(good))
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 1
    bad = tmp_path / "bad.pt"
    bad.write_bytes(bytes(data))
    with pytest.raises(CasplError, match=rf"bad.pt: its sha256 is [0-9a-f]{{64}}, not the {sha} the URL names"):
        wrapped("CoOp", root, tiny_clip_path, str(tmp_path / "a"), url_of(bad, sha))
    assert cached_files(cache) == []  # nor a leftover partial download
    # a cached copy damaged later is noticed before use and fetched again
    wrapped("CoOp", root, tiny_clip_path, str(tmp_path / "b"), url_of(good, sha))
    (cache / "files" / sha).write_bytes(bytes(data))
    capsys.readouterr()
    wrapped("CoOp", root, tiny_clip_path, str(tmp_path / "c"), url_of(good, sha))
    assert "no longer has its sha256 (damaged); fetching" in capsys.readouterr().out
    assert hashlib.sha256((cache / "files" / sha).read_bytes()).hexdigest() == sha


def test_urls_need_a_sha256_and_fail_in_one_line(tmp_path, boosted, tiny_clip_path):
    root, run = boosted
    with pytest.raises(CasplError, match=r"BOOST_CKPT https://example.org/x.pt: a URL must name the file's sha256, "
                                         r"as https://example.org/x.pt#sha256=<64 hex digits>"):
        wrapped("CoOp", root, tiny_clip_path, str(tmp_path / "a"), "https://example.org/x.pt")
    pin = "#sha256=" + "0" * 64
    with pytest.raises(CasplError, match=r"cannot fetch file://.*nowhere.pt: .*No such file") as err:
        wrapped("CoOp", root, tiny_clip_path, str(tmp_path / "b"), (tmp_path / "nowhere.pt").as_uri() + pin)
    assert "\n" not in str(err.value)
    with pytest.raises(CasplError, match=r"cannot fetch http://127.0.0.1:9/x.pt: ") as err:  # nothing listens there
        wrapped("CoOp", root, tiny_clip_path, str(tmp_path / "c"), "http://127.0.0.1:9/x.pt" + pin)
    assert "\n" not in str(err.value)


def test_prompts_for_other_student_weights_are_refused(tmp_path, boosted, cache):
    root, run = boosted
    other = save_tiny_clip(str(tmp_path / "other.pt"), seed=11)  # the same widths and layers, other weights
    export(run, str(tmp_path / "shared.pt"))
    for boost in (run, str(tmp_path / "shared.pt")):
        with pytest.raises(CasplError, match=r"made for student .*tiny.pt \(weights sha256 [0-9a-f]{16}\.\.\.\); "
                                             r"this run's backbone .*other.pt is another \(weights sha256"):
            wrapped("CoOp", root, other, str(tmp_path / "a"), boost)


def test_artifact_is_tensors_and_plain_types_and_says_what_it_is(tmp_path, boosted, tiny_clip_path, teacher_path):
    _, run = boosted
    export(run, str(tmp_path / "a.pt"))
    art = torch.load(tmp_path / "a.pt", weights_only=True)
    assert art["format"] == ARTIFACT_FORMAT
    assert set(art["state_dict"]) == {"text.ctx", "text.deep_ctx", "vision.ctx", "vision.deep_ctx"}
    phase1 = torch.load(os.path.join(run, "BoostPrompts", "model.pth.tar-2"), weights_only=True)
    assert all(torch.equal(art["state_dict"][k], v) for k, v in phase1["state_dict"].items())
    assert art["boost"] == {"student": tiny_clip_path, "student_sha256": backbone_sha256(tiny_clip_path),
                            "teacher": teacher_path, "n_ctx_text": 3, "n_ctx_vision": 2, "depth_text": 2,
                            "depth_vision": 2, "text_width": 64, "vision_width": 64, "text_layers": 2,
                            "vision_layers": 2}
    assert phase1["meta"]["student_sha256"] == art["boost"]["student_sha256"]
    assert art["dataset"] == "EuroSAT" and len(art["classnames"]) == 10
    assert (art["epoch"], art["max_epoch"], art["trainer"]) == (2, 2, "CasPL_Boost")
    assert "CASPL:" in art["config"] and art["caspl_version"] and art["exported_by"]


def test_export_cli(tmp_path, boosted, tiny_clip_path, capsys):
    root, run = boosted

    def cli(*args):  # the first call as a user makes it, the others in this process
        if first:
            first.clear()
            return subprocess.run([sys.executable, "tools/export_boost.py", *map(str, args)], cwd=ROOT,
                                  capture_output=True, text=True)
        capsys.readouterr()  # what came before
        code = export_main(list(map(str, args)))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    first = [True]
    done = cli(run, tmp_path / "out" / "b.pt")
    assert done.returncode == 0, done.stderr
    sha = hashlib.sha256((tmp_path / "out" / "b.pt").read_bytes()).hexdigest()
    assert f"sha256 {sha}" in done.stdout
    value = next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("TRAINER.CASPL.BOOST_CKPT"))
    assert value == url_of(tmp_path / "out" / "b.pt", sha)
    wrapped("CoOp", root, tiny_clip_path, str(tmp_path / "p2"), value)
    # an unfinished phase 1 is refused unless --epoch names a checkpoint
    part = tmp_path / "part"
    shutil.copytree(run, part)
    ckpt = torch.load(part / "BoostPrompts" / "model.pth.tar-2", weights_only=True)
    torch.save({**ckpt, "epoch": 1}, part / "BoostPrompts" / "model.pth.tar-1")
    (part / "BoostPrompts" / "checkpoint").write_text("model.pth.tar-1\n")
    done = cli(part, tmp_path / "c.pt")
    assert done.returncode == 1 and not (tmp_path / "c.pt").exists()
    assert done.stderr.strip().endswith("stopped at epoch 1/2; run it to the end or pass --epoch N to export "
                                        "checkpoint N") and len(done.stderr.strip().splitlines()) == 1
    assert cli(part, tmp_path / "c.pt", "--epoch", 1).returncode == 0
    assert torch.load(tmp_path / "c.pt", weights_only=True)["epoch"] == 1


def test_export_of_a_run_that_did_not_record_the_checksum(tmp_path, boosted, tiny_clip_path, teacher_path, capsys):
    _, run = boosted
    old = tmp_path / "old"
    shutil.copytree(run, old)
    path = old / "BoostPrompts" / "model.pth.tar-2"
    ckpt = torch.load(path, weights_only=True)
    del ckpt["meta"]["student_sha256"]
    torch.save(ckpt, path)
    export(str(old), str(tmp_path / "a.pt"))
    assert "Computing the student's checksum from" in capsys.readouterr().out
    recorded = torch.load(tmp_path / "a.pt", weights_only=True)["boost"]["student_sha256"]
    assert recorded == backbone_sha256(tiny_clip_path)
    with pytest.raises(CasplError, match="teacher.pt has .*but the boosting prompts were made for"):
        export(str(old), str(tmp_path / "b.pt"), student=teacher_path)


def test_checksum_is_cached_per_backbone_file(tmp_path, tiny_clip_path, cache, monkeypatch):
    import caspl.clip.checksum as checksum

    monkeypatch.setattr(checksum, "CACHE_MIN_BYTES", 0)
    path = shutil.copy(tiny_clip_path, tmp_path / "clip.pt")
    first = backbone_sha256(str(path))
    assert len(os.listdir(cache / "checksums")) == 1
    with monkeypatch.context() as m:
        m.setattr(checksum, "weights_sha256", lambda state: pytest.fail("computed again"))
        assert backbone_sha256(str(path)) == first
    save_tiny_clip(str(path), seed=3)  # the file changes: its entry no longer serves
    assert backbone_sha256(str(path)) != first


def test_http_url_is_fetched_once(tmp_path, boosted, tiny_clip_path, cache):
    import functools
    import http.server
    import threading

    root, run = boosted
    served = tmp_path / "served"
    sha = export(run, str(served / "dtd.pt"))
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        for out in ("a", "b"):
            t = wrapped("CoOp", root, tiny_clip_path, str(tmp_path / out), f"{base}/dtd.pt#sha256={sha}")
        assert requests == ["/dtd.pt"] and t.boost_source == f"{base}/dtd.pt#sha256={sha}"
        with pytest.raises(CasplError, match=r"cannot fetch http://.*/gone.pt: HTTP Error 404"):
            wrapped("CoOp", root, tiny_clip_path, str(tmp_path / "c"), f"{base}/gone.pt#sha256={'1' * 64}")
    finally:
        server.shutdown()
        server.server_close()
    assert cached_files(cache) == [sha]
