"""Session: a loaded bundle that validates inputs, runs a backend and turns raw inputs into predictions."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from zoo.contract import MAX_IMAGE_PIXELS, ImageTooLarge
from zoo.runtime._backends import BackendError, OrtBackend, TorchBackend
from zoo.runtime._inputs import InputChecker
from zoo.runtime._integrity import check_files
from zoo.runtime._manifest import BundleError, Manifest, check_seal, read_manifest
from zoo.runtime._raw import batches, graph_values, scatter
from zoo.runtime._signature import verify_signature

BACKEND_FORMATS = {"onnxruntime": "onnx", "torchscript": "torchscript", "pt2": "pt2"}


CODE_BACKENDS = ("torchscript", "pt2")   # their files can run code when loaded


class UntrustedCode(BundleError):
    """A TorchScript or pt2 bundle was to be loaded without the caller saying it trusts the bundle's maker."""


def load(bundle: str | Path, device: str = "cpu", backend: str | None = None, threads: int | None = None,
         cpu_arena: bool = True, cuda_options: dict | None = None, verify: bool = True, trust_code: bool = False,
         trusted_keys=None) -> "Session":
    """Load a bundle folder written by `zoo export`.

    device: "cpu" or "cuda" (CUDA must really be used, else `DeviceUnavailable` says why).
    backend: "onnxruntime", "torchscript" or "pt2"; by default the one that runs the bundle's format.
    threads: intra-op threads, a positive integer (default: the cores this process may use, cgroup limits
        included).
    cpu_arena: onnxruntime's CPU memory arena (it grows to the largest batch seen and never shrinks;
        turn it off for long-running embedders that see occasional huge batches).
    cuda_options: extra CUDAExecutionProvider options, e.g. {"cudnn_conv_algo_search": "HEURISTIC"}.
    verify: check the model file's sha256 (and its ONNX external data's) against the manifest and the
        manifest against the copy sealed into the model file; a bundle without them is refused. This proves
        the bundle was not edited after it was made, not who made it. verify=False skips these checks.
    trust_code: TorchScript and pt2 files can run arbitrary code while they are loaded (a pickled weight, a
        scripted __setstate__), so they are refused, before torch opens them, unless trust_code=True says the
        caller trusts whoever made the bundle. ONNX needs no such trust.
    trusted_keys: public key files (PEM); when given, the bundle must carry a signature (`zoo export --sign`)
        by one of them over every file in it, else it is refused.
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer (or None: the cores this process may use), "
                         f"got {threads!r}")
    manifest = read_manifest(bundle)
    backend = backend or {v: k for k, v in BACKEND_FORMATS.items()}[manifest.format]
    if backend not in BACKEND_FORMATS:
        raise ValueError(f"backend must be one of {', '.join(BACKEND_FORMATS)}, got {backend!r}")
    if BACKEND_FORMATS[backend] != manifest.format:
        raise BundleError(f"{manifest.bundle} holds a {manifest.format} model; backend {backend!r} needs a "
                          f"{BACKEND_FORMATS[backend]} bundle (export one with `zoo export {manifest.model} "
                          f"--format {BACKEND_FORMATS[backend]}`)")
    if trusted_keys is not None:
        verify_signature(manifest.bundle, trusted_keys)
    if backend in CODE_BACKENDS and not trust_code:
        raise UntrustedCode(f"{manifest.bundle} holds a {manifest.format} model, and loading a {manifest.format} "
                            "file can run any code its maker put in it (the checksum and seal prove only that "
                            "it was not edited since): refused; load it only from a maker you trust, with "
                            "trust_code=True (zoo: --trust-code), or use the model's ONNX bundle")
    check_files(manifest, verify)
    outputs = [o.name for o in manifest.outputs]
    if backend == "onnxruntime":
        engine = OrtBackend(manifest.file, outputs, device, threads, cpu_arena, cuda_options)
    else:
        engine = TorchBackend(manifest.file, outputs, backend, device, threads)
    if verify:
        try:
            check_seal(manifest, engine.seal)
        except BundleError:
            engine.close()
            raise
    return Session(manifest, engine, backend, device)


def _probabilities(values: np.ndarray, kind: str) -> np.ndarray:
    """Raw classifier output (N, K) -> class probabilities (N, K'); one binary column becomes [neg, pos]."""
    values = values.astype(np.float64)
    if kind == "logits" and values.shape[-1] > 1:
        shifted = np.exp(values - values.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)
    if kind in ("logit", "logits"):
        values = 1.0 / (1.0 + np.exp(-values))
    elif kind != "probability":
        raise ValueError(f"output kind {kind!r} has no class probabilities")
    return np.concatenate([1.0 - values, values], axis=-1) if values.shape[-1] == 1 else values


class Session:
    """A loaded bundle. `predict` takes model-ready arrays; `predict_raw` and `classify` take raw inputs."""

    def __init__(self, manifest: Manifest, engine, backend: str, device: str):
        self.manifest, self.backend, self.device = manifest, backend, device
        self._engine = engine
        self.input_names = [t.name for t in manifest.inputs]
        self.output_names = [t.name for t in manifest.outputs]
        self._check = InputChecker(manifest.inputs)
        self._run = engine.run

    def __repr__(self) -> str:
        return (f"Session({self.manifest.model!r}, backend={self.backend!r}, device={self.device!r}, "
                f"providers={self.providers})")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def providers(self) -> list[str]:
        """What actually runs the model: onnxruntime's providers in use, or torch:<device>."""
        return list(self._engine.providers)

    @property
    def threads(self) -> int:
        return self._engine.threads

    @property
    def settings(self) -> dict:
        """The backend's settings as applied: threads, providers (and for onnxruntime the CPU arena)."""
        return dict(self._engine.settings)

    def signature(self) -> dict:
        """The model file's own view of its inputs and outputs ({"inputs": [{"name", "shape"}], "outputs": ...};
        None where the format keeps no such record), to check against the manifest."""
        return self._engine.describe()

    def close(self) -> None:
        self._engine.close()

    def predict(self, inputs) -> dict[str, np.ndarray]:
        """Named arrays (or one array for a single-input model), with the batch axis -> named outputs."""
        return dict(zip(self.output_names, self._run(self._check(inputs))))

    def validate(self, inputs) -> dict[str, np.ndarray]:
        """What `predict` checks, without running the model: named arrays (or one array for a single-input
        model) -> {input name: contiguous array of the declared dtype}, or a ValueError naming the input, what
        was expected and what was given. For servers that check each caller's rows before batching them."""
        return self._check(inputs)

    def iobinding(self, inputs):
        """onnxruntime only: a callable that runs the model on `inputs` bound to the session's device once
        (copied there now), its outputs left on the device. For steady-state loops and benchmarks."""
        return self._engine.iobinding(self._check(inputs))

    # --- raw inputs ---------------------------------------------------------------------------------

    def prepare(self, raw, warnings: list | None = None, strict: bool = False,
                max_pixels: int | None = MAX_IMAGE_PIXELS) -> dict[str, np.ndarray]:
        """Raw inputs -> model arrays, with the manifest's preprocessing.

        Single-input models take the raw value itself; several inputs take {input name: raw value}.
        image: a path, encoded image bytes, PIL image or uint8 array (H, W[, C]), or a list of them;
        tabular: a dict (one row) or a list of dicts, keyed by column name (CSV rows as csv.DictReader gives);
        series: a 1-D sequence of numbers (the model forecasts the value after it);
        onehot: a category name or a list of names.
        What the preprocessing finds unusual (a value outside the training range, a 16-bit or transparent
        image, an animation, an image of one flat colour) is put in `warnings`, when given, as one list of
        messages per sample; with `strict` it is a ValueError instead. An image file or bytes of more than
        `max_pixels` pixels (default 64 Mpx; None: Pillow's own limit) is refused before it is decoded, with
        ImageTooLarge (a ValueError). A raw-input bundle (preprocessing in the graph) gets the checked raw values
        as its graph takes them: uint8 pixels at their own size, columns, category names; images of different
        sizes cannot be one tensor there: `predict_raw` and `classify` run each size separately."""
        count, runs = self._prepared(raw, warnings, strict, max_pixels)
        if len(runs) > 1:
            raise ValueError(f"{count} images of {len(runs)} different sizes cannot be one batch of a raw-input "
                             "model: use predict_raw() or classify(), which run each size separately")
        return runs[0][1]

    def _prepared(self, raw, warnings: list | None, strict: bool,
                  max_pixels: int | None) -> tuple[int, list[tuple[np.ndarray, dict]]]:
        """`prepare`'s work: (samples, [(sample indices, arrays)]), one run except for raw-input bundles."""
        names = [t.name for t in self.manifest.network_inputs]
        if len(names) == 1 and not (isinstance(raw, Mapping) and set(raw) == set(names)):
            raw = {names[0]: raw}
        if not isinstance(raw, Mapping):
            raise ValueError(f"this model has inputs {names}: pass a dict of raw values keyed by "
                             f"them, got a {type(raw).__name__}")
        missing = [n for n in names if n not in raw]
        unknown = [str(k) for k in raw if k not in names]
        if missing or unknown:
            raise ValueError(f"raw inputs: expected keys {names}, got {[str(k) for k in raw]}")
        found: dict[int, list[str]] = {}
        arrays = {}
        for name in names:
            pre = self.manifest.preprocess.get(name)
            if pre is None:
                raise BundleError(f"the manifest has no preprocessing for input {name!r}; pass arrays to predict()")

            def warn(index: int, message: str, name=name) -> None:
                if strict:
                    raise ValueError(f"{message} (sample {index + 1}; refused because strict)")
                found.setdefault(index, []).append(f"input {name!r}: {message}")
            try:
                if self.manifest.raw is None:
                    encoded = (pre.encode(raw[name], warn, max_pixels) if pre.kind == "image" else
                               pre.encode(raw[name], warn))
                    arrays[name] = pre.apply(encoded)
                else:
                    arrays.update(graph_values(name, pre, raw[name], warn, max_pixels))
            except ImageTooLarge as e:
                raise ImageTooLarge(f"input {name!r}: {e}") from None
            except ValueError as e:
                raise ValueError(f"input {name!r}: {e}") from None
        count = len(next(iter(arrays.values())))
        if warnings is not None:
            warnings[:] = [found.get(i, []) for i in range(count)]
        runs = [(np.arange(count), arrays)] if self.manifest.raw is None else batches(arrays)
        return count, runs

    def predict_raw(self, raw, top_k: int | None = None, warnings: list | None = None, strict: bool = False,
                    max_pixels: int | None = MAX_IMAGE_PIXELS):
        """Raw inputs (see `prepare`) -> named outputs, or with `top_k` the labelled classes (see `classify`)."""
        if top_k is not None:
            return self.classify(raw, top_k, warnings=warnings, strict=strict, max_pixels=max_pixels)
        count, runs = self._prepared(raw, warnings, strict, max_pixels)
        return scatter(count, [(index, self.predict(arrays)) for index, arrays in runs])

    def probabilities(self, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Class probabilities for each labelled output, per the manifest's output_kind
        (logits: softmax, logit: sigmoid, probability: as is; binary: columns [negative, positive]); a
        raw-input bundle's graph computes them itself, and its own outputs are used."""
        if not self.manifest.is_classifier:
            raise ValueError(f"{self.manifest.model} is a {self.manifest.task} model: it has no class labels")
        computed = {} if self.manifest.raw is None else self.manifest.raw.probabilities
        return {name: (outputs[computed[name]].astype(np.float64) if name in computed
                       else _probabilities(outputs[name], self.manifest.output_kind))
                for name in self.output_names if name in self.manifest.labels}

    def classify(self, raw, top_k: int = 1, arrays: bool = False, warnings: list | None = None,
                 strict: bool = False,
                 max_pixels: int | None = MAX_IMAGE_PIXELS) -> list[dict[str, list[tuple[str, float]]]]:
        """Raw inputs (or model arrays with `arrays=True`) -> per sample, per labelled output, the `top_k`
        (label, probability) pairs, most likely first. `warnings`, `strict` and `max_pixels` as in `prepare`."""
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        return self.rank(self.predict(raw) if arrays else
                         self.predict_raw(raw, warnings=warnings, strict=strict, max_pixels=max_pixels), top_k)

    def rank(self, outputs: Mapping[str, np.ndarray], top_k: int) -> list[dict[str, list[tuple[str, float]]]]:
        """Model outputs -> per sample, per labelled output, the `top_k` (label, probability) pairs."""
        probs = self.probabilities(outputs)
        batch = len(next(iter(probs.values())))
        results = []
        for i in range(batch):
            row = {}
            for name, p in probs.items():
                labels = self.manifest.labels[name]
                order = np.argsort(-p[i], kind="stable")[:top_k]
                row[name] = [(labels[j], float(p[i, j])) for j in order]
            results.append(row)
        return results


__all__ = ["load", "Session", "BackendError", "UntrustedCode", "CODE_BACKENDS"]
