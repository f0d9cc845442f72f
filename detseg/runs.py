"""Output run folders: ``runs/<command>/<name>``, auto-incremented, never overwritten.

The conventions every writer of a run folder follows:

- a file is written under a temporary name (``temporary_path``: hidden, ``.tmp`` before the
  suffix) and renamed into place once complete, so a killed run never leaves a half-written file
  under its final name;
- an inference run claims its folder (``RunFolderClaim``): a hidden marker file, ``.detseg-run``,
  locked while the run is alive. Later runs skip marked folders found among their inputs, and the
  temporaries in a marked folder that nobody holds are stale (their run was killed): the next run
  into that folder removes them.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from detseg.errors import OutputFolderError, UsageError

try:  # POSIX advisory locks; without them a claim only writes the marker
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

RUN_MARKER = ".detseg-run"
# ``.NAME.tmp`` / ``.NAME.tmp.SUFFIX`` (temporary_path) and ``.NAME.HEX.tmp`` (weights' atomic
# writes, e.g. ``.last.pt.1a2b3c4d.tmp``).
_TEMPORARY = re.compile(r"^\..+\.tmp(\.[A-Za-z0-9]+)?$")


def temporary_path(path: str | Path) -> Path:
    """The hidden name ``path`` is written under before it is renamed into place:
    ``dir/.STEM.tmp.SUFFIX`` (the suffix stays last, for writers that pick the format from it)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp{path.suffix}")


def is_temporary(name: str) -> bool:
    """Whether a file name is one of detseg's temporary names (see ``temporary_path``)."""
    return bool(_TEMPORARY.match(name))


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files a killed run left in ``folder`` and its subfolders (links
    not followed); returns the paths removed. Call it only when no run writes there."""
    removed: list[Path] = []
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            path = Path(dirpath) / name
            if is_temporary(name) and path.is_file() and not path.is_symlink():
                try:
                    path.unlink()
                except OSError:
                    continue
                removed.append(path)
    return removed


def check_run_name(name: str) -> str:
    """``name`` if it is one plain folder name; ``UsageError`` for ``..``, separators or
    blanks (a run name must never lead outside its ``runs/<command>`` folder)."""
    if (not name or name in (".", "..") or name != name.strip()
            or any(ch in name for ch in ("/", "\\", "\0"))):
        raise UsageError(f"name {name!r}: must be a plain folder name (no '/', '\\' or '..')")
    return name


def _reason(err: OSError) -> str:
    return err.strerror or str(err)


def _first_file_above(path: Path) -> Path | None:
    """The nearest ancestor of ``path`` that exists and is not a folder, if any."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def _make_folder(path: Path) -> None:
    """``mkdir -p path``, turning every failure into one ``OutputFolderError`` line."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as err:
        raise OutputFolderError(f"output folder {path}: a file has that name") from err
    except NotADirectoryError as err:
        blocker = _first_file_above(path)
        where = f"{blocker} is a file" if blocker is not None else _reason(err)
        raise OutputFolderError(f"cannot create output folder {path}: {where}") from err
    except OSError as err:
        raise OutputFolderError(f"cannot create output folder {path} ({_reason(err)})") from err


def _check_writable(path: Path) -> None:
    """Create and remove a probe file in ``path``; ``OutputFolderError`` if that fails."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".detseg-probe-", suffix=".tmp", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputFolderError(f"output folder {path} is not writable ({_reason(err)})") from err


def _check_reusable(path: Path) -> None:
    """An existing ``out`` folder may be used when it holds nothing but the marker of a run that
    ended (whose stale temporaries are removed first)."""
    if not path.is_dir():
        raise OutputFolderError(f"output folder {path}: a file has that name")
    if is_claimed(path):
        raise OutputFolderError(f"output folder {path} is in use by a running detseg command")
    try:
        if (path / RUN_MARKER).is_file():
            remove_stale_temporaries(path)
        left = [p for p in path.iterdir() if p.name != RUN_MARKER]
    except OSError as err:
        raise OutputFolderError(f"cannot read output folder {path} ({_reason(err)})") from err
    if left:
        raise OutputFolderError(f"{path}: output folder exists and is not empty; pick another "
                                f"output folder")


def new_run_dir(command: str, name: str = "exp", out: str | Path | None = None,
                root: str | Path = "runs") -> Path:
    """Create and return a fresh, writable output folder.

    With ``out`` given, that folder is used and must not already hold files (the marker of a
    finished run aside). Otherwise ``root/command/name``, then ``name2``, ``name3``, ... (as
    Ultralytics does) until one is free; ``name`` must be a plain folder name. The folder is
    created atomically with ``mkdir`` so two processes never share one. Raises
    ``OutputFolderError`` (one line naming the folder) when it cannot be created or written.
    """
    if out is not None:
        path = Path(out)
        if path.exists() or path.is_symlink():
            _check_reusable(path)
        _make_folder(path)
        _check_writable(path)
        return path
    check_run_name(name)
    base = Path(root) / command
    _make_folder(base)
    k = 1
    while True:
        path = base / (name if k == 1 else f"{name}{k}")
        try:
            path.mkdir()
            break
        except FileExistsError:
            k += 1
        except OSError as err:
            raise OutputFolderError(f"cannot create output folder {path} ({_reason(err)})") \
                from err
    _check_writable(path)
    return path


def is_claimed(folder: str | Path) -> bool:
    """Whether a live run holds ``folder``'s marker."""
    marker = Path(folder) / RUN_MARKER
    if fcntl is None or not marker.is_file():
        return False
    try:
        fd = os.open(marker, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


def is_run_folder(folder: str | Path) -> bool:
    """Whether ``folder`` is the output folder of a detseg inference run (it has the marker)."""
    return (Path(folder) / RUN_MARKER).is_file()


class RunFolderClaim:
    """A live run's hold on its output folder: the marker file, locked until ``release``.

    Raises ``OutputFolderError`` when another live run holds the folder.
    """

    def __init__(self, folder: str | Path, command: str) -> None:
        self.path = Path(folder) / RUN_MARKER
        try:
            self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise OutputFolderError(f"output folder {folder} is not writable "
                                    f"({_reason(err)})") from err
        if fcntl is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                self.release()
                raise OutputFolderError(f"output folder {folder} is in use by a running detseg "
                                        f"command") from err
        note = json.dumps({"command": command, "pid": os.getpid()}) + "\n"
        try:
            os.ftruncate(self._fd, 0)
            os.write(self._fd, note.encode())
        except OSError:
            pass  # an empty marker still marks the folder (a full disk, say)

    def release(self) -> None:
        """Unlock the marker (it stays, tagging the folder as a run's); safe to call twice."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
