"""Backends behind a Session: onnxruntime (no torch), TorchScript and torch.export (torch, imported lazily).

Each loads the model file, reads the manifest copy sealed into it (`seal`), describes the file's own
inputs and outputs (`describe`), and runs validated numpy arrays to numpy outputs in manifest order."""

from __future__ import annotations

import ctypes
import os
import warnings
from pathlib import Path

import numpy as np

from zoo.errors import ZooError
from zoo.runtime._manifest import SEAL_KEY

__all__ = ["DeviceUnavailable", "BackendError", "default_threads", "package_version", "cuda_problem",
           "preload_cuda_libraries", "OrtBackend", "TorchBackend"]


class DeviceUnavailable(ZooError):
    """The requested device cannot be used here; the message says why."""


class BackendError(ZooError):
    """The backend failed on inputs that passed validation (a broken bundle or a backend bug)."""


def default_threads() -> int:
    """CPU cores this process may use: the affinity mask, capped by a cgroup v2 CPU quota when there is one
    (onnxruntime's own default counts the host's cores and oversubscribes containers)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, round(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def package_version(distribution: str) -> str | None:
    """The installed version of a distribution (e.g. "onnxruntime-gpu", "zoo"), or None when it is not installed."""
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _visible_devices() -> str:
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    return "unset" if value is None else repr(value)


def _gpu_count() -> tuple[int, str]:
    """(number of GPUs the NVIDIA driver reports, why none when 0), without torch."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0, "no NVIDIA driver (libcuda.so.1 cannot be loaded): this machine has no usable GPU"
    if cuda.cuInit(0) != 0:
        return 0, f"the NVIDIA driver found no usable GPU (cuInit failed; CUDA_VISIBLE_DEVICES={_visible_devices()})"
    count = ctypes.c_int(0)
    if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return 0, f"the NVIDIA driver reports no GPU (CUDA_VISIBLE_DEVICES={_visible_devices()})"
    return count.value, ""


# what ONNX Runtime's CUDA provider links against, in dependency order
CUDA_LIBRARIES = ("libcudart", "libnvJitLink", "libcublasLt", "libcublas", "libcufft", "libcurand", "libcudnn")
_preloaded: list[str] | None = None


def preload_cuda_libraries(ort) -> list[str]:
    """Load the CUDA runtime, cuBLAS, cuFFT, cuRAND and cuDNN from the nvidia-* wheels beside onnxruntime (those
    torch installs) into the process, so that the CUDA provider finds them although they are on no library path
    (torch does this when imported first; a torch-free process must do it itself). Returns the files loaded."""
    global _preloaded
    if _preloaded is None:
        _preloaded = []
        found = sorted(Path(ort.__file__).resolve().parent.parent.glob("nvidia/*/lib/lib*.so*"))
        for prefix in CUDA_LIBRARIES:
            for path in found:
                if path.name.startswith(prefix + ".so") or (prefix == "libcudnn" and path.name.startswith("libcudnn")):
                    try:
                        ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
                        _preloaded.append(path.name)
                    except OSError:
                        pass
    return _preloaded


def ort_cuda_problem(ort) -> str:
    """Why onnxruntime cannot run on CUDA here: every reason found, or "" if none."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return (f"onnxruntime {ort.__version__} is built without CUDA (install onnxruntime-gpu, and never the "
                "CPU-only onnxruntime package beside it: it hides CUDA)")
    problems = []
    gpus, why = _gpu_count()
    if not gpus:
        problems.append(why)
    preload_cuda_libraries(ort)
    library = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    try:
        ctypes.CDLL(str(library))
    except OSError as e:
        missing = str(e).split(":")[0]
        if not (missing == "libcuda.so.1" and not gpus):   # the driver, already said
            problems.append(f"onnxruntime's CUDA provider cannot load ({e}): it needs the CUDA runtime, cuBLAS and "
                            "cuDNN 9 of its CUDA version on the library path, or the nvidia-* wheels beside it")
    return "; and ".join(problems)


def cuda_problem() -> str:
    """Why onnxruntime cannot run on CUDA here, or "" when its CUDA provider loads and a GPU is visible."""
    import onnxruntime as ort

    return ort_cuda_problem(ort)


class OrtBackend:
    name = "onnxruntime"

    def __init__(self, file: Path, output_names: list[str], device: str = "cpu", threads: int | None = None,
                 cpu_arena: bool = True, cuda_options: dict | None = None, optimization: str = "all"):
        import onnxruntime as ort

        self.device = device
        self.threads = threads or default_threads()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.enable_cpu_mem_arena = cpu_arena
        options.graph_optimization_level = {
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[optimization]
        if device == "cuda":
            problem = ort_cuda_problem(ort)   # also preloads the CUDA libraries of the nvidia-* wheels
            if problem:
                raise DeviceUnavailable(f"device='cuda' requested but {problem}")
            options.log_severity_level = 4  # our own error says why CUDA is unusable; ORT's would only repeat it
            providers = [("CUDAExecutionProvider", {"device_id": 0, **(cuda_options or {})}), "CPUExecutionProvider"]
        elif device == "cpu":
            options.log_severity_level = 3
            providers = ["CPUExecutionProvider"]
        else:
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        try:
            self.session = ort.InferenceSession(str(file), options, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for unreadable models
            raise BackendError(f"onnxruntime cannot load {file}: {' '.join(str(e).split())[:300]}") from None
        self.providers = self.session.get_providers()
        self.settings = {"threads": self.threads, "cpu_arena": cpu_arena, "optimization": optimization,
                         "providers": list(self.providers)}
        self.seal = self.session.get_modelmeta().custom_metadata_map.get(SEAL_KEY) or None
        if device == "cuda" and "CUDAExecutionProvider" not in self.providers:
            raise DeviceUnavailable(f"device='cuda' requested but onnxruntime could not create its CUDA provider "
                                    "(`zoo doctor --device cuda` shows ONNX Runtime's reason); it would have "
                                    f"run on {self.providers} instead, so nothing was loaded")
        declared = [o.name for o in self.session.get_outputs()]
        if sorted(declared) != sorted(output_names):
            raise BackendError(f"{file} has outputs {declared} but its manifest declares {output_names}")
        self.output_names = output_names

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self.session.run(self.output_names, feeds)
        except Exception as e:
            raise BackendError(f"onnxruntime failed on inputs that passed validation: {e}") from None

    def describe(self) -> dict:
        """The model file's own inputs and outputs: names and shapes (a string for a symbolic axis)."""
        def io(values):
            return [{"name": v.name, "shape": [d if isinstance(d, int) else str(d or "?") for d in v.shape]}
                    for v in values]
        return {"inputs": io(self.session.get_inputs()), "outputs": io(self.session.get_outputs())}

    def iobinding(self, feeds: dict[str, np.ndarray]):
        """A callable that runs the model on `feeds` copied to the session's device once, outputs kept there."""
        import onnxruntime as ort

        device = "cuda" if self.device == "cuda" else "cpu"
        binding = self.session.io_binding()
        for name, array in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, device, 0))
        for name in self.output_names:
            binding.bind_output(name, device, 0)

        def run():
            self.session.run_with_iobinding(binding)
            binding.synchronize_outputs()
        return run

    def close(self) -> None:
        self.session = None


