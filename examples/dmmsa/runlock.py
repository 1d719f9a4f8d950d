"""One run per output folder: ``OUT/.lock`` names the process that writes there.

Two ``train.py`` (or ``compare``) processes on one ``--out`` would interleave their checkpoints
and leave a ``config.json`` and a ``results.json`` that describe different runs. The first takes
the lock; a second is refused with a message that names the holder (program, pid, host, start
time). A lock whose process has died on this host (killed, out of memory) is stale and taken
over, with a line in the log; a lock from another host cannot be checked and is never taken
over (delete it by hand once that run is gone).

Under ``torchrun`` only rank 0 holds the lock: the other ranks write nothing of their own.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["LOCK_NAME", "hold_file", "hold_output", "prepare_output"]

LOCK_NAME = ".lock"


def prepare_output(out: Path, program: str) -> None:
    """Create ``out`` (a folder), or refuse with one line when it names something else."""
    if out.exists() and not out.is_dir():
        raise SystemExit(f"{program}: error: --out {out}: is a file; expected a folder (a new "
                         "one, or the folder of an earlier run to --resume)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SystemExit(f"{program}: error: --out {out}: cannot create the folder "
                         f"({error.strerror or error})") from None


@contextlib.contextmanager
def hold_output(out: Path, program: str,
                log: Callable[[str], None] = print) -> Iterator[Path]:
    """Hold ``out``'s lock while the block runs (rank 0 of a ``torchrun`` job only).

    Raises:
        SystemExit: ``out`` is a file, or another live process holds its lock.
    """
    if os.environ.get("RANK", "0") != "0":
        yield out
        return
    prepare_output(out, program)
    with _held(out / LOCK_NAME, f"--out {out}", program, log):
        yield out


@contextlib.contextmanager
def hold_file(path: Path, program: str, log: Callable[[str], None] = print) -> Iterator[Path]:
    """Hold ``<path>.lock`` while the block runs: one process writes ``path`` at a time."""
    with _held(path.with_name(path.name + ".lock"), f"--out {path}", program, log):
        yield path


@contextlib.contextmanager
def _held(lock: Path, target: str, program: str, log: Callable[[str], None]) -> Iterator[None]:
    _acquire(lock, target, program, log)
    try:
        yield
    finally:
        _release(lock)


def _holder_record(program: str) -> dict[str, object]:
    return {"program": program, "pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}


def _acquire(lock: Path, target: str, program: str, log: Callable[[str], None]) -> None:
    """Create ``lock`` atomically (complete content, or nothing); take over a stale one once."""
    for _ in range(2):
        if _create(lock, _holder_record(program)):
            return
        holder = _read(lock)
        if holder is not None and _alive_here(holder) is not False:
            raise SystemExit(f"{program}: error: {target}: another run writes there "
                             f"({_describe(holder)}); wait for it to finish, or choose another "
                             f"--out")
        log(f"{lock}: taking over a stale lock ({_describe(holder) if holder else 'unreadable'}"
            ", that process no longer runs)")
        lock.unlink(missing_ok=True)
    raise SystemExit(f"{program}: error: {target}: another run took its lock at the same "
                     "moment; choose another --out")


def _create(lock: Path, record: dict[str, object]) -> bool:
    """Write ``record`` to a private file, then link it to ``lock`` (fails if ``lock`` exists)."""
    private = lock.with_name(f"{lock.name}.{os.getpid()}.tmp")
    private.write_text(json.dumps(record))
    try:
        os.link(private, lock)
        return True
    except FileExistsError:
        return False
    finally:
        private.unlink(missing_ok=True)


def _read(lock: Path) -> dict[str, object] | None:
    try:
        holder = json.loads(lock.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None


def _alive_here(holder: dict[str, object]) -> bool | None:
    """Whether the holder runs (``None``: it ran on another host, which cannot be checked)."""
    if holder.get("host") != socket.gethostname():
        return None
    pid = holder["pid"]
    assert isinstance(pid, int)
    if pid == os.getpid():
        return False  # a lock left by an earlier run in this process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(holder: dict[str, object]) -> str:
    return (f"{holder.get('program', '?')}, pid {holder.get('pid')} on host "
            f"{holder.get('host', '?')}, started {holder.get('started', '?')}")


def _release(lock: Path) -> None:
    """Delete the lock if it is still this process's."""
    holder = _read(lock)
    if holder is not None and holder.get("pid") == os.getpid() \
            and holder.get("host") == socket.gethostname():
        lock.unlink(missing_ok=True)
