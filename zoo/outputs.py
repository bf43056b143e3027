"""Where results are written: output paths checked before any work starts, files written atomically,
bundle folders swapped into place under a lock, and the leftovers of killed runs cleaned up."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path

from zoo.errors import ZooError

RUNS = Path("runs")   # where `zoo train` writes unless told otherwise; the shipped weights need --replace-shipped

__all__ = ["RUNS", "writable_folder", "writable_file", "atomic_write", "write_json", "locked", "staging_folder",
           "swap_into_place", "clean_stale_staging"]


def writable_folder(path: str | Path, what: str) -> Path:
    """Create `path` if needed and prove it writable now, so a long run cannot fail at its end for
    want of a place to put its results. ZooError (exit 2) naming the path and the reason otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".zoo-write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        reason = e.strerror or str(e)
        if isinstance(e, FileExistsError) or (path.exists() and not path.is_dir()):
            reason = "it is a file, not a folder"
        raise ZooError(f"{what} {path} cannot be written: {reason}; pass a folder you can write to") from None
    return path


def writable_file(path: str | Path, what: str) -> Path:
    """A file path whose folder is writable (checked as above) and that is not itself a folder."""
    path = Path(path)
    if path.is_dir():
        raise ZooError(f"{what} {path} is a folder; expected a file path")
    writable_folder(path.parent if str(path.parent) else Path("."), what)
    return path


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path), fsync, then rename over `path`: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=str) + "\n"))


@contextlib.contextmanager
def locked(folder: Path, busy: str | None = None):
    """An exclusive advisory lock on the folder itself (flock on its descriptor: no lock file is left
    behind, and the kernel drops the lock when its holder dies) for the duration of the block. With `busy`,
    no waiting: ZooError(busy) at once when another process holds it."""
    import fcntl

    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if busy else 0))
        except BlockingIOError:
            raise ZooError(busy) from None
        yield
    finally:
        os.close(fd)   # closing releases the lock


def _host() -> str:
    return socket.gethostname().replace(".", "_")


def _owner_tag() -> str:
    return f"{_host()}-{os.getpid()}"


def staging_folder(out: Path, target: str) -> Path:
    """A private folder beside `out/target` to build it in, named after this host and process so that a
    later run can tell a killed run's leftovers (`clean_stale_staging`) from a live run's."""
    folder = Path(tempfile.mkdtemp(prefix=f".{target}.{_owner_tag()}.", suffix=".partial", dir=out))
    folder.chmod(0o755)   # mkdtemp makes it private; what is built there is meant to be shared
    return folder


def swap_into_place(staging: Path, target: Path, is_ours) -> None:
    """Replace `target` by the finished `staging` folder with renames only, under a lock on the target, so
    that readers never see it half-written and concurrent writers never interleave. `is_ours(target)` says
    whether an existing target may be replaced (it is what we write, not someone's other folder)."""
    old = None
    with locked(target.parent):
        if target.exists():
            if not is_ours(target):
                raise ZooError(f"{target} exists and is not what zoo writes there: not replacing it")
            old = target.with_name(f".{target.name}.{_owner_tag()}.{os.urandom(4).hex()}.old")
            os.rename(target, old)
        os.rename(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # someone else's live process
        return True
    return True


def clean_stale_staging(out: Path, target: str) -> list[Path]:
    """Remove `out`'s staging folders (and half-swapped `.old` folders) for `target` left by processes of
    this host that no longer run. Returns what was removed."""
    host = _host()
    removed = []
    for path in out.glob(f".{target}.*"):
        rest = path.name[len(target) + 2:]
        if not path.is_dir() or not (rest.endswith(".partial") or rest.endswith(".old")):
            continue
        owner = rest.split(".", 1)[0]
        name, _, pid = owner.rpartition("-")
        if name != host or not pid.isdigit() or _alive(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed
