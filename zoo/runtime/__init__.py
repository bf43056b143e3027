"""zoo.runtime: run exported bundles without torch (onnxruntime), or with it (TorchScript, torch.export).

    import zoo.runtime
    session = zoo.runtime.load("bundles/clouds-cnn-onnx")
    session.classify(["sky.jpg"], top_k=3)   # [{"logits": [("clear sky", 0.91), ...]}]
    session.predict({"image": batch})        # {"logits": array (N, 7)}

Importing this package loads numpy and the standard library only; onnxruntime is imported when a bundle
is loaded, torch only for the torchscript and pt2 backends (which run only with trust_code=True: their files
can run code when loaded), model-signing only to sign bundles or check their signatures. It depends on nothing else in zoo but the
data contract (`zoo.contract`, the preprocessing) and the errors.
"""

from zoo.runtime._backends import (BackendError, DeviceUnavailable, cuda_problem, default_threads,
                                   preload_cuda_libraries)
from zoo.runtime._csv import Table, read_csv, read_series
from zoo.runtime._files import predict_files
from zoo.runtime._manifest import (FORMAT_VERSION, MANIFEST_NAME, MODEL_FILES, BundleError, Manifest, UnsealedBundle,
                                   read_manifest, seal_text)
from zoo.runtime._raw import KEY as RAW_KEY, RawInputs
from zoo.runtime._session import CODE_BACKENDS, Session, UntrustedCode, load
from zoo.runtime._signature import SIGNATURE_NAME, BundleSigner, SignatureError, make_key_pair, verify_signature

__all__ = ["load", "Session", "Manifest", "read_manifest", "seal_text", "BundleError", "UnsealedBundle", "BackendError",
           "DeviceUnavailable", "cuda_problem", "default_threads", "preload_cuda_libraries", "predict_files", "FORMAT_VERSION", "MANIFEST_NAME", "MODEL_FILES",
           "UntrustedCode", "CODE_BACKENDS", "SignatureError", "SIGNATURE_NAME", "BundleSigner", "verify_signature",
           "make_key_pair", "Table", "read_csv", "read_series", "RAW_KEY", "RawInputs"]
