"""zoo.runtime: run exported bundles without torch (onnxruntime), or with it (TorchScript, torch.export).

    import zoo.runtime
    session = zoo.runtime.load("bundles/clouds-cnn-onnx")
    session.classify(["sky.jpg"], top_k=3)   # [{"logits": [("clear sky", 0.91), ...]}]
    session.predict({"image": batch})        # {"logits": array (N, 7)}

Importing this package loads numpy and the standard library only; onnxruntime is imported when a bundle
is loaded, torch only for the torchscript and pt2 backends. The benchmark (`zoo.runtime.bench`) is a
separate module that uses torch for its eager baseline.
"""

from zoo.runtime._backends import BackendError, DeviceUnavailable, default_threads
from zoo.runtime._bundle import BundleError, Manifest, TensorInfo, read_manifest
from zoo.runtime._files import predict_files
from zoo.runtime._session import Session, load

__all__ = ["load", "Session", "Manifest", "TensorInfo", "read_manifest", "BundleError", "BackendError",
           "DeviceUnavailable", "default_threads", "predict_files"]
