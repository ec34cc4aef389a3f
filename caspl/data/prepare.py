"""`python -m caspl.data.prepare DATASET [--root DATA]`: a benchmark dataset from nothing.

A dataset plugin describes how its folder is made with a `Recipe`: the files it needs (each a
`Source`: URL, checksum, where both are kept upstream), the steps that lay them out as its
reader expects, and the published sizes of its split. This module does the rest, the same way
for every dataset:
- each file is fetched into <root>/downloads/ (an interrupted download resumes) and verified
  by its checksum; a file that cannot be downloaded is asked of the user, with where to get
  it and where to put it;
- the dataset is built in a staging folder beside its final one and checked there (every
  image its split names is on disk; the images and classes per split are the published
  ones); only then is it renamed into place, so the final folder never holds half a dataset;
- a prepared dataset is checked and skipped; `--check` checks without downloading.

The dataset plugins (the `datasets/` folder beside this package) are imported as train.py
imports them; `CASPL_DATA_SOURCES` names a JSON file that replaces fields of the URL table
({"<key>": {"url": ..., "md5": ...}}), for a mirror."""
import argparse
import dataclasses
import errno
import glob
import importlib
import json
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.parse
import zipfile
import zlib
from contextlib import contextmanager

from tqdm import tqdm

from ..config import get_cfg_default
from ..errors import CasplError
from ..registry import DATASET_REGISTRY
from ..utils.fetch import download, file_digests

DOWNLOADS = "downloads"  # under the root: where files are fetched to, and where users put theirs
STAGING = ".staging-"  # <root>/.staging-<folder>-*: a dataset being built
SOURCES_ENV = "CASPL_DATA_SOURCES"
DRIVE_HOSTS = ("drive.google.com", "drive.usercontent.google.com")


# ----------------------------------------------------------------------------- what a plugin declares

@dataclasses.dataclass(frozen=True)
class Source:
    """One file: `key` is "<dataset folder>/<file name>", its place under the downloads folder.
    `checksums` ("md5:<hex>", "sha256:<hex>") are the published ones: a file is accepted when
    it has one of them (a mirror may serve another published release of the same archive).
    Without a `url` it cannot be downloaded automatically and `manual` says where to get it."""

    key: str
    url: str = ""
    checksums: tuple = ()
    origin: str = ""  # who keeps this URL and checksum (a library, the dataset's page)
    fallback: str = ""  # another address of the file, tried when the first fails
    manual: str = ""

    @property
    def name(self):
        return os.path.basename(self.key)


def source_table(*sources):
    """{key: Source}; a key or a URL named twice is a mistake in the table."""
    table, urls = {}, {}
    for s in sources:
        if s.key in table:
            raise ValueError(f"{s.key} is twice in the URL table")
        for url in filter(None, (s.url, s.fallback)):
            if url in urls:
                raise ValueError(f"{url} is in the URL table for {urls[url]} and {s.key}")
            urls[url] = s.key
        table[s.key] = s
    return table


@dataclasses.dataclass(frozen=True)
class Counts:
    """The published size of a split: classes, then images in train, val and test."""

    classes: int
    train: int = 0
    val: int = 0
    test: int = 0


class Step:
    """One step of building a dataset folder from its files."""

    sources = ()

    def run(self, job):
        raise NotImplementedError


class Unpack(Step):
    """Extract an archive and move parts of it into the dataset folder: `take` maps a path
    inside the archive to a path in the folder ("" is the folder itself: the archive path's
    contents land there); without `take` the whole archive lands there. `inner` names an
    archive inside the archive, which is the one unpacked."""

    def __init__(self, source, take=None, inner=None):
        self.source, self.take, self.inner = source, take or {"": ""}, inner
        self.sources = (source,)

    def run(self, job):
        scratch = job.scratch(self.source.name)
        job.extract(job.files[self.source.key], scratch)
        if self.inner:
            nested = os.path.join(scratch, self.inner)
            if not os.path.isfile(nested):
                raise CasplError(f"{self.source.name} has no {self.inner}: not the archive this tool knows (a changed "
                                 "release?)")
            scratch = job.scratch(os.path.basename(self.inner))
            job.extract(nested, scratch)
        for inner, dest in self.take.items():
            job.move(os.path.join(scratch, inner), dest, f"{self.source.name} has no {inner or 'contents'}")


