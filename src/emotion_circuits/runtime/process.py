"""A stage's process discipline: one writer per stage, clean exits on SIGTERM, no orphans, no stale staging.

Stages write through `store.io.staged_outputs`, which only cleans its staging folders if Python gets to run its
`finally` blocks. SIGTERM is therefore turned into an exception (like Ctrl-C), a stage asks the kernel to send it
SIGTERM when the `dvc` process that started it dies, and what a SIGKILL (the OOM killer) leaves behind is removed by
the next run of the same stage — under an exclusive lock, so it can never delete the staging of a live writer.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import logging
import os
import re
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from emotion_circuits.errors import UserError
from emotion_circuits.store import paths

log = logging.getLogger(__name__)

# Not inside results/ or metrics/: those trees are DVC outs, pushed, and compared byte for byte.
LOCKS = Path(".locks")
_PR_SET_PDEATHSIG = 1
_SHELLS = {"sh", "dash", "bash", "zsh", "ksh", "mksh", "busybox"}


class StageBusyError(UserError):
    """Another process is already writing this stage's outs."""


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM so `finally` blocks (staging cleanup) run, as for KeyboardInterrupt."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """SIGTERM (`kill`, a dying parent, a scheduler's timeout) unwinds the stage like Ctrl-C does.

    Scoped, so a stage run in-process (tests) leaves the caller's handler as it was.
    """
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def die_with_parent() -> None:
    """Get SIGTERM when the parent dies (Linux), so killing `dvc` never leaves a stage writing beside a rerun.

    DVC runs `$SHELL -c <cmd>`; bash execs the single command, so the parent is `dvc` itself. Shells that stay in
    between (dash as /bin/sh) survive their parent, so then the shell's own parent is watched instead.
    """
    if not sys.platform.startswith("linux") or "DVC_STAGE" not in os.environ:
        return  # only under DVC (it sets DVC_STAGE): a stage started by hand with `nohup` must outlive its shell
    parent = os.getppid()
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return
    if os.getppid() != parent:  # the parent died before the request took effect: no signal will come
        os.kill(os.getpid(), signal.SIGTERM)
        return
    if _comm(parent) in _SHELLS:
        grandparent = _ppid_of(parent)
        if grandparent is not None and grandparent > 1:
            threading.Thread(target=_watch_reparenting, args=(parent, grandparent), daemon=True,
                             name="die-with-parent").start()


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _ppid_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # after "pid (comm)": state, ppid


def _watch_reparenting(shell: int, grandparent: int, interval: float = 0.5) -> None:
    """The shell between `dvc` and this stage is re-parented when `dvc` dies: then stop like on SIGTERM."""
    stop = threading.Event()
    while not stop.wait(interval):
        if _ppid_of(shell) != grandparent:
            os.kill(os.getpid(), signal.SIGTERM)
            return


@contextlib.contextmanager
def stage_lock(name: str, root: Path = Path(".")) -> Iterator[None]:
    """Hold `.locks/<name>.lock` exclusively for the stage's lifetime; a second writer fails at once.

    flock is released by the kernel when the holder dies, however it dies, so a SIGKILLed stage never blocks a rerun.
    """
    locks = root / LOCKS
    locks.mkdir(exist_ok=True)
    ignore = locks / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    path = locks / f"{name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise StageBusyError(f"stage '{name}' is already running (pid {holder} holds {path}); "
                                 f"wait for it to finish or stop it, then rerun") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


_STAGING = re.compile(r"[A-Za-z0-9_]{8}")  # tempfile.mkdtemp's random suffix


def remove_stale_staging(name: str, root: Path = Path(".")) -> list[Path]:
    """Delete staging folders (`.<target>.XXXXXXXX`, see `store.io.staged_outputs`) a killed run of `name` left.

    Only call this holding the stage's lock: then no live writer of this stage can own them.
    """
    stage = paths.STAGES.get(name)
    if stage is None:
        return []
    removed = []
    for target in stage.targets():
        parent = root / target.parent
        prefix = f".{target.name}."
        if not parent.is_dir():
            continue
        for entry in sorted(parent.iterdir()):
            if (entry.name.startswith(prefix) and _STAGING.fullmatch(entry.name[len(prefix):])
                    and entry.is_dir() and not entry.is_symlink()):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    if removed:
        log.info("removed %d stale staging folder(s) of an interrupted run: %s", len(removed),
                 ", ".join(str(p.relative_to(root)) for p in removed))
    return removed


@contextlib.contextmanager
def stage_process(name: str) -> Iterator[None]:
    """What every stage run does around its body: SIGTERM unwinds, one writer, stale staging removed first."""
    with sigterm_unwinds(), stage_lock(name):
        remove_stale_staging(name)
        yield
