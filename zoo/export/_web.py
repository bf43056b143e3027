"""The static web folder `<name>-web/` (`zoo export NAME --format web`; docs/formats.md, "Web folders"): the
raw-input bundle with a page that runs it in the browser and the onnxruntime-web files the page loads, every one by
a path relative to the page, so that any static file server serves it and it works offline.

    index.html                                   the page (zoo/serve/web.html with the model's entry embedded)
    model.onnx, manifest.json                    the raw-input model; its manifest with a `web` record, sealed into it
    onnxruntime-web/ort.wasm.bundle.min.mjs      onnxruntime-web's API and loader (the pinned version, `_ortweb`)
    onnxruntime-web/ort-wasm-simd-threaded.wasm  its engine
    test_data_set_<k>/, golden/                  the raw-input bundle's test vectors and golden cases

The `web` record lists the page's files with their sha256. It is sealed into the model file with the rest of the
manifest, so an edited page (or its record) is refused like an edited label; `check` re-hashes the files and holds
the onnxruntime-web ones to zoo's pins.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

from zoo.errors import ZooError
from zoo.export import _ortweb

PAGE = "index.html"
RUNTIME_FOLDER = "onnxruntime-web"
FILE_NAME = re.compile(r"index\.html|onnxruntime-web/[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
MAX_FILE_BYTES = 64 << 20   # a listed file larger than this is refused before it is hashed
SERVE = ("any static file server (python3 -m http.server in this folder); the page loads everything by relative "
         "path and runs onnxruntime-web with one thread, so no COOP/COEP headers are needed. .mjs must be sent as "
         "text/javascript (every common server does)")


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def manifest(source, runtime_files: dict[str, Path]) -> tuple[dict, str]:
    """The web folder's manifest (the raw-input bundle's `source` manifest with a `web` record) and its page."""
    from zoo.serve import web_page

    runtime = {"model": source.data["file"], "entry": f"{RUNTIME_FOLDER}/{_ortweb.ENTRY}", "version": _ortweb.VERSION}
    page = web_page(source, runtime)
    files = {PAGE: hashlib.sha256(page.encode()).hexdigest()}
    files.update({f"{RUNTIME_FOLDER}/{name}": _ortweb.FILES[name] for name in sorted(runtime_files)})
    data = dict(source.data)
    data["web"] = {"page": PAGE, "files": files, "serve": SERVE,
                   "onnxruntime_web": {"package": _ortweb.PACKAGE, "version": _ortweb.VERSION,
                                       "integrity": _ortweb.INTEGRITY, "entry": runtime["entry"],
                                       "execution_provider": "wasm", "threads": 1}}
    return data, page


def write(folder: Path, source, runtime_files: dict[str, Path], page: str) -> None:
    """The page, the onnxruntime-web files and the raw-input bundle's test files into `folder` (the model file and
    the manifest are written by the caller, which seals them)."""
    for name in (source.data.get("test_data") or {}).get("files", {}):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source.bundle / name, folder / name)
    (folder / PAGE).write_text(page)
    (folder / RUNTIME_FOLDER).mkdir()
    for name, path in runtime_files.items():
        shutil.copyfile(path, folder / RUNTIME_FOLDER / name)


def check(bundle: Path, record) -> dict:
    """Every file of the `web` record against its sha256, and the onnxruntime-web files against zoo's pins for
    that version. A problem is a ZooError (exit 1) naming the file; returns {"files", "onnxruntime_web", "note"}."""
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(files, dict) or PAGE not in files or not all(isinstance(v, str) for v in files.values()):
        raise ZooError(f"{bundle}: manifest web.files must list {PAGE} and the onnxruntime-web files with their sha256",
                       exit_code=1)
    for name in files:   # every name first: nothing outside the folder is looked at
        if not isinstance(name, str) or not FILE_NAME.fullmatch(name):
            raise ZooError(f"{bundle}: web.files names {name!r}, not a file of a web folder ({PAGE} or "
                           f"{RUNTIME_FOLDER}/<file>)", exit_code=1)
    for name, digest in files.items():
        path = bundle / name
        if path.is_symlink() or not path.is_file():
            raise ZooError(f"{bundle}: {name} is missing (or not a plain file)", exit_code=1)
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ZooError(f"{bundle}: {name} is over the {MAX_FILE_BYTES:,} bytes a web folder's file may have",
                           exit_code=1)
        if _sha256(path) != digest:
            raise ZooError(f"{bundle}: {name} was changed after export (its sha256 is not the manifest's)", exit_code=1)
    runtime = record.get("onnxruntime_web") if isinstance(record.get("onnxruntime_web"), dict) else {}
    version, note = runtime.get("version"), None
    if version == _ortweb.VERSION:
        for name, digest in _ortweb.FILES.items():
            if files.get(f"{RUNTIME_FOLDER}/{name}") != digest:
                raise ZooError(f"{bundle}: {RUNTIME_FOLDER}/{name} is not {_ortweb.PACKAGE}'s (zoo pins its sha256)",
                               exit_code=1)
    else:
        note = (f"onnxruntime-web {version}: not the version this zoo pins ({_ortweb.VERSION}), so its files were "
                "checked against the manifest only")
    return {"files": len(files), "onnxruntime_web": version, "note": note}
