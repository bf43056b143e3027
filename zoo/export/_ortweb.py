"""onnxruntime-web for the static web folder (`zoo export NAME --format web`): the files of the pinned npm package
that run a model in a browser, fetched once with `npm pack` into zoo's cache and checked by their sha256 every time
they are used, so no network is needed after the first export and nothing of it is kept in git.

Which files: the WebAssembly build only (`ort.wasm.bundle.min.mjs`, the API with its Emscripten loader bundled in,
and `ort-wasm-simd-threaded.wasm`, the engine it loads from its own folder); the page runs it with one thread, which
needs no cross-origin isolation (COOP/COEP) from the server. Where npm cannot be used, `--onnxruntime-web PATH`
takes the package's tarball (`npm pack onnxruntime-web@VERSION` anywhere) or a folder holding its files.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from zoo.errors import ZooError

VERSION = "1.31.1"
PACKAGE = f"onnxruntime-web@{VERSION}"
INTEGRITY = "sha512-5GeH+bWQ+HxM10z7erGlsWqryrwMbSvm/1tkIsKTT48g0fI19VXVVC435t4t7VsPdSQeS7NmuZPXrQ73k82URw=="
ENTRY = "ort.wasm.bundle.min.mjs"
FILES = {ENTRY: "51bd7168175767324ab0acfcfc4ca94a096a3826e3ebac9ccc4f195eb865f8dd",
         "ort-wasm-simd-threaded.wasm": "4b884c203b0fa48d057be3332c65513ff85aa3c5bddd6946acc0fab7ecda001d"}
MAX_TARBALL_BYTES = 256 << 20   # the 1.31.1 tarball is 34.6 MB
MAX_FILE_BYTES = 64 << 20       # its wasm is 14.8 MB
NPM_TIMEOUT_S = 600
HOW = (f"install npm (Debian: apt-get install npm) or pass --onnxruntime-web PATH: the tarball of "
       f"`npm pack {PACKAGE}` or a folder holding its dist/ files")


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def cache_folder() -> Path:
    from zoo.data.builtin import cache_dir

    return cache_dir() / f"onnxruntime-web-{VERSION}"


def _checked(folder: Path) -> dict[str, Path] | None:
    """The files in `folder` when every one is there with its pinned sha256, else None."""
    paths = {name: folder / name for name in FILES}
    if all(p.is_file() and p.stat().st_size <= MAX_FILE_BYTES and _sha256(p) == FILES[name]
           for name, p in paths.items()):
        return paths
    return None


def files(source: str | Path | None = None) -> dict[str, Path]:
    """{file name: path} of onnxruntime-web VERSION's files, each checked against its pinned sha256: from `source`
    (a tarball or a folder) when given, else from the cache, fetched with npm into it the first time.
    A ZooError in one line says what is missing and how to get it."""
    if source is not None:
        source = Path(source)
        if source.is_file():
            return _unpack(source)
        if not source.is_dir():
            raise ZooError(f"--onnxruntime-web {source} does not exist; expected the tarball of `npm pack {PACKAGE}` "
                           "or a folder holding its files")
        return _from_folder(source)
    cached = _checked(cache_folder())
    if cached:
        return cached
    with _npm_pack() as tarball:
        return _unpack(tarball)


def _from_folder(folder: Path) -> dict[str, Path]:
    """The files in a folder as people have them: an unpacked package, node_modules, the package's dist/."""
    for where in (folder, folder / "dist", folder / "package" / "dist", folder / "node_modules" / "onnxruntime-web" /
                  "dist"):
        if (where / ENTRY).is_file():
            break
    else:
        raise ZooError(f"--onnxruntime-web {folder} holds no {ENTRY} (nor dist/, package/dist/ or "
                       f"node_modules/onnxruntime-web/dist/ of it): expected the files of {PACKAGE}")
    out = {}
    for name, digest in FILES.items():
        path = where / name
        if not path.is_file():
            raise ZooError(f"--onnxruntime-web: {path} is missing; expected every file of {PACKAGE}'s dist/: "
                           f"{', '.join(FILES)}")
        if path.stat().st_size > MAX_FILE_BYTES or _sha256(path) != digest:
            raise ZooError(f"--onnxruntime-web: {path} is not {PACKAGE}'s {name} (its sha256 differs); zoo pins "
                           f"version {VERSION}")
        out[name] = path
    return out


