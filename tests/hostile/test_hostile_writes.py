"""All-or-nothing writes of ``logitlab._outputs`` in-process: failures at every step of a write
leave the old files (content and permissions) and no staging file; the real-signal and full-disk
cases run through the CLI in ``test_hostile_cli.py``."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

import logitlab._outputs as out
from logitlab._outputs import WriteError, atomic_write, write_files


def _old(d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "a.json").write_text("old a")
    (d / "b.html").write_text("old b")
    os.chmod(d / "a.json", 0o640)
    os.chmod(d / "b.html", 0o600)


def _state(d: Path) -> dict[str, tuple[str, int]]:
    return {p.name: (p.read_text(), p.stat().st_mode & 0o777) for p in sorted(d.iterdir())}


OLD_STATE = {"a.json": ("old a", 0o640), "b.html": ("old b", 0o600)}


def test_new_files_and_kept_permissions(tmp_path: Path) -> None:
    d = tmp_path / "r"
    _old(d)
    write_files(d, {"a.json": "new a", "b.html": b"new b", "c.txt": "new c"})
    mask = os.umask(0)
    os.umask(mask)
    assert _state(d) == {
        "a.json": ("new a", 0o640),  # replaced files keep their permission bits
        "b.html": ("new b", 0o600),
        "c.txt": ("new c", 0o666 & ~mask),  # a new file gets the usual mode
    }


def test_failed_second_rename_is_rolled_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "r"
    _old(d)
    real, calls = os.replace, []

    def flaky(src: object, dst: object) -> None:
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(out.os, "replace", flaky)
    with pytest.raises(WriteError, match="cannot replace the files .*nothing was changed"):
        write_files(d, {"a.json": "new a", "b.html": "new b", "c.txt": "c"})
    monkeypatch.undo()
    assert _state(d) == OLD_STATE  # a.json was replaced, then restored; no staging directory


def test_failed_staging_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "r"
    _old(d)
    real = out._write_synced

    def full(path: Path, blob: bytes, mode: int | None, pending: list[int]) -> None:
        if path.name == "b.html":
            raise OSError(28, "No space left on device")
        real(path, blob, mode, pending)

    monkeypatch.setattr(out, "_write_synced", full)
    with pytest.raises(WriteError, match=r"b\.html: cannot write \(No space left on device\)"):
        write_files(d, {"a.json": "new a", "b.html": "new b"})
    assert _state(d) == OLD_STATE
    # a directory this call created is removed again, with its new parents
    with pytest.raises(WriteError):
        write_files(tmp_path / "x" / "y", {"a.json": "1", "b.html": "2"})
    assert not (tmp_path / "x").exists()


def test_bad_targets_and_arguments(tmp_path: Path) -> None:
    d = tmp_path / "r"
    _old(d)
    (d / "sub").mkdir()
    with pytest.raises(WriteError, match=r"sub: cannot write \(is a directory\)"):
        write_files(d, {"a.json": "new", "sub": "x"})
    (d / "sub").rmdir()
    assert _state(d) == OLD_STATE
    with pytest.raises(WriteError, match="cannot create the output directory"):
        write_files(d / "a.json", {"x": "1"})  # a file where the directory should be
    with pytest.raises(TypeError, match="must be str or bytes"):
        write_files(d, {"a.json": 123})  # type: ignore[dict-item]
    for bad in ("", ".", "..", "x/y"):
        with pytest.raises(ValueError, match="not a plain file name"):
            write_files(d, {bad: "1"})
    assert _state(d) == OLD_STATE


def test_no_hard_links_falls_back_to_copies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "r"
    _old(d)

    def no_link(*a: object, **k: object) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(out.os, "link", no_link)
    write_files(d, {"a.json": "new a"})
    assert _state(d)["a.json"] == ("new a", 0o640)


def test_symlink_target_is_replaced_not_followed(tmp_path: Path) -> None:
    d = tmp_path / "r"
    d.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    (d / "a.json").symlink_to(outside)
    atomic_write(d / "a.json", "new")
    assert outside.read_text() == "keep" and not (d / "a.json").is_symlink()
    assert (d / "a.json").read_text() == "new"


def test_signal_while_staging_stops_the_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "r"
    _old(d)
    real = out._write_synced
    got: list[int] = []

    def interrupted(path: Path, blob: bytes, mode: int | None, pending: list[int]) -> None:
        if path.name == "b.html":
            signal.raise_signal(signal.SIGTERM)  # a real signal, recorded by the writer
        real(path, blob, mode, pending)

    monkeypatch.setattr(out, "_write_synced", interrupted)
    old_handler = signal.signal(signal.SIGTERM, lambda s, f: got.append(s))
    try:
        with pytest.raises(WriteError, match="interrupted by signal 15 while writing"):
            write_files(d, {"a.json": "new a", "b.html": "new b"})
    finally:
        signal.signal(signal.SIGTERM, old_handler)
    assert got == [signal.SIGTERM]  # re-raised to the caller's handler after the clean-up
    assert _state(d) == OLD_STATE


def test_signal_during_commit_waits_for_the_whole_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "r"
    _old(d)
    got: list[tuple[int, dict[str, tuple[str, int]]]] = []
    real = os.replace

    def replace(src: object, dst: object) -> None:
        real(src, dst)  # type: ignore[arg-type]
        if str(dst).endswith("a.json"):
            signal.raise_signal(signal.SIGINT)  # between the two renames

    monkeypatch.setattr(out.os, "replace", replace)
    old_handler = signal.signal(signal.SIGINT, lambda s, f: got.append((s, _state(d))))
    try:
        write_files(d, {"a.json": "new a", "b.html": "new b"})
    finally:
        signal.signal(signal.SIGINT, old_handler)
    # the handler ran once, after both files were in place and the staging directory was gone
    assert got == [(signal.SIGINT, {"a.json": ("new a", 0o640), "b.html": ("new b", 0o600)})]


def test_ignored_signals_stay_ignored_and_threads_write(tmp_path: Path) -> None:
    old_handler = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with out._signals_deferred() as pending:
            assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
            signal.raise_signal(signal.SIGTERM)
        assert pending == []
    finally:
        signal.signal(signal.SIGTERM, old_handler)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            write_files(tmp_path / "t", {"a.json": "from a thread"})
        except BaseException as exc:
            errors.append(exc)

    th = threading.Thread(target=work)
    th.start()
    th.join()
    assert not errors and (tmp_path / "t" / "a.json").read_text() == "from a thread"
