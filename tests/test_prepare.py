"""`python -m caspl.data.prepare`, offline: a loopback HTTP server (127.0.0.1 only) serves small
archives built in each dataset's real archive structure from the miniature datasets, and the
tool is pointed at it through its URL table's override (CASPL_DATA_SOURCES). No test reaches
an address outside 127.0.0.1: name lookups and connections elsewhere fail the test."""
import dataclasses
import errno
import hashlib
import http.server
import io
import json
import os
import pathlib
import socket
import tarfile
import threading
import zipfile

import numpy as np
import pytest

import miniatures as M
from caspl import DATASET_REGISTRY, CasplError
from caspl.config import get_cfg_default
from caspl.data import prepare as P
from conftest import ROOT, run_cli
from datasets.sources import SOURCES

LOOPBACK = ("127.0.0.1", "::1", "localhost")


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    real_connect, real_lookup = socket.socket.connect, socket.getaddrinfo

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOOPBACK:
            raise AssertionError(f"a test reached {address}")
        return real_connect(sock, address)

    def lookup(host, *args, **kwargs):
        if host not in LOOPBACK:
            raise AssertionError(f"a test looked up {host}")
        return real_lookup(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", lookup)


class Server:
    """Serves `files` ({path: bytes}) on 127.0.0.1 with HTTP Range support. A path in `cut`
    has its next transfer stopped halfway (the connection closed); `ignore_range` answers
    every request with the whole file. `requests` records (path, Range header)."""

    def __init__(self):
        self.files, self.cut, self.ignore_range, self.requests, self.sent = {}, set(), False, [], 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                data, ranged = server.files.get(self.path), self.headers.get("Range")
                server.requests.append((self.path, ranged))
                if data is None:
                    return self.send_error(404)
                start = int(ranged.split("=")[1].split("-")[0]) if ranged and not server.ignore_range else 0
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path in server.cut:
                    server.cut.discard(self.path)
                    body, self.close_connection = body[:len(body) // 2], True
                self.wfile.write(body)
                server.sent += len(body)

        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def close(self):
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


# ----------------------------------------------------------------------------- archives as the real ones are

def tree(folder):
    """{relative path: bytes} of every file below `folder`."""
    out = {}
    for current, _, files in os.walk(folder):
        for f in files:
            path = os.path.join(current, f)
            out[os.path.relpath(path, folder).replace(os.sep, "/")] = pathlib.Path(path).read_bytes()
    return out


def tar_bytes(entries, mode="w:gz"):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in sorted(entries.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(entries):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in sorted(entries.items()):
            z.writestr(name, data)
    return buf.getvalue()


def pack(name, entries):
    if name.endswith(".zip"):
        return zip_bytes(entries)
    return tar_bytes(entries, "w" if name.endswith(".tar") else "w:gz")


def regroup(files, spec):
    """The members of an archive: {path inside it: folder of the miniature} -> {member: bytes}."""
    out = {}
    for inside, mini in spec.items():
        for rel, data in files.items():
            if not mini or rel.startswith(mini + "/"):
                out["/".join(filter(None, (inside, rel[len(mini) + 1:] if mini else rel)))] = data
    return out


# per dataset config name: the miniature, and each archive's structure as the published archive has it
# ({path inside the archive: folder of the miniature dataset}; a nested archive is a (name, spec) pair)
DATASETS = {
    "caltech101": (M.make_caltech101, {"caltech-101/caltech-101.zip": {
        "caltech-101/101_ObjectCategories.tar.gz": {"101_ObjectCategories": "101_ObjectCategories"}}}),
    "dtd": (M.make_dtd, {"dtd/dtd-r1.0.1.tar.gz": {"dtd/images": "images"}}),
    "eurosat": (M.make_eurosat_mini, {"eurosat/EuroSAT.zip": {"2750": "2750"}}),
    "fgvc_aircraft": (M.make_fgvc_aircraft, {"fgvc_aircraft/fgvc-aircraft-2013b.tar.gz": {
        "fgvc-aircraft-2013b/data": ""}}),
    "food101": (M.make_food101, {"food-101/food-101.tar.gz": {"food-101/images": "images",
                                                              "food-101/meta": "meta"}}),
    "oxford_flowers": (M.make_oxford_flowers, {"oxford_flowers/102flowers.tgz": {"jpg": "jpg"}}),
    "oxford_pets": (M.make_oxford_pets, {"oxford_pets/images.tar.gz": {"images": "images"},
                                         "oxford_pets/annotations.tar.gz": {"annotations": "annotations"}}),
    "stanford_cars": (M.make_stanford_cars, {"stanford_cars/cars_train.tgz": {"cars_train": "cars_train"},
                                             "stanford_cars/cars_test.tgz": {"cars_test": "cars_test"},
                                             "stanford_cars/car_devkit.tgz": {"devkit": "devkit"}}),
    "sun397": (M.make_sun397, {"sun397/SUN397.tar.gz": {"SUN397": "SUN397"}}),
    "ucf101": (M.make_ucf101, {"ucf101/UCF-101-midframes.zip": {"UCF-101-midframes": "UCF-101-midframes"}}),
    "imagenetv2": (M.make_imagenetv2, {"imagenetv2/imagenetv2-matched-frequency.tar.gz": {
        "imagenetv2-matched-frequency-format-val": "imagenetv2-matched-frequency-format-val"}}),
    "imagenet_sketch": (M.make_imagenet_sketch, {"imagenet-sketch/ImageNet-Sketch.zip": {"sketch": "images"}}),
    "imagenet_a": (M.make_imagenet_a, {"imagenet-adversarial/imagenet-a.tar": {"imagenet-a": "imagenet-a"}}),
    "imagenet_r": (M.make_imagenet_r, {"imagenet-rendition/imagenet-r.tar": {"imagenet-r": "imagenet-r"}}),
}


def dataset_class(alias):
    names, _ = P.dataset_names(ROOT)
    return names[alias][0]


def read(cls, root):
    """Each split as (path relative to the dataset folder, label, class name), as a run reads it."""
    cfg = get_cfg_default()
    cfg.DATASET.ROOT = root
    data = cls(cfg)
    folder = os.path.join(root, cls.dataset_dir)
    return {split: [(os.path.relpath(d.impath, folder), d.label, d.classname) for d in items]
            for split, items in (("train", data.train_x), ("val", data.val), ("test", data.test))}


def counts_of(cls, splits):
    classes = len({label for items in splits.values() for _, label, _ in items})
    if cls.test_only:
        return P.Counts(classes, test=len(splits["test"]))
    return P.Counts(classes, *(len(splits[s]) for s in ("train", "val", "test")))


class World:
    """A dataset published on the loopback server: its archives built from the miniature, the
    override that points the URL table at them, the files only a user can download already in
    the downloads folder, and the recipe's counts set to the miniature's."""

    def __init__(self, alias, tmp_path, server, monkeypatch):
        make, archives = DATASETS[alias]
        self.alias, self.cls, self.server = alias, dataset_class(alias), server
        self.mini, self.root = str(tmp_path / "mini"), str(tmp_path / "data")
        make(self.mini)
        self.expected = read(self.cls, self.mini)
        monkeypatch.setattr(self.cls, "download", dataclasses.replace(
            self.cls.download, counts=counts_of(self.cls, self.expected)))
        files = tree(os.path.join(self.mini, self.cls.dataset_dir))
        self.bytes, self.override = {}, {}
        for source in self.cls.download.sources:
            spec = archives.get(source.key)
            if spec is None:  # a file as it is (split file, classnames.txt, .mat): the miniature's, or a stand-in
                data = files.get(source.name, f"stand-in for {source.name}".encode())
            elif isinstance(next(iter(spec.values())), dict):  # an archive holding an archive
                (inner, inner_spec), = spec.items()
                data = pack(source.name, {inner: pack(inner, regroup(files, inner_spec))})
            else:
                data = pack(source.name, regroup(files, spec))
            self.publish(source, data)
        self.env = str(tmp_path / "sources.json")
        self.write_override()
        monkeypatch.setenv(P.SOURCES_ENV, self.env)

    def publish(self, source, data, checksums=None):
        self.bytes[source.key] = data
        entry = {"checksums": checksums if checksums is not None else ["md5:" + hashlib.md5(data).hexdigest()]}
        if source.url:
            entry["url"] = f"{self.server.base}/{source.key}"
            self.server.files["/" + source.key] = data
        else:  # the user's own download, where the instructions say to put it
            path = os.path.join(self.root, P.DOWNLOADS, source.key)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            pathlib.Path(path).write_bytes(data)
        self.override[source.key] = entry

    def write_override(self):
        with open(self.env, "w") as f:
            json.dump(self.override, f)

    def prepare(self, *flags):
        return P.main([self.alias, "--root", self.root, *flags])

    @property
    def folder(self):
        return os.path.join(self.root, self.cls.dataset_dir)

    def leftovers(self):
        """What a failed run left beside the datasets (staging folders) and in the final folder."""
        return sorted(e for e in os.listdir(self.root) if e != P.DOWNLOADS) if os.path.isdir(self.root) else []


@pytest.fixture
def world(tmp_path, server, monkeypatch):
    return lambda alias: World(alias, tmp_path, server, monkeypatch)


# ----------------------------------------------------------------------------- the whole path

@pytest.mark.parametrize("alias", sorted(DATASETS))
def test_prepare_lays_out_what_the_reader_reads_then_skips(world, alias, capsys):
    w = world(alias)
    assert w.prepare() == 0
    out = capsys.readouterr().out
    assert f"is prepared in {w.folder}" in out and f"Next: DATA={w.root} bash scripts/<METHOD>/" in out
    assert read(w.cls, w.root) == w.expected
    # the downloaded archives are gone, the files the user put there stay
    kept = sorted(os.path.relpath(os.path.join(d, f), os.path.join(w.root, P.DOWNLOADS))
                  for d, _, fs in os.walk(os.path.join(w.root, P.DOWNLOADS)) for f in fs)
    assert kept == sorted(s.key + x for s in w.cls.download.sources if not s.url for x in ("", ".verified"))
    assert w.leftovers() == [w.cls.dataset_dir]
    # a second run checks, skips and fetches nothing
    served = len(w.server.requests)
    assert w.prepare() == 0
    assert "is already prepared" in capsys.readouterr().out and len(w.server.requests) == served


def test_keep_archives_keeps_what_was_downloaded(world):
    w = world("oxford_flowers")
    assert w.prepare("--keep-archives") == 0
    for key, data in w.bytes.items():
        assert pathlib.Path(os.path.join(w.root, P.DOWNLOADS, key)).read_bytes() == data


def test_a_prepared_dataset_trains(world, tiny_clip_path, tmp_path):
    w = world("dtd")
    assert w.prepare() == 0
    out = str(tmp_path / "run")
    assert run_cli(["--root", w.root, "--seed", "1", "--trainer", "CoOp",
                    "--dataset-config-file", os.path.join(ROOT, "configs/datasets/dtd.yaml"),
                    "--config-file", os.path.join(ROOT, "configs/trainers/CoOp/vit_b16_ep50.yaml"),
                    "--output-dir", out, "MODEL.BACKBONE.NAME", tiny_clip_path, "INPUT.SIZE", "(32, 32)",
                    "DATALOADER.NUM_WORKERS", "0", "OPTIM.MAX_EPOCH", "1", "DATASET.NUM_SHOTS", "2"]) == 0
    log = pathlib.Path(os.path.join(out, "log.txt")).read_text()
    assert f"* total: {len(w.expected['test'])}\n" in log and "* accuracy:" in log


# ----------------------------------------------------------------------------- what goes wrong

def one_line_error(capsys):
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("Error: ")]
    assert len(err) == 1, err
    return err[0]


def test_a_wrong_checksum_is_one_line_and_keeps_nothing(world, capsys):
    w = world("dtd")
    key = "dtd/dtd-r1.0.1.tar.gz"
    w.override[key]["checksums"] = ["md5:" + "0" * 32]
    w.write_override()
    assert w.prepare() == 1
    line = one_line_error(capsys)
    got = "md5:" + hashlib.md5(w.bytes[key]).hexdigest()
    assert f"gave a file with {got}, not the published md5:{'0' * 32}" in line and "deleted" in line
    assert w.leftovers() == [] and not os.path.exists(os.path.join(w.root, P.DOWNLOADS, key))


def test_a_truncated_archive_is_one_line_and_keeps_nothing(world, capsys):
    w = world("eurosat")
    key = "eurosat/EuroSAT.zip"
    w.publish(SOURCES[key], w.bytes[key][:len(w.bytes[key]) // 2], checksums=[])  # no checksum: extraction tells
    w.write_override()
    assert w.prepare() == 1
    line = one_line_error(capsys)
    assert "EuroSAT.zip is not a whole archive" in line and f"delete {os.path.join(w.root, P.DOWNLOADS, key)}" in line
    assert w.leftovers() == []


def test_a_truncated_tar_is_one_line(world, capsys):
    w = world("dtd")
    key = "dtd/dtd-r1.0.1.tar.gz"
    w.publish(SOURCES[key], w.bytes[key][:-200], checksums=[])
    w.write_override()
    assert w.prepare() == 1
    assert "dtd-r1.0.1.tar.gz is not a whole archive" in one_line_error(capsys)
    assert w.leftovers() == []


def test_an_interrupted_download_resumes_where_it_stopped(world):
    w = world("dtd")
    key = "dtd/dtd-r1.0.1.tar.gz"
    w.server.cut.add("/" + key)
    assert w.prepare() == 0
    ranges = [r for path, r in w.server.requests if path == "/" + key]
    size = len(w.bytes[key])
    assert ranges == [None, f"bytes={size // 2}-"]  # the second request asks for the rest only
    assert read(w.cls, w.root) == w.expected


def test_a_server_that_cannot_resume_restarts_cleanly(world, capsys):
    w = world("dtd")
    key = "dtd/dtd-r1.0.1.tar.gz"
    part = os.path.join(w.root, P.DOWNLOADS, key + ".part")
    os.makedirs(os.path.dirname(part))
    pathlib.Path(part).write_bytes(b"stale bytes of another attempt")
    w.server.ignore_range = True
    assert w.prepare() == 0
    assert "cannot resume; downloading dtd-r1.0.1.tar.gz afresh" in capsys.readouterr().out
    assert read(w.cls, w.root) == w.expected


def test_a_download_stopped_every_time_is_kept_for_the_next_run(world, capsys, monkeypatch):
    w = world("dtd")
    key = "dtd/dtd-r1.0.1.tar.gz"
    monkeypatch.setattr("caspl.utils.fetch.ATTEMPTS", 1)
    w.server.cut.add("/" + key)
    assert w.prepare() == 1
    line = one_line_error(capsys)
    part = os.path.join(w.root, P.DOWNLOADS, key + ".part")
    assert f"kept in {part}: run again to resume" in line and os.path.getsize(part) == len(w.bytes[key]) // 2
    assert w.leftovers() == []
    assert w.prepare() == 0 and read(w.cls, w.root) == w.expected


def test_a_split_file_naming_a_missing_image_is_one_line_and_keeps_nothing(world, capsys):
    w = world("dtd")
    key = "dtd/split_zhou_DescribableTextures.json"
    split = json.loads(w.bytes[key])
    split["test"].append(["banded/not_in_the_archive.jpg", 0, "banded"])
    w.publish(SOURCES[key], json.dumps(split).encode())
    w.write_override()
    assert w.prepare() == 1
    line = one_line_error(capsys)
    assert "split_zhou_DescribableTextures.json lists 1 images that are not on disk" in line
    assert "banded/not_in_the_archive.jpg" in line and w.leftovers() == []


def test_counts_other_than_the_published_ones_are_refused(world, capsys, monkeypatch):
    w = world("dtd")
    recipe = w.cls.download
    monkeypatch.setattr(w.cls, "download", dataclasses.replace(
        recipe, counts=dataclasses.replace(recipe.counts, train=recipe.counts.train + 1)))
    assert w.prepare() == 1
    assert (f"{recipe.counts.train} train images (published: {recipe.counts.train + 1})" in one_line_error(capsys))
    assert w.leftovers() == []


def test_an_unreachable_host_is_one_line(world, capsys):
    w = world("dtd")
    key = "dtd/dtd-r1.0.1.tar.gz"
    w.override[key]["url"] = "http://127.0.0.1:9/dtd-r1.0.1.tar.gz"  # nothing listens there
    w.write_override()
    assert w.prepare() == 1
    line = one_line_error(capsys)
    assert "cannot fetch http://127.0.0.1:9/dtd-r1.0.1.tar.gz" in line
    assert f"download it yourself to {os.path.join(w.root, P.DOWNLOADS, key)}" in line and w.leftovers() == []


def test_a_full_disk_is_one_line_and_removes_the_partial_folder(world, capsys, monkeypatch):
    w = world("dtd")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(P, "untar", full)
    assert w.prepare() == 1
    assert "no space left on the device while preparing DescribableTextures" in one_line_error(capsys)
    assert w.leftovers() == []


def test_a_folder_that_exists_but_does_not_check_is_left_alone(world, capsys):
    w = world("dtd")
    os.makedirs(os.path.join(w.folder, "images"))
    pathlib.Path(os.path.join(w.folder, "mine.txt")).write_text("keep me")
    assert w.prepare() == 1
    assert f"{w.folder} exists but does not check" in one_line_error(capsys)
    assert pathlib.Path(os.path.join(w.folder, "mine.txt")).read_text() == "keep me" and not w.server.requests


def test_check_passes_a_good_folder_and_names_what_is_wrong_with_a_broken_one(world, capsys):
    w = world("oxford_pets")
    assert w.prepare("--check") == 1
    assert f"{w.folder} does not exist" in one_line_error(capsys)
    assert w.prepare() == 0
    capsys.readouterr()
    requests = len(w.server.requests)
    assert w.prepare("--check") == 0
    assert "OxfordPets checks in" in capsys.readouterr().out
    gone = w.expected["test"][0][0]
    os.remove(os.path.join(w.folder, gone))
    assert w.prepare("--check") == 1
    line = one_line_error(capsys)
    assert "split_zhou_OxfordPets.json lists 1 images that are not on disk" in line and os.path.basename(gone) in line
    assert len(w.server.requests) == requests  # --check downloads nothing


# ----------------------------------------------------------------------------- files only a user can download

@pytest.mark.parametrize("alias,files,where", [
    ("imagenet", ["ILSVRC2012_img_train.tar  (md5:1d675b47d978889d74fa0da5fadfb00e)",
                  "ILSVRC2012_img_val.tar  (md5:29b22e2961454d5413ddabcf34fc5622)",
                  "ILSVRC2012_devkit_t12.tar.gz  (md5:fa75699e90414af021442c21a62c3abf)"],
     "https://image-net.org/download-images.php after signing in"),
    ("stanford_cars", ["cars_train.tgz  (sha256:512b227b", "cars_test.tgz  (sha256:bffea656",
                       "cars_test_annos_withlabels.mat  (sha256:790f75be"], "the Stanford host"),
])
def test_what_only_a_user_can_download_is_asked_for_exactly(tmp_path, capsys, alias, files, where):
    root = str(tmp_path / "data")
    assert P.main([alias, "--root", root]) == 1
    lines = capsys.readouterr().out.splitlines()
    cls = dataset_class(alias)
    assert lines[0] == f"{cls.__name__} needs files that only you can download:"
    assert len(lines) > len(files) and all(line.startswith("  " + f) for line, f in zip(lines[1:], files)), lines
    assert lines[1 + len(files)].startswith("  where: " + where)
    folder = os.path.join(root, P.DOWNLOADS, cls.dataset_dir)
    assert f"Put them (or links to them) in {folder}/ and run again:" in lines
    assert f"  python -m caspl.data.prepare {alias} --root {root}" in lines
    assert not os.path.exists(os.path.join(root, cls.dataset_dir))


def imagenet_archives(mini):
    """The three official ImageNet archives, small: a train tar of one tar per class, a flat val
    tar, and a devkit whose meta.mat and ground truth give each val image its class."""
    from scipy.io import savemat

    images = os.path.join(mini, "imagenet", "images")
    wnids = sorted(os.listdir(os.path.join(images, "train")))
    train = tar_bytes({f"{w}.tar": tar_bytes(tree(os.path.join(images, "train", w)), "w") for w in wnids}, "w")
    val_files = sorted((w, f) for w in wnids for f in os.listdir(os.path.join(images, "val", w)))
    val = tar_bytes({f"ILSVRC2012_val_{i + 1:08d}.JPEG": pathlib.Path(os.path.join(images, "val", w, f)).read_bytes()
                     for i, (w, f) in enumerate(val_files)}, "w")
    fields = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"), ("num_children", "O")]
    synsets = np.zeros((len(wnids) + 1,), dtype=fields)
    for i, w in enumerate(wnids):  # ILSVRC ids in another order than the wnids, and one inner node
        synsets[i] = (len(wnids) - i, w, f"name of {w}", "", 0)
    synsets[-1] = (len(wnids) + 1, "n00001740", "entity", "", 3)
    buf = io.BytesIO()
    savemat(buf, {"synsets": synsets})
    truth = "".join(f"{len(wnids) - wnids.index(w)}\n" for w, _ in val_files).encode()
    devkit = tar_bytes({"ILSVRC2012_devkit_t12/data/meta.mat": buf.getvalue(),
                        "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt": truth})
    return {"imagenet/ILSVRC2012_img_train.tar": train, "imagenet/ILSVRC2012_img_val.tar": val,
            "imagenet/ILSVRC2012_devkit_t12.tar.gz": devkit}


def test_imagenet_from_the_official_archives(tmp_path, server, monkeypatch, capsys):
    import torchvision.datasets.imagenet as tv

    cls = dataset_class("imagenet")
    mini, root = str(tmp_path / "mini"), str(tmp_path / "data")
    M.make_imagenet(mini)
    expected = read(cls, mini)
    monkeypatch.setattr(cls, "download", dataclasses.replace(cls.download, counts=counts_of(cls, expected)))
    archives = imagenet_archives(mini)
    override = {}
    for key, data in archives.items():
        path = os.path.join(root, P.DOWNLOADS, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        pathlib.Path(path).write_bytes(data)
        override[key] = {"checksums": ["md5:" + hashlib.md5(data).hexdigest()]}
    devkit_md5 = hashlib.md5(archives["imagenet/ILSVRC2012_devkit_t12.tar.gz"]).hexdigest()
    monkeypatch.setitem(tv.ARCHIVE_META, "devkit", ("ILSVRC2012_devkit_t12.tar.gz", devkit_md5))
    names = pathlib.Path(os.path.join(mini, "imagenet", "classnames.txt")).read_bytes()
    server.files["/classnames.txt"] = names
    override["imagenet/classnames.txt"] = {"url": server.base + "/classnames.txt"}
    env = tmp_path / "sources.json"
    env.write_text(json.dumps(override))
    monkeypatch.setenv(P.SOURCES_ENV, str(env))
    assert P.main(["imagenet", "--root", root]) == 0
    got = read(cls, root)
    assert got["train"] == expected["train"]  # class folders with their files, as extracted from the class tars
    # val images are renamed by the archive; each lands in its class's folder
    assert sorted(x[1:] for x in got["test"]) == sorted(x[1:] for x in expected["test"]) and got["val"] == got["test"]
    for rel, label, _ in got["test"]:
        assert rel.split(os.sep)[2] == sorted(os.listdir(os.path.join(mini, "imagenet", "images", "val")))[label]
    # the user's archives are kept
    assert all(os.path.isfile(os.path.join(root, P.DOWNLOADS, key)) for key in archives)


# ----------------------------------------------------------------------------- the table

def test_every_dataset_the_scripts_use_has_a_recipe_and_every_file_a_source():
    names, every = P.dataset_names(ROOT)
    configs = sorted(f[:-5] for f in os.listdir(os.path.join(ROOT, "configs", "datasets")) if f.endswith(".yaml"))
    assert sorted(alias for _, alias in every) == [c for c in configs if c != "synthshapes"]
    used = {s.key for cls, _ in every for s in cls.download.sources}
    assert used == set(SOURCES)  # no row unused, no file outside the table
    for s in SOURCES.values():
        assert s.origin and (s.url or s.manual), s.key
        assert all(c.split(":")[0] in ("md5", "sha256") and len(c.split(":")[1]) in (32, 64) for c in s.checksums)
    assert {cls.__name__ for cls, _ in every} == {n for n, c in DATASET_REGISTRY.items() if c.download}


def test_the_table_agrees_with_torchvision_where_torchvision_keeps_the_file():
    import torchvision.datasets as tv
    from torchvision.datasets.imagenet import ARCHIVE_META

    pairs = {
        "dtd/dtd-r1.0.1.tar.gz": (tv.DTD._URL, tv.DTD._MD5),
        "food-101/food-101.tar.gz": (tv.Food101._URL, tv.Food101._MD5),
        "sun397/SUN397.tar.gz": (tv.SUN397._DATASET_URL, tv.SUN397._DATASET_MD5),
        "oxford_flowers/102flowers.tgz": (tv.Flowers102._download_url_prefix + tv.Flowers102._file_dict["image"][0],
                                          tv.Flowers102._file_dict["image"][1]),
        "oxford_flowers/imagelabels.mat": (tv.Flowers102._download_url_prefix + tv.Flowers102._file_dict["label"][0],
                                           tv.Flowers102._file_dict["label"][1]),
        **{f"oxford_pets/{url.rsplit('/', 1)[1]}": (url, md5) for url, md5 in tv.OxfordIIITPet._RESOURCES},
        **{f"imagenet/{name}": (None, md5) for name, md5 in ARCHIVE_META.values()},
    }
    for key, (url, md5) in pairs.items():
        assert f"md5:{md5}" in SOURCES[key].checksums, key
        if url:
            assert SOURCES[key].url == url, key
    assert SOURCES["fgvc_aircraft/fgvc-aircraft-2013b.tar.gz"].url == tv.FGVCAircraft._URL


def test_a_google_drive_file_goes_through_gdown_resumably(tmp_path, monkeypatch):
    import gdown

    calls = []

    def fake(**kwargs):
        calls.append(kwargs)
        pathlib.Path(kwargs["output"]).write_text("{}")
        return kwargs["output"]

    monkeypatch.setattr(gdown, "download", fake)
    source = SOURCES["dtd/split_zhou_DescribableTextures.json"]
    path = P.Prepare(str(tmp_path)).obtain(source, fetched := [])
    assert calls == [{"id": "1u3_QfB467jqHgNXC00UIzbLZRQCg2S7x", "output": path, "quiet": False, "resume": True}]
    assert fetched == [path] and path.endswith(os.path.join(P.DOWNLOADS, "dtd", source.name))
    assert P.drive_id("https://drive.google.com/file/d/abc_D-1/view?usp=sharing") == "abc_D-1"
    assert P.drive_id("https://example.org/file/d/abc/view") is None


def test_an_override_that_sets_something_unknown_is_refused(tmp_path, monkeypatch):
    env = tmp_path / "sources.json"
    env.write_text(json.dumps({"dtd/dtd-r1.0.1.tar.gz": {"md5": "x"}}))
    monkeypatch.setenv(P.SOURCES_ENV, str(env))
    with pytest.raises(CasplError, match=r"dtd/dtd-r1.0.1.tar.gz may set url, checksums and fallback, not "):
        P.override(SOURCES["dtd/dtd-r1.0.1.tar.gz"])


def test_a_missing_dataset_folder_names_the_command_that_prepares_it(tmp_path, world, capsys):
    with pytest.raises(CasplError, match=r"DescribableTextures not found: expected its images in .*dtd/images "
                                         r"\(python -m caspl.data.prepare DescribableTextures --root .* downloads"):
        read(dataset_class("dtd"), str(tmp_path))
    w = world("dtd")  # and the registered name is a name the tool takes
    assert P.main(["DescribableTextures", "--root", w.root]) == 0
    assert read(w.cls, w.root) == w.expected