@contextlib.contextmanager
def _npm_pack():
    """`npm pack PACKAGE` into a temporary folder (npm checks the registry's integrity; zoo checks its own pin);
    yields the tarball."""
    npm = shutil.which("npm")
    if npm is None:
        raise ZooError(f"zoo export --format web needs {PACKAGE} and npm is not installed: {HOW}")
    with tempfile.TemporaryDirectory(prefix="zoo-npm-pack-") as tmp:
        try:
            done = subprocess.run([npm, "pack", PACKAGE, "--ignore-scripts", "--loglevel=error"], cwd=tmp,
                                  capture_output=True, text=True, timeout=NPM_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise ZooError(f"`npm pack {PACKAGE}` took over {NPM_TIMEOUT_S} s (is the npm registry reachable?): "
                           f"{HOW}") from None
        tarballs = sorted(Path(tmp).glob("*.tgz"))
        if done.returncode != 0 or len(tarballs) != 1:
            raise ZooError(f"`npm pack {PACKAGE}` failed ({_npm_reason(done)}): is the npm registry reachable? Or "
                           f"pass --onnxruntime-web PATH (the tarball of `npm pack {PACKAGE}` or a folder holding its "
                           "dist/ files)")
        yield tarballs[0]


def _npm_reason(done: subprocess.CompletedProcess) -> str:
    """npm's error code and message, from its `npm error ...` (npm 9: `npm ERR! ...`) lines."""
    lines = [line.split(" ", 2)[-1].strip() for line in done.stderr.splitlines()
             if line.startswith(("npm error ", "npm ERR! "))]
    code = next((line for line in lines if line.startswith("code ")), None)
    message = next((line for line in lines if "Error:" in line or line.startswith(("notarget", "404"))), None)
    found = [part for part in (code, message) if part]
    return ": ".join(found)[:300] if found else f"exit status {done.returncode}"


def _integrity(path: Path) -> str:
    with open(path, "rb") as f:
        return "sha512-" + base64.b64encode(hashlib.file_digest(f, "sha512").digest()).decode()


def _unpack(tarball: Path) -> dict[str, Path]:
    """The pinned files out of the package's tarball (its integrity checked first) into the cache; only the named
    members are read, as regular files of bounded size, never extracted by their own paths."""
    size = tarball.stat().st_size
    if size > MAX_TARBALL_BYTES:
        raise ZooError(f"{tarball} is {size:,} bytes, over the {MAX_TARBALL_BYTES:,} any {PACKAGE} tarball needs")
    if _integrity(tarball) != INTEGRITY:
        raise ZooError(f"{tarball} is not the tarball of {PACKAGE} (its sha512 is not npm's integrity {INTEGRITY[:20]}…)")
    cache = cache_folder()
    cache.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=cache.parent, prefix=f".{cache.name}."))
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            for name, digest in FILES.items():
                member = archive.getmember(f"package/dist/{name}")
                if not member.isfile() or member.size > MAX_FILE_BYTES:
                    raise ZooError(f"{tarball}: package/dist/{name} is not a file of at most {MAX_FILE_BYTES:,} bytes")
                with archive.extractfile(member) as f, open(staging / name, "wb") as out:
                    shutil.copyfileobj(f, out)
                if _sha256(staging / name) != digest:
                    raise ZooError(f"{tarball}: package/dist/{name} is not {PACKAGE}'s (its sha256 differs)")
        if _checked(cache) is None:   # absent, or a corrupted copy (another export may have just put one in)
            shutil.rmtree(cache, ignore_errors=True)
            staging.rename(cache)
    except (KeyError, tarfile.TarError, OSError) as e:
        if _checked(cache) is None:
            raise ZooError(f"cannot unpack {PACKAGE} from {tarball} into {cache}: {e}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    found = _checked(cache)
    if found is None:
        raise ZooError(f"{cache}: the files of {PACKAGE} were changed while being written; run the export again")
    return found