class Put(Step):
    """Copy a file as it is into the dataset folder (under its own name, or `dest`)."""

    def __init__(self, source, dest=None):
        self.source, self.dest = source, dest or source.name
        self.sources = (source,)

    def run(self, job):
        path = job.path(self.dest)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shutil.copyfile(job.files[self.source.key], path)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a dataset's folder is made: its steps in order, the split file the reader needs
    (relative to the dataset folder; None where the reader needs none) and the published counts."""

    steps: tuple
    counts: Counts
    split: str = None

    @property
    def sources(self):
        seen = {}
        for step in self.steps:
            for s in step.sources:
                seen.setdefault(s.key, s)
        return list(seen.values())


# ----------------------------------------------------------------------------- the URL table's override

def override(source):
    """`source` with the fields CASPL_DATA_SOURCES gives for its key."""
    path = os.environ.get(SOURCES_ENV)
    if not path:
        return source
    try:
        with open(path, encoding="utf-8") as f:
            fields = json.load(f).get(source.key, {})
    except (OSError, ValueError, AttributeError) as err:
        raise CasplError(f"{SOURCES_ENV}={path}: cannot read it as a JSON object ({err})") from None
    if not isinstance(fields, dict) or set(fields) - {"url", "checksums", "fallback"}:
        raise CasplError(f"{SOURCES_ENV}={path}: {source.key} may set url, checksums and fallback, not {fields!r}")
    return dataclasses.replace(source, **{k: tuple(v) if k == "checksums" else v for k, v in fields.items()})


# ----------------------------------------------------------------------------- files

def verified(path, source):
    """None when the file at `path` has one of `source`'s checksums (or `source` names none),
    else what it has. A match is remembered beside the file (size, time, checksum), so an
    archive of 150 GB is not hashed again on the next run."""
    if not source.checksums:
        return None
    stat = os.stat(path)
    memo = path + ".verified"
    try:
        with open(memo, encoding="utf-8") as f:
            size, mtime, checksum = json.load(f)
        if (size, mtime) == (stat.st_size, stat.st_mtime_ns) and checksum in source.checksums:
            return None
    except (OSError, ValueError, TypeError):
        pass
    got = file_digests(path, sorted({c.split(":", 1)[0] for c in source.checksums}), progress=True)
    has = [f"{kind}:{digest}" for kind, digest in got.items()]
    match = [c for c in has if c in source.checksums]
    if not match:
        return ", ".join(has)
    try:
        with open(memo, "w", encoding="utf-8") as f:
            json.dump([stat.st_size, stat.st_mtime_ns, match[0]], f)
    except OSError:
        pass
    return None


def drive_id(url):
    """The file id of a Google Drive URL (".../file/d/<id>/view", "...?id=<id>"), else None."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname not in DRIVE_HOSTS:
        return None
    query = urllib.parse.parse_qs(parts.query).get("id")
    if query:
        return query[0]
    segments = parts.path.split("/")
    return segments[segments.index("d") + 1] if "d" in segments[:-1] else None


def download_drive(file_id, path, name):
    """A Google Drive file through gdown (Drive's confirmation pages are its business), resumable."""
    try:
        import gdown
        from gdown.exceptions import DownloadError
    except ImportError:
        raise CasplError(f"{name} is on Google Drive, which needs gdown: pip install gdown") from None
    try:
        gdown.download(id=file_id, output=path, quiet=False, resume=True)
    except (DownloadError, OSError, ValueError) as err:
        raise CasplError(f"cannot fetch {name} from Google Drive (id {file_id}): {str(err).splitlines()[0]}; "
                         "Drive limits downloads of popular files: try again later") from None
    return path


def _fetch_from(url, path, name):
    file_id = drive_id(url)
    if file_id:
        return download_drive(file_id, path, name)
    return download(url, path, name)


# ----------------------------------------------------------------------------- building a dataset

