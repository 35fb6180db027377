"""Writing output files all or nothing: a set of files (:func:`write_files`) or one
(:func:`atomic_write`).

The new files are written into a private staging directory beside the targets (``.logitlab-*``,
same filesystem), each flushed to disk with ``fsync``; only then are the targets replaced, by
renames, which need no new data blocks. A full disk or a file-size limit therefore fails while
staging, before any target is touched. The old files are hard-linked into the staging directory
first, so that a rename that fails midway is rolled back. SIGINT, SIGTERM and SIGHUP are deferred
for the whole call (where the caller is the main thread): one that arrives while staging stops it
and the call cleans up and leaves the old files; one that arrives during the renames waits until
the set is complete. Either way the signal is re-raised afterwards, so the process still stops,
and no staging file is left behind. Replaced files keep their permission bits; new ones get the
usual ``0o666 & ~umask``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

__all__ = ["WriteError", "write_files", "atomic_write"]

_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))
_PIECE = 1 << 20  # bytes per write: a deferred signal is noticed between pieces


class WriteError(OSError):
    """An output could not be written; the message names the file, and the old files are intact."""


class _Stop(Exception):
    """A deferred signal arrived while staging: abandon the write."""


@contextlib.contextmanager
def _signals_deferred() -> Iterator[list[int]]:
    """Record SIGINT/SIGTERM/SIGHUP instead of acting on them; re-raise the first on exit.

    Yields the list of signals received so far. Only possible in the main thread (the only one
    that may set handlers); elsewhere nothing is deferred. Ignored signals stay ignored, and a
    handler installed outside Python (``getsignal`` is ``None``) is left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield []
        return
    pending: list[int] = []

    def record(signum: int, frame: object) -> None:
        pending.append(signum)

    old = {}
    for s in _SIGNALS:
        h = signal.getsignal(s)
        if h is not None and h != signal.SIG_IGN:
            old[s] = signal.signal(s, record)
    try:
        yield pending
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if pending:
            signal.raise_signal(pending[0])


def _test_pause(point: str, pending: list[int]) -> None:
    """Test-only hook: with ``_LOGITLAB_TEST_PAUSE=point`` in the environment, create the file
    named by ``_LOGITLAB_TEST_PAUSE_FILE`` and wait (at most 60 s) for a signal, so that a test
    can deliver a real signal at exactly this point of a write. Does nothing otherwise."""
    if os.environ.get("_LOGITLAB_TEST_PAUSE") != point:
        return
    Path(os.environ["_LOGITLAB_TEST_PAUSE_FILE"]).touch()
    deadline = time.monotonic() + 60
    while not pending and time.monotonic() < deadline:
        time.sleep(0.005)


def _fsync_dir(d: Path) -> None:
    # makes the renames durable; some filesystems cannot fsync a directory (EINVAL): not an error
    with contextlib.suppress(OSError):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_synced(path: Path, blob: bytes, mode: int | None, pending: list[int]) -> None:
    # 0o666 is masked by the umask, as for any new file; a replaced file's mode is copied
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        view = memoryview(blob)
        while view:
            if pending:
                raise _Stop
            n = os.write(fd, view[:_PIECE])
            view = view[n:]
        if mode is not None:
            os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)


def _missing_parents(d: Path) -> list[Path]:
    """``d`` and its ancestors that do not exist yet, deepest first."""
    out = []
    while not d.exists() and d != d.parent:
        out.append(d)
        d = d.parent
    return out


