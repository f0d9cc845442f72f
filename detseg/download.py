"""Verified, resumable HTTP downloads for weight files.

``download(url, dest)`` streams into ``<dest>.part`` next to the destination, hashes while it
writes, and renames to ``dest`` only once the sha256 matches, so a corrupt file never sits under
the final name. An interrupted transfer leaves the ``.part`` file behind and the next call
resumes it with an HTTP ``Range`` request when the server supports one. Every failure raises
one ``WeightsError`` whose message names the file, the URL and the two ways to supply the file
by hand. Library code never draws progress bars: callers pass a ``progress(done, total)``
callback.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, BinaryIO

from detseg import __version__
from detseg.errors import UsageError, WeightsError

if TYPE_CHECKING:
    import http.client

ProgressCallback = Callable[[int, "int | None"], None]

# Makes a progress callback for one download: ``factory(file_name)`` is a context manager
# yielding the callback. The command line installs one that draws a bar; the library draws none.
ProgressFactory = Callable[[str], AbstractContextManager[ProgressCallback]]
_progress_factory: ProgressFactory | None = None

TIMEOUT_ENV = "DETSEG_DOWNLOAD_TIMEOUT"
DEFAULT_TIMEOUT_S = 10.0
CHUNK_BYTES = 1 << 20

# torchvision / torch.hub file names end in ``-<first 8+ hex digits of the sha256>.<ext>``.
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")
_HEX = re.compile(r"^[0-9a-f]{8,64}$")

fcntl: ModuleType | None
try:  # advisory locks: parallel processes wait for one download
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


def set_progress_factory(factory: ProgressFactory | None) -> ProgressFactory | None:
    """Install the progress factory used by downloads given no ``progress``; return the old one.

    This lets a front end show progress for downloads deep inside library calls (a backbone's
    ImageNet weights while building a model) without threading a callback through them.
    """
    global _progress_factory
    previous, _progress_factory = _progress_factory, factory
    return previous


def hash_prefix_from_name(name: str) -> str | None:
    """The sha256 prefix in a torchvision-style file name (``resnet50-11ad3fa6.pth``), or None."""
    match = _HASH_IN_NAME.search(Path(name).name)
    return match.group(1) if match else None


def normalize_sha256(sha256: str) -> str:
    """Lower-case ``sha256`` (full digest or a prefix of at least 8 hex digits), or raise."""
    value = sha256.strip().lower()
    if not _HEX.match(value):
        raise WeightsError(
            f"invalid sha256 {sha256!r}: expected 8 to 64 hex digits (a full digest or its prefix)"
        )
    return value


def sha256_file(path: str | Path) -> str:
    """The full hex sha256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def hash_matches(digest: str, expected: str) -> bool:
    """Whether the full hex ``digest`` matches ``expected`` (a full digest or a prefix)."""
    return digest.startswith(normalize_sha256(expected))


def download_timeout() -> float:
    """Seconds to wait for a connection or for the next bytes (``$DETSEG_DOWNLOAD_TIMEOUT``)."""
    raw = os.environ.get(TIMEOUT_ENV)
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise UsageError(f"{TIMEOUT_ENV} must be positive, got {raw!r}")
    return value


def how_to_supply(file_name: str) -> str:
    """The sentence telling a user how to provide ``file_name`` without a download."""
    return (
        f"fetch {file_name} on a machine with internet access, then run "
        f"`detseg weights import FILE`, or pass `--weights PATH`"
    )


def download(
    url: str,
    dest: str | Path,
    sha256: str | None = None,
    progress: ProgressCallback | None = None,
) -> Path:
    """Download ``url`` to ``dest`` (a file path, or an existing folder), verified and atomic.

    Args:
        url: an ``http://`` or ``https://`` address.
        dest: the final file path; when it is an existing folder the URL's file name is used.
        sha256: the expected digest (full, or a prefix of 8+ hex digits). When None, the hash
            prefix in the file name is used if it has one (``name-<hex>.pth``); otherwise the
            file is not verified.
        progress: called as ``progress(done_bytes, total_bytes or None)`` while streaming;
            when None, the factory installed with ``set_progress_factory`` (if any) makes one.

    Returns:
        The path of the verified file.

    Raises:
        WeightsError: unreachable server, HTTP error, timeout, cut-off transfer (the partial file
            is kept and resumed next time) or checksum mismatch (the partial file is deleted).
    """
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ("http", "https"):
        raise WeightsError(f"cannot download {url!r}: only http:// and https:// URLs are supported")
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / url_file_name(url)
    expected = sha256 or hash_prefix_from_name(dest.name) or hash_prefix_from_name(url)
    if expected:
        expected = normalize_sha256(expected)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if progress is None and _progress_factory is not None:
        with _progress_factory(dest.name) as callback:
            return download(url, dest, expected, callback)
    existed = dest.exists()
    with _download_lock(dest):
        if dest.is_file() and not existed:  # another process finished it while we waited
            return dest
        part = dest.with_name(dest.name + ".part")
        with open(part, "ab") as fh:
            try:
                digest = _fetch(url, dest, fh, part, expected, progress, download_timeout())
            except WeightsError:
                if part.stat().st_size == 0:  # nothing worth resuming
                    part.unlink(missing_ok=True)
                raise
            if expected and not digest.startswith(expected):
                fh.close()
                part.unlink(missing_ok=True)
                raise WeightsError(
                    f"checksum mismatch for {dest.name} downloaded from {url}: expected sha256 "
                    f"{expected}..., got {digest[: len(expected)]}...; the download was "
                    f"discarded (a proxy or mirror may have altered it); "
                    f"{how_to_supply(dest.name)}"
                )
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(part, dest)
    return dest


