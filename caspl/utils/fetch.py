"""Files named by a URL and pinned by their sha256 (`https://host/x.pt#sha256=<64 hex>`,
also `http://` and `file://`), fetched once into a cache and verified on every use.

The cache is `$CASPL_CACHE` (default `~/.cache/caspl`); a fetched file lies in its
`files/` folder named by its sha256, so a URL that moves costs no second download. A
download goes to a temporary file, is verified, then renamed into place: the cache never
holds a torn or a wrong file."""
import hashlib
import http.client
import os
import re
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request

from ..errors import CasplError

SCHEMES = ("http", "https", "file")
PIN = re.compile(r"sha256=([0-9a-fA-F]{64})")
CHUNK = 1 << 20
TIMEOUT_S = 60


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


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _megabytes(n):
    return f"{n / 1e6:.1f} MB"


def _download(url, sha256, fd, tmp):
    """Download into the open temporary file (`fd`, `tmp`); returns `tmp` once its sha256 is `sha256`."""
    try:
        h, done = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as src:
            size = int(src.headers.get("Content-Length") or 0)
            print(f"Fetching {url}" + (f" ({_megabytes(size)})" if size else "") + " into the cache "
                  f"{cache_dir()}", flush=True)
            live = sys.stderr.isatty()
            for chunk in iter(lambda: src.read(CHUNK), b""):
                out.write(chunk)
                h.update(chunk)
                done += len(chunk)
                if live:
                    sys.stderr.write(f"\r  {_megabytes(done)}" + (f" / {_megabytes(size)}" if size else ""))
            if live:
                sys.stderr.write("\n")
            out.flush()
            os.fsync(out.fileno())
        if h.hexdigest() != sha256:
            raise CasplError(f"{url}: its sha256 is {h.hexdigest()}, not the {sha256} the URL names "
                             "(a changed or damaged file); nothing was cached")
        return tmp
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
        os.remove(tmp)
        reason = str(err if isinstance(err, urllib.error.HTTPError) else getattr(err, "reason", None) or err)
        raise CasplError(f"cannot fetch {url}: {reason.splitlines()[0] if reason else type(err).__name__}") from None
    except BaseException:
        os.remove(tmp)
        raise


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
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".part-")
    except OSError as err:
        raise CasplError(f"cannot write to the cache {folder} ({err.strerror}): set CASPL_CACHE to a folder "
                         "you can write") from None
    os.replace(_download(url, sha256, fd, tmp), path)
    print(f"Fetched {url}: sha256 verified, cached as {path}")
    return path