def write_files(directory: str | os.PathLike[str], files: Mapping[str, str | bytes]) -> None:
    """Write ``files`` (name -> text or bytes) into ``directory``, all or nothing.

    After the call either every file holds its new content or, if it raised, every target is as
    it was before (files that did not exist still do not, nor does a directory it created). See
    the module docstring for how, and for signals.

    Args:
        directory: the output directory (created with its parents if missing).
        files: plain file names (no path separators) and their contents; ``str`` is UTF-8 encoded.

    Raises:
        TypeError: a content that is neither ``str`` nor ``bytes``.
        ValueError: a name that is not a plain file name.
        WriteError: a file could not be written (disk full, file-size limit, permissions, a target
            that is a directory, or a signal while staging); nothing was changed.

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> write_files(d, {"a.json": "{}", "b.html": "<p>"})
        >>> sorted(os.listdir(d))
        ['a.json', 'b.html']
    """
    d = Path(directory)
    blobs: dict[str, bytes] = {}
    for name, data in files.items():
        if not isinstance(data, (str, bytes)):
            raise TypeError(f"the content of {name!r} must be str or bytes, got {type(data)}")
        if not name or name in (".", "..") or os.sep in name or (os.altsep and os.altsep in name):
            raise ValueError(f"{name!r} is not a plain file name")
        blobs[name] = data.encode() if isinstance(data, str) else data
    with _signals_deferred() as pending:
        made = _missing_parents(d)
        try:
            d.mkdir(parents=True, exist_ok=True)
            stage = Path(tempfile.mkdtemp(prefix=".logitlab-", dir=d))
        except OSError as exc:
            _remove_dirs(made)
            raise WriteError(f"{d}: cannot create the output directory ({_why(exc)})") from exc
        ok = False
        try:
            _stage_and_commit(d, stage, blobs, pending)
            ok = True
        finally:
            shutil.rmtree(stage, ignore_errors=True)
            if not ok:
                _remove_dirs(made)


def _stage_and_commit(d: Path, stage: Path, blobs: dict[str, bytes], pending: list[int]) -> None:
    old = stage / "old"
    old.mkdir()
    backups: dict[str, Path] = {}
    target = d
    try:
        for name, blob in blobs.items():
            target = d / name
            if target.is_dir() and not target.is_symlink():
                raise IsADirectoryError(21, "is a directory")
            mode = None
            if target.exists():
                mode = stat.S_IMODE(target.stat().st_mode)
            if target.exists() or target.is_symlink():
                backups[name] = old / name
                try:
                    os.link(target, backups[name], follow_symlinks=False)
                except OSError:  # no hard links on this filesystem: a copy is as good a backup
                    shutil.copy2(target, backups[name], follow_symlinks=False)
            _write_synced(stage / name, blob, mode, pending)
            _test_pause(f"staged:{name}", pending)
            if pending:
                raise _Stop
        _fsync_dir(stage)
    except _Stop:
        raise WriteError(
            f"{d}: interrupted by signal {pending[0]} while writing; nothing was changed"
        ) from None
    except OSError as exc:
        raise WriteError(f"{target}: cannot write ({_why(exc)}); nothing was changed") from exc
    # commit: renames only; a signal now waits until every file is in place
    done: list[str] = []
    try:
        for name in blobs:
            os.replace(stage / name, d / name)
            done.append(name)
            _test_pause("commit", pending)
        _fsync_dir(d)
    except BaseException as exc:
        for name in reversed(done):  # roll back: restore the old file, or remove the new one
            with contextlib.suppress(OSError):
                if name in backups:
                    os.replace(backups[name], d / name)
                else:
                    os.unlink(d / name)
        if isinstance(exc, OSError):
            raise WriteError(
                f"{d}: cannot replace the files ({_why(exc)}); nothing was changed"
            ) from exc
        raise


def _remove_dirs(dirs: list[Path]) -> None:
    for p in dirs:  # deepest first; only if still empty
        with contextlib.suppress(OSError):
            p.rmdir()


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def atomic_write(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Write one file all or nothing: :func:`write_files` with a single file.

    Raises:
        TypeError: ``data`` is neither ``str`` nor ``bytes``.
        WriteError: the file could not be written; the old one is intact.

    Example:
        >>> import tempfile, os
        >>> f = os.path.join(tempfile.mkdtemp(), "sub", "r.json")
        >>> atomic_write(f, "{}"); open(f).read()
        '{}'
    """
    p = Path(path)
    write_files(p.parent, {p.name: data})