def url_file_name(url: str) -> str:
    """The last path component of ``url`` (the name a download is stored under)."""
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    if not name:
        raise WeightsError(f"cannot tell a file name from the URL {url!r}")
    return name


@contextmanager
def _download_lock(dest: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``dest``'s download, so parallel processes (DDP ranks) wait
    for one download instead of writing the same partial file. A no-op without ``fcntl``."""
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    lock = dest.with_name(f".{dest.name}.lock")
    while True:
        fh = open(lock, "a")  # noqa: SIM115 - held until the download ends
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            if os.stat(lock).st_ino == os.fstat(fh.fileno()).st_ino:
                break  # still the live lock file, not one a finished holder removed
        except FileNotFoundError:
            pass
        fh.close()
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        fh.close()


def _fetch(
    url: str,
    dest: Path,
    fh: BinaryIO,
    part: Path,
    expected: str | None,
    progress: ProgressCallback | None,
    timeout: float,
) -> str:
    """Stream ``url`` into ``fh`` (resuming what ``part`` already holds); return the sha256."""
    import http.client  # imported here: the command line starts faster without them
    import urllib.error
    import urllib.request

    have = part.stat().st_size
    digest = hashlib.sha256()
    if have:
        with open(part, "rb") as existing:
            while chunk := existing.read(CHUNK_BYTES):
                digest.update(chunk)
        if expected and digest.hexdigest().startswith(expected):
            return digest.hexdigest()  # a complete file left behind by an interrupted rename
    headers = {"User-Agent": f"detseg/{__version__}"}
    if have:
        headers["Range"] = f"bytes={have}-"

    def fail(reason: str) -> WeightsError:
        return WeightsError(
            f"could not download {dest.name} from {url}: {reason}; {how_to_supply(dest.name)}"
        )

    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                          timeout=timeout)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 416 and have:  # our partial file is not a prefix of this resource
            fh.truncate(0)
            return _fetch(url, dest, fh, part, expected, progress, timeout)
        raise fail(f"HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise fail(_reason(err)) from None

    with response:
        start = _resume_offset(response, have)
        if start is None:  # a 206 for some other range: drop the partial file
            fh.truncate(0)
            raise fail("the server answered the resume request with a different range; "
                       "run again to download from the start")
        if start == 0 and have:  # the server ignored the Range request: start over
            fh.truncate(0)
            fh.seek(0)
            digest = hashlib.sha256()
        length = response.headers.get("Content-Length")
        remaining = int(length) if length and length.isdigit() else None
        total = start + remaining if remaining is not None else None
        done = start
        if progress:
            progress(done, total)
        try:
            while chunk := response.read(CHUNK_BYTES):
                fh.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
        except (OSError, http.client.HTTPException) as err:
            fh.flush()
            raise fail(f"{_reason(err)} after {done} bytes (run again to resume)") from None
    fh.flush()
    if total is not None and done < total:
        raise fail(f"transfer cut off after {done} of {total} bytes (run again to resume)")
    return digest.hexdigest()


def _resume_offset(response: http.client.HTTPResponse, have: int) -> int | None:
    """Where the body of ``response`` starts in the file.

    0 for a full (200) answer, ``have`` for a 206 that continues our partial file, None for a
    206 that starts anywhere else.
    """
    if response.status != 206:
        return 0
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return have if match and int(match.group(1)) == have else None


def _reason(err: BaseException) -> str:
    """A short human reason for a network error (no traceback, no nested reprs)."""
    import http.client
    import urllib.error

    if isinstance(err, urllib.error.URLError) and not isinstance(err.reason, str):
        err = err.reason
    if isinstance(err, TimeoutError):
        return f"no answer within {download_timeout():g} s (set {TIMEOUT_ENV} to wait longer)"
    if isinstance(err, socket.gaierror):
        return "cannot resolve the server's host name (offline, or no DNS)"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused (offline, or the server is down)"
    if isinstance(err, http.client.IncompleteRead):
        return "transfer cut off"
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return text.rstrip(".")
