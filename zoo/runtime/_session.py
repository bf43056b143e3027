"""Session: a loaded bundle that validates inputs, runs a backend and turns raw inputs into predictions."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from zoo.contract import MAX_IMAGE_PIXELS, ImageTooLarge
from zoo.runtime._backends import BackendError, OrtBackend, TorchBackend
from zoo.runtime._inputs import InputChecker
from zoo.runtime._manifest import BundleError, Manifest, check_seal, read_manifest

BACKEND_FORMATS = {"onnxruntime": "onnx", "torchscript": "torchscript", "pt2": "pt2"}


def load(bundle: str | Path, device: str = "cpu", backend: str | None = None, threads: int | None = None,
         cpu_arena: bool = True, cuda_options: dict | None = None, verify: bool = True) -> "Session":
    """Load a bundle folder written by `zoo export`.

    device: "cpu" or "cuda" (CUDA must really be used, else `DeviceUnavailable` says why).
    backend: "onnxruntime", "torchscript" or "pt2"; by default the one that runs the bundle's format.
    threads: intra-op threads (default: the cores this process may use, cgroup limits included).
    cpu_arena: onnxruntime's CPU memory arena (it grows to the largest batch seen and never shrinks;
        turn it off for long-running embedders that see occasional huge batches).
    cuda_options: extra CUDAExecutionProvider options, e.g. {"cudnn_conv_algo_search": "HEURISTIC"}.
    verify: check the model file's sha256 against the manifest and the manifest against the copy sealed
        into the model file; a bundle without them is refused. verify=False skips both checks: only for
        bundles you trust.
    """
    manifest = read_manifest(bundle)
    backend = backend or {v: k for k, v in BACKEND_FORMATS.items()}[manifest.format]
    if backend not in BACKEND_FORMATS:
        raise ValueError(f"backend must be one of {', '.join(BACKEND_FORMATS)}, got {backend!r}")
    if BACKEND_FORMATS[backend] != manifest.format:
        raise BundleError(f"{manifest.bundle} holds a {manifest.format} model; backend {backend!r} needs a "
                          f"{BACKEND_FORMATS[backend]} bundle (export one with `zoo export {manifest.model} "
                          f"--format {BACKEND_FORMATS[backend]}`)")
    if verify:
        expected = manifest.data.get("file_sha256")
        if not expected:
            raise BundleError(f"{manifest.bundle / 'manifest.json'} has no file_sha256, so {manifest.file.name} "
                              "cannot be checked: re-export the bundle, or load it with verify=False if you "
                              "trust it", exit_code=1)
        with open(manifest.file, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        if digest != expected:
            raise BundleError(f"{manifest.file}: sha256 {digest[:12]}… does not match the manifest's "
                              f"{str(expected)[:12]}…: the model file was changed or truncated", exit_code=1)
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
        ImageTooLarge (a ValueError)."""
        if len(self.input_names) == 1 and not (isinstance(raw, Mapping) and set(raw) == set(self.input_names)):
            raw = {self.input_names[0]: raw}
        if not isinstance(raw, Mapping):
            raise ValueError(f"this model has inputs {self.input_names}: pass a dict of raw values keyed by "
                             f"them, got a {type(raw).__name__}")
        missing = [n for n in self.input_names if n not in raw]
        unknown = [str(k) for k in raw if k not in self.input_names]
        if missing or unknown:
            raise ValueError(f"raw inputs: expected keys {self.input_names}, got {[str(k) for k in raw]}")
        found: dict[int, list[str]] = {}
        arrays = {}
        for name in self.input_names:
            pre = self.manifest.preprocess.get(name)
            if pre is None:
                raise BundleError(f"the manifest has no preprocessing for input {name!r}; pass arrays to predict()")

            def warn(index: int, message: str, name=name) -> None:
                if strict:
                    raise ValueError(f"{message} (sample {index + 1}; refused because strict)")
                found.setdefault(index, []).append(f"input {name!r}: {message}")
            try:
                encoded = (pre.encode(raw[name], warn, max_pixels) if pre.kind == "image" else
                           pre.encode(raw[name], warn))
                arrays[name] = pre.apply(encoded)
            except ImageTooLarge as e:
                raise ImageTooLarge(f"input {name!r}: {e}") from None
            except ValueError as e:
                raise ValueError(f"input {name!r}: {e}") from None
        if warnings is not None:
            warnings[:] = [found.get(i, []) for i in range(len(next(iter(arrays.values()))))]
        return arrays

    def predict_raw(self, raw, top_k: int | None = None, warnings: list | None = None, strict: bool = False,
                    max_pixels: int | None = MAX_IMAGE_PIXELS):
        """Raw inputs (see `prepare`) -> named outputs, or with `top_k` the labelled classes (see `classify`)."""
        if top_k is not None:
            return self.classify(raw, top_k, warnings=warnings, strict=strict, max_pixels=max_pixels)
        return self.predict(self.prepare(raw, warnings, strict, max_pixels))

    def probabilities(self, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Class probabilities for each labelled output, per the manifest's output_kind
        (logits: softmax, logit: sigmoid, probability: as is; binary: columns [negative, positive])."""
        if not self.manifest.is_classifier:
            raise ValueError(f"{self.manifest.model} is a {self.manifest.task} model: it has no class labels")
        return {name: _probabilities(outputs[name], self.manifest.output_kind)
                for name in self.output_names if name in self.manifest.labels}

    def classify(self, raw, top_k: int = 1, arrays: bool = False, warnings: list | None = None,
                 strict: bool = False,
                 max_pixels: int | None = MAX_IMAGE_PIXELS) -> list[dict[str, list[tuple[str, float]]]]:
        """Raw inputs (or model arrays with `arrays=True`) -> per sample, per labelled output, the `top_k`
        (label, probability) pairs, most likely first. `warnings`, `strict` and `max_pixels` as in `prepare`."""
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        return self.rank(self.predict(raw if arrays else self.prepare(raw, warnings, strict, max_pixels)), top_k)

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


__all__ = ["load", "Session", "BackendError"]
