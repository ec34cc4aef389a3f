"""Files named by a URL and pinned by their sha256 (`https://host/x.pt#sha256=<64 hex>`,
also `http://` and `file://`), fetched once into a cache and verified on every use.

The cache is `$CASPL_CACHE` (default `~/.cache/caspl`); a fetched file lies in its
`files/` folder named by its sha256, so a URL that moves costs no second download. A
download goes to a part file (resumed by the next try), is verified, then renamed into
place: the cache never holds a torn or a wrong file."""
import errno
import hashlib
import http.client
import os
import re
import urllib.error
import urllib.parse
import urllib.request

from tqdm import tqdm

from ..errors import CasplError

SCHEMES = ("http", "https", "file")
PIN = re.compile(r"sha256=([0-9a-fA-F]{64})")
CHUNK = 1 << 20
TIMEOUT_S = 60
ATTEMPTS = 5  # tries of a transfer that keeps stopping midway, each resuming the last


def cache_dir(*parts):
    """A folder (or file) in caspl's cache: $CASPL_CACHE, else ~/.cache/caspl."""
    root = os.environ.get("CASPL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "caspl")
    return os.path.join(root, *parts)


def is_url(text):
    return isinstance(text, str) and urllib.parse.urlsplit(text).scheme.lower() in SCHEMES


def pinned_url(url, sha256):
    """The one syntax `fetch` reads: the URL with its sha256 in the fragment."""
    return f"{url}#sha256={sha256}"


def split_pin(text, what="the URL"):
    """(URL without the fragment, sha256) of a pinned URL; one line if the pin is missing."""
    parts = urllib.parse.urlsplit(text)
    match = PIN.fullmatch(parts.fragment)
    if match is None:
        raise CasplError(f"{what} {text}: a URL must name the file's sha256, as "
                         f"{pinned_url(parts._replace(fragment='').geturl(), '<64 hex digits>')}")
    return parts._replace(fragment="").geturl(), match.group(1).lower()


def file_digests(path, kinds, progress=False):
    """{kind: hex digest} of the file ("md5", "sha256", ...), every kind in one pass; with
    `progress`, a bar (for archives of many GB)."""
    hashes = {kind: hashlib.new(kind) for kind in kinds}
    with open(path, "rb") as f, tqdm(total=os.path.getsize(path), unit="B", unit_scale=True, leave=False,
                                     desc=f"verifying {os.path.basename(path)}", disable=not progress) as bar:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            for h in hashes.values():
                h.update(chunk)
            bar.update(len(chunk))
    return {kind: h.hexdigest() for kind, h in hashes.items()}


def file_sha256(path):
    return file_digests(path, ["sha256"])["sha256"]


def _megabytes(n):
    return f"{n / 1e6:.1f} MB"


def _reason(err):
    text = str(err if isinstance(err, urllib.error.HTTPError) else getattr(err, "reason", None) or err)
    return text.splitlines()[0] if text else type(err).__name__


def download(url, path, what=None):
    """`url` -> `path`, through `path + ".part"`: the part an interrupted download left is
    resumed (an HTTP Range request) or, where the server cannot resume, restarted. A transfer
    cut off midway is retried from where it stopped. Progress goes to stderr; a failure is a
    one-line CasplError naming the file, and a part with bytes in it is kept for the next run."""
    part = path + ".part"
    what = what or os.path.basename(urllib.parse.urlsplit(url).path) or url
    for attempt in range(1, ATTEMPTS + 1):
        done = os.path.getsize(part) if os.path.isfile(part) else 0
        received = 0
        try:
            request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as src:
                if done and getattr(src, "status", None) != 206:
                    print(f"Note: {urllib.parse.urlsplit(url).netloc or url} cannot resume; downloading {what} afresh")
                    done = 0
                size = int(src.headers.get("Content-Length") or 0)
                total = done + size if size else None
                with open(part, "ab" if done else "wb") as out, \
                        tqdm(total=total, initial=done, unit="B", unit_scale=True, desc=what, leave=False) as bar:
                    for chunk in iter(lambda: src.read(CHUNK), b""):
                        out.write(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                    out.flush()
                    os.fsync(out.fileno())
                if total and done + received != total:
                    raise http.client.IncompleteRead(b"", total - done - received)
            os.replace(part, path)
            return path
        except urllib.error.HTTPError as err:
            if err.code == 416 and done:  # the part already holds every byte: verification decides
                os.replace(part, path)
                return path
            failure = err
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
            if isinstance(err, OSError) and err.errno == errno.ENOSPC:
                raise CasplError(f"no space left on the device writing {part}: free some space, or download to "
                                 "another folder; run again to resume") from None
            failure = err
        if not received or attempt == ATTEMPTS:  # nothing came (host unreachable, file gone): no use retrying
            break
        print(f"Note: the download of {what} stopped after {_megabytes(done + received)} ({_reason(failure)}); "
              "resuming")
    kept = os.path.getsize(part) if os.path.isfile(part) else 0
    if os.path.isfile(part) and not kept:
        os.remove(part)
    resume = f"; {_megabytes(kept)} kept in {part}: run again to resume" if kept else ""
    raise CasplError(f"cannot fetch {url}: {_reason(failure)}{resume}")


def fetch(text, what="the URL"):
    """The local path of the file that pinned URL `text` names: from the cache (re-verified),
    else downloaded into it. A failure is a one-line CasplError."""
    url, sha256 = split_pin(text, what)
    folder = cache_dir("files")
    path = os.path.join(folder, sha256)
    if os.path.isfile(path):
        if file_sha256(path) == sha256:
            return path
        print(f"Note: the cached {path} no longer has its sha256 (damaged); fetching {url} again")
        os.remove(path)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise CasplError(f"cannot write to the cache {folder} ({err.strerror}): set CASPL_CACHE to a folder "
                         "you can write") from None
    print(f"Fetching {url} into the cache {cache_dir()}", flush=True)
    tmp = download(url, os.path.join(folder, f".{sha256}"))
    got = file_sha256(tmp)
    if got != sha256:
        os.remove(tmp)
        raise CasplError(f"{url}: its sha256 is {got}, not the {sha256} the URL names (a changed or damaged file); "
                         "nothing was cached")
    os.replace(tmp, path)
    print(f"Fetched {url}: sha256 verified, cached as {path}")
    return path