def torch_cuda_problem(torch) -> str:
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is built without CUDA"
    return f"torch sees no GPU (torch.cuda.device_count() is 0; CUDA_VISIBLE_DEVICES={_visible_devices()})"


class TorchBackend:
    """TorchScript (`model.ts`) or torch.export (`model.pt2`) programs, run under inference_mode."""

    def __init__(self, file: Path, output_names: list[str], kind: str, device: str = "cpu",
                 threads: int | None = None):
        import torch

        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise DeviceUnavailable(f"device='cuda' requested but {torch_cuda_problem(torch)}")
        self.torch, self.device, self.name = torch, device, kind
        self.threads = threads or default_threads()
        torch.set_num_threads(self.threads)  # process-wide in torch
        extra = {SEAL_KEY: ""}
        self.program = None
        try:
            with warnings.catch_warnings():  # "torch.jit.load is deprecated": the bundle format is the choice
                warnings.simplefilter("ignore")
                if kind == "torchscript":
                    self.module = torch.jit.load(str(file), map_location=device, _extra_files=extra).eval()
                else:
                    self.program = torch.export.load(str(file), extra_files=extra)
                    self.module = self.program.module().to(device)
        except Exception as e:
            raise BackendError(f"torch cannot load {file} as {kind}: {first_line(e)}") from None
        seal = extra[SEAL_KEY]
        self.seal = (seal.decode() if isinstance(seal, bytes) else seal) or None
        self.providers = [f"torch:{device}"]
        self.settings = {"threads": self.threads, "providers": list(self.providers)}
        self.output_names = output_names

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        torch = self.torch
        try:
            with torch.inference_mode():
                args = [torch.from_numpy(a).to(self.device) for a in feeds.values()]
                out = self.module(*args)
                outs = out if isinstance(out, (tuple, list)) else (out,)
                return [o.detach().cpu().numpy() for o in outs]
        except Exception as e:
            raise BackendError(f"{self.name} failed on inputs that passed validation: {e}") from None

    def describe(self) -> dict:
        """pt2 programs keep their input/output shapes (names only by position); TorchScript keeps neither."""
        if self.program is None:
            return {"inputs": None, "outputs": None}
        from torch.export.graph_signature import OutputKind

        def shape(node):
            value = node.meta.get("val")
            return None if value is None else [d if isinstance(d, int) else str(d) for d in value.shape]

        graph = self.program.graph
        nodes = {n.name: n for n in graph.nodes}
        inputs = [{"name": None, "shape": shape(nodes[n])} for n in self.program.graph_signature.user_inputs]
        output_node = next(n for n in graph.nodes if n.op == "output")
        outputs = [{"name": None, "shape": shape(n)} for n, s in zip(output_node.args[0], self.program.graph_signature.output_specs)
                   if s.kind == OutputKind.USER_OUTPUT]
        return {"inputs": inputs, "outputs": outputs}

    def iobinding(self, feeds):
        raise ValueError(f"I/O binding is an onnxruntime feature; this session runs {self.name}")

    def close(self) -> None:
        self.module = self.program = None


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"
