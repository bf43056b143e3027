"""Where results are written: output paths checked before any work starts, files written atomically,
bundle folders swapped into place under a lock, and the leftovers of killed runs cleaned up."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path

from zoo.errors import ZooError

RUNS = Path("runs")   # where `zoo train` writes unless told otherwise; the shipped weights need --replace-shipped

__all__ = ["RUNS", "WriteFailed", "writable_folder", "writable_file", "atomic_write", "write_json", "locked", "staging_folder",
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
        if isinstance(e, FileExistsError) or _is(path, "file"):
            reason = "it is a file, not a folder"
        raise ZooError(f"{what} {path} cannot be written: {reason}; pass a folder you can write to") from None
    return path


def _is(path: Path, kind: str) -> bool:
    """Whether `path` is an existing file/folder; False for a path the system cannot even look up (a name
    longer than the filesystem allows), which the caller's next step then reports."""
    try:
        return path.is_file() if kind == "file" else path.is_dir()
    except OSError:
        return False


def writable_file(path: str | Path, what: str) -> Path:
    """A file path whose folder is writable (checked as above) and that is not itself a folder."""
    path = Path(path)
    if _is(path, "folder"):
        raise ZooError(f"{what} {path} is a folder; expected a file path")
    writable_folder(path.parent if str(path.parent) else Path("."), what)
    try:
        path.lstat()   # a name the filesystem refuses (too long) is refused here, not after the work
    except FileNotFoundError:
        pass
    except OSError as e:
        raise ZooError(f"{what} {path} cannot be written: {e.strerror or e}") from None
    return path


def _new_entry(folder: Path, prefix: str, suffix: str, make) -> Path:
    """A fresh randomly named entry in `folder`, made by `make(path)` (which fails on a name taken). Unlike
    mkstemp/mkdtemp (always private), os.open and os.mkdir with modes 0o666/0o777 let the umask decide, so
    what zoo writes gets the permissions any other program's files get."""
    for _ in range(100):
        path = folder / f"{prefix}{os.urandom(6).hex()}{suffix}"
        try:
            make(path)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free name for {prefix}*{suffix} in {folder}")


def _new_file(path: Path) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


class WriteFailed(ZooError):
    """A write the system refused (a full disk, a file-size limit): `reason` says why, the message names the path."""

    def __init__(self, path: Path, error: OSError):
        self.reason = error.strerror or str(error)
        super().__init__(f"cannot write {path}: {self.reason}")


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path), fsync, then rename over `path`: readers never see a partial file. The file's
    permissions follow the umask. A write the system refuses (a full disk) is one ZooError naming `path`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _new_entry(path.parent, f".{path.name}.", ".tmp", _new_file)
        mode = stat.S_IMODE(tmp.stat().st_mode)   # 0o666 less the umask
    except OSError as e:
        raise WriteFailed(path, e) from None
    try:
        write(tmp)
        os.chmod(tmp, mode)   # a writer that replaces the file (safetensors does) leaves it private
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise WriteFailed(path, e) from None
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
    """A folder beside `out/target` to build it in (permissions per the umask), named after this host and
    process so that a later run can tell a killed run's leftovers (`clean_stale_staging`) from a live run's."""
    return _new_entry(out, f".{target}.{_owner_tag()}.", ".partial", lambda path: os.mkdir(path, 0o777))


def swap_into_place(staging: Path, target: Path, is_ours, zoo_writes=lambda name: False,
                    before_rename=None) -> list[str]:
    """Replace `target` by the finished `staging` folder with renames only, under a lock on the target, so
    that readers never see it half-written and concurrent writers never interleave. `is_ours(target)` says
    whether an existing target may be replaced (it is what we write, not someone's other folder).

    What the old folder holds besides what zoo writes there (`zoo_writes(name)`, or a name the new folder
    has), a user's notes.txt say, is carried over into the new folder: re-exporting never deletes someone's
    files. `before_rename(staging)`, when given, runs last on the complete folder (e.g. to sign it). Returns the
    names carried over."""
    old, kept = None, []
    with locked(target.parent):
        if target.exists():
            if not is_ours(target):
                raise ZooError(f"{target} exists and is not what zoo writes there: not replacing it")
            kept = _carry_over(target, staging, zoo_writes)
        if before_rename is not None:   # before the old folder moves: if it fails, the old one stays in place
            before_rename(staging)
        if target.exists():
            old = target.with_name(f".{target.name}.{_owner_tag()}.{os.urandom(4).hex()}.old")
            os.rename(target, old)
        os.rename(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return kept


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)   # same filesystem: instant, and no second copy of a large file
    except OSError:
        shutil.copy2(source, destination)


def _carry_over(old: Path, new: Path, zoo_writes) -> list[str]:
    """Copy (hard-link) the entries of `old` that are not zoo's into `new`; the old folder keeps its own
    until the swap succeeds, so a run killed midway loses nothing."""
    kept = []
    for entry in sorted(old.iterdir()):
        if zoo_writes(entry.name) or os.path.lexists(new / entry.name):
            continue
        if entry.is_symlink():
            os.symlink(os.readlink(entry), new / entry.name)
        elif entry.is_dir():
            shutil.copytree(entry, new / entry.name, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(str(entry), str(new / entry.name))
        kept.append(entry.name)
    return kept


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