class ProgressReader:
    """A read-only file that moves a progress bar as it is read (archives are read in one pass)."""

    def __init__(self, f, bar):
        self.f, self.bar = f, bar

    def read(self, n=-1):
        data = self.f.read(n)
        self.bar.update(len(data))
        return data


@contextmanager
def reading(path, desc):
    """The archive at `path` opened for one pass, with a progress bar over its bytes; a damaged
    archive becomes one line."""
    name = os.path.basename(path)
    try:
        with open(path, "rb") as f, tqdm(total=os.path.getsize(path), unit="B", unit_scale=True, leave=False,
                                         desc=desc) as bar:
            yield ProgressReader(f, bar)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as err:
        raise CasplError(f"{name} is not a whole archive ({err or type(err).__name__}): a damaged or truncated "
                         f"file; delete {path} and run again to download it afresh") from None


def untar(fileobj, into):
    """Every member of the tar stream `fileobj` (any compression) into `into`; tarfile's data
    filter refuses members that would land outside it (absolute paths, "..", links out)."""
    with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
        for member in tar:
            tar.extract(member, into, filter="data")


class Job:
    """One dataset being built: its verified files ({key: path}), its folder in the staging
    folder, scratch space beside it."""

    def __init__(self, files, staging, folder):
        self.files = files
        self.target = os.path.join(staging, folder)
        self._scratch = os.path.join(staging, ".unpacked")
        os.makedirs(self.target)

    def path(self, rel):
        return os.path.join(self.target, rel)

    def scratch(self, name):
        path = os.path.join(self._scratch, name)
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        return path

    def extract(self, archive, into):
        with reading(archive, f"extracting {os.path.basename(archive)}") as f:
            if zipfile.is_zipfile(archive):
                with zipfile.ZipFile(f.f) as z:  # zipfile's own extraction keeps names inside `into`
                    for info in z.infolist():
                        z.extract(info, into)
                        f.bar.update(info.compress_size)
            else:
                untar(f, into)

    def move(self, src, dest, missing):
        """`src` (from an unpacked archive) to `dest` in the dataset folder; dest "" merges
        src's entries into the folder itself."""
        if not os.path.exists(src):
            raise CasplError(f"{missing}: not the archive this tool knows (a changed release?)")
        if dest:
            moves = [(src, self.path(dest))]
        else:
            moves = [(os.path.join(src, e), self.path(e)) for e in os.listdir(src)]
        for a, b in moves:
            if os.path.exists(b):
                raise CasplError(f"two files of the dataset would both be {os.path.relpath(b, self.target)}")
            os.makedirs(os.path.dirname(b), exist_ok=True)
            os.rename(a, b)


def check(cls, root):
    """The dataset `cls` under `root`, read as a run reads it, against its recipe: (rows of
    split, images, classes) for a report. A problem is a one-line CasplError."""
    recipe, name = cls.download, cls.__name__
    folder = os.path.join(root, cls.dataset_dir)
    if recipe.split and not os.path.isfile(os.path.join(folder, recipe.split)):
        raise CasplError(f"{os.path.join(folder, recipe.split)} is missing (the split file {name} is read with)")
    cfg = get_cfg_default()
    cfg.DATASET.ROOT, cfg.DATASET.NAME = root, name
    data = cls(cfg)  # the reader: every image a split names must be on disk
    splits = {"test": data.test} if cls.test_only else {"train": data.train_x, "val": data.val, "test": data.test}
    rows, problems = [], []
    classes = len(data.classnames)
    if classes != recipe.counts.classes:
        problems.append(f"{classes:,} classes (published: {recipe.counts.classes:,})")
    for split, items in splits.items():
        want = getattr(recipe.counts, split)
        present = len({d.label for d in items})
        rows.append([split, len(items), present])
        if len(items) != want:
            problems.append(f"{len(items):,} {split} images (published: {want:,})")
        elif present != classes:
            problems.append(f"{split} images of {present:,} of the {classes:,} classes")
    if problems:
        raise CasplError(f"{name} in {folder} has {', '.join(problems)}: an incomplete download or another "
                         "release of the dataset")
    return rows


def report(rows):
    return ", ".join(f"{split} {n:,} images" for split, n, _ in rows) + f" of {rows[0][2]:,} classes"


# ----------------------------------------------------------------------------- the command

class Prepare:
    """Prepares datasets under one root."""

    def __init__(self, root, downloads=None, keep_archives=False):
        self.root = os.path.abspath(os.path.expanduser(root))
        self.downloads = os.path.abspath(downloads or os.path.join(self.root, DOWNLOADS))
        self.keep_archives = keep_archives

    def file(self, source):
        return os.path.join(self.downloads, *source.key.split("/"))

    def missing_by_hand(self, cls):
        """The files `cls` needs that only the user can fetch and that are not there yet."""
        return [s for s in map(override, cls.download.sources) if not s.url and not os.path.isfile(self.file(s))]

    def instructions(self, cls, alias, missing):
        lines = [f"{cls.__name__} needs files that only you can download:"]
        lines += [f"  {s.name}" + (f"  ({s.checksums[0]})" if s.checksums else "") for s in missing]
        lines += [f"  where: {text}" for text in dict.fromkeys(s.manual for s in missing)]
        folder = os.path.dirname(self.file(missing[0]))
        lines.append(f"Put them (or links to them) in {folder}/ and run again:")
        lines.append(f"  python -m caspl.data.prepare {alias} --root {self.root}")
        lines.append("The rest (the other files, the layout, the split check) is then done for you.")
        return "\n".join(lines)

    def obtain(self, source, fetched):
        """The verified local file of `source`: already in the downloads folder, or downloaded."""
        path = self.file(source)
        if os.path.isfile(path):
            got = verified(path, source)
            if got is None:
                return path
            expected = " or ".join(source.checksums)
            if not source.url:
                raise CasplError(f"{path} is not the published file (it has {got}, not {expected}): get it "
                                 f"{source.manual}")
            print(f"Note: {path} has {got}, not {expected}; downloading it again")
            os.remove(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        failures = []
        for url in filter(None, (source.url, source.fallback)):
            try:
                _fetch_from(url, path, source.name)
            except CasplError as err:
                failures.append(str(err))
                continue
            got = verified(path, source)
            if got is None:
                fetched.append(path)
                return path
            os.remove(path)
            failures.append(f"{url} gave a file with {got}, not the published {' or '.join(source.checksums)} "
                            "(a changed or damaged file; deleted)")
        raise CasplError(f"{source.name}: {'; '.join(failures)}. Check the connection and run again, or download it "
                         f"yourself to {path}")

    def clear_stale_staging(self, folder):
        for stale in glob.glob(os.path.join(self.root, f"{STAGING}{folder}-*")):
            print(f"Removing {stale}, left by an interrupted run")
            shutil.rmtree(stale, ignore_errors=True)

    def prepare(self, cls, alias):
        """'ready' (prepared now or before), or 'manual' (instructions printed)."""
        name, folder = cls.__name__, os.path.join(self.root, cls.dataset_dir)
        if os.path.exists(folder):
            try:
                rows = check(cls, self.root)
            except CasplError as err:
                raise CasplError(f"{folder} exists but does not check: {err}. It was left as it is: move it away "
                                 "and run again to prepare it afresh") from None
            print(f"{name} is already prepared in {folder} ({report(rows)}): skipped")
            return "ready"
        missing = self.missing_by_hand(cls)
        if missing:
            print(self.instructions(cls, alias, missing))
            return "manual"
        os.makedirs(self.root, exist_ok=True)
        self.clear_stale_staging(cls.dataset_dir)
        fetched = []
        files = {s.key: self.obtain(s, fetched) for s in map(override, cls.download.sources)}
        staging = tempfile.mkdtemp(prefix=f"{STAGING}{cls.dataset_dir}-", dir=self.root)
        try:
            job = Job(files, staging, cls.dataset_dir)
            for step in cls.download.steps:
                step.run(job)
            rows = check(cls, staging)
            os.rename(job.target, folder)
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise CasplError(f"no space left on the device while preparing {name} in {self.root}: free "
                                 "some space (or use another --root) and run again; the partial folder was "
                                 "removed") from None
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if not self.keep_archives:
            for path in fetched:
                for leftover in (path, path + ".verified"):
                    if os.path.isfile(leftover):
                        os.remove(leftover)
        print(f"{name} is prepared in {folder}: {report(rows)}, every image of the split on disk")
        return "ready"


def import_plugins(plugins=()):
    """The dataset plugins: the `datasets/` folder beside caspl/ (as train.py imports it), and plugin files."""
    from ..cli import load_plugin

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if os.path.isdir(os.path.join(repo, "datasets")):
        sys.path.insert(0, repo)
        importlib.import_module("datasets")
    for path in plugins:
        load_plugin(path)
    return repo


def dataset_names(repo):
    """({name a user may type, lower-cased: (class, name to print)}, [(class, name to print)] of
    every dataset with a recipe). The names are the registered ones and the dataset config
    names the scripts take (configs/datasets/<name>.yaml), which are the ones printed."""
    import yaml

    printed = {cls: name for name, cls in DATASET_REGISTRY.items() if getattr(cls, "download", None)}
    names = {name.lower(): cls for cls, name in printed.items()}
    for path in sorted(glob.glob(os.path.join(repo, "configs", "datasets", "*.yaml"))):
        with open(path, encoding="utf-8") as f:
            registered = ((yaml.safe_load(f) or {}).get("DATASET") or {}).get("NAME", "")
        if registered.lower() in names:
            stem = os.path.splitext(os.path.basename(path))[0]
            names[stem.lower()] = cls = names[registered.lower()]
            printed[cls] = stem
    return {n: (cls, printed[cls]) for n, cls in names.items()}, sorted(printed.items(), key=lambda kv: kv[1])


def next_line(root, alias, cls):
    """A protocol script on the dataset: scripts/<METHOD>/ holds them for every method."""
    if cls.test_only:
        return (f"Next: DATA={root} bash scripts/<METHOD>/xd_test.sh {alias} 1  "
                "(after xd_train.sh 1, which trains on ImageNet; METHOD: a folder of scripts/)")
    return f"Next: DATA={root} bash scripts/<METHOD>/base2new_train.sh {alias} 1  (METHOD: a folder of scripts/)"


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m caspl.data.prepare", description=__doc__.split("\n\n")[0])
    p.add_argument("datasets", nargs="+", metavar="DATASET",
                   help="a dataset config name (dtd, imagenet_a, ...), a dataset name (DescribableTextures), or all")
    p.add_argument("--root", default=os.environ.get("DATA"), help="the dataset root (default: $DATA)")
    p.add_argument("--check", action="store_true", help="check prepared folders; download nothing")
    p.add_argument("--downloads", help="where files are downloaded to and looked for (default: ROOT/downloads)")
    p.add_argument("--keep-archives", action="store_true",
                   help="keep the downloaded archives once a dataset is prepared (they are deleted by default)")
    p.add_argument("--plugin", action="append", default=[], help="a Python file that registers more datasets")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        if not args.root:
            raise CasplError("give the dataset root: --root DIR, or set DATA")
        names, every = dataset_names(import_plugins(args.plugin))
        wanted = []
        for name in args.datasets:
            if name.lower() == "all":
                wanted += every
            elif name.lower() in names:
                wanted.append(names[name.lower()])
            else:
                raise CasplError(f"no dataset {name!r} to prepare; known: all, {', '.join(a for _, a in every)}")
    except CasplError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    prep, status = Prepare(args.root, args.downloads, args.keep_archives), {}
    for cls, alias in dict(wanted).items():
        try:
            if args.check:
                folder = os.path.join(prep.root, cls.dataset_dir)
                if not os.path.isdir(folder):
                    raise CasplError(f"{folder} does not exist: python -m caspl.data.prepare {alias} prepares it")
                print(f"{cls.__name__} checks in {folder}: {report(check(cls, prep.root))}")
                status[alias] = "ready"
            else:
                status[alias] = prep.prepare(cls, alias)
                if status[alias] == "ready":
                    print(next_line(prep.root, alias, cls))
        except CasplError as err:
            print(f"Error: {err}", file=sys.stderr)
            status[alias] = "failed"
    if len(status) > 1:
        print("Summary: " + ", ".join(f"{a} {s}" for a, s in status.items()))
    return 0 if all(s == "ready" for s in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
