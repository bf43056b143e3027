"""zoo.serve: bundles behind an HTTP endpoint speaking the Open Inference Protocol (KServe v2), with dynamic
batching, Prometheus metrics and a page to try the models (`zoo serve`); and Triton model repositories
made from ONNX bundles, run by the real Triton Inference Server (`zoo export --format triton`,
`zoo serve --engine triton`); and the page of a static web folder, which runs a raw-input bundle in the browser
(`web_page`, for `zoo export --format web`).

    import zoo.runtime, zoo.serve
    zoo.serve.serve([zoo.runtime.load("bundles/clouds-cnn-onnx")], port=8000)

It depends on nothing in zoo but the runtime, the contract, the errors and zoo.outputs. Importing it loads
no web framework: `create_app`, `serve` and `Options` (Starlette, uvicorn, grpcio,
prometheus-client: the `serve` extra) are imported when first used, so the Triton model (triton_model.py)
needs only the runtime.
"""

from zoo.serve._batching import Batcher, fit_cores, run_batch
from zoo.serve._page import web_page
from zoo.serve._protocol import RAW_SUFFIX, RequestError, model_metadata, parse_infer, split_body
from zoo.serve._raw import from_elements, predictions, prepare
from zoo.serve._triton_repo import config_text, export_repository, model_config, serving_repository, write_model
from zoo.serve._triton_server import (ENV_VARIABLE, TritonInstall, TritonUnavailable, find_triton, run_foreground,
                                      triton_command)

_APP = {"create_app": "_http", "serve": "_server", "Options": "_core"}

__all__ = ["Batcher", "fit_cores", "run_batch", "RAW_SUFFIX", "RequestError", "model_metadata", "parse_infer",
           "split_body", "from_elements", "predictions", "prepare", "config_text", "export_repository", "model_config",
           "serving_repository", "write_model", "ENV_VARIABLE", "TritonInstall", "TritonUnavailable", "find_triton",
           "run_foreground", "triton_command", "web_page", *_APP]


def __getattr__(name: str):
    if name in _APP:
        import importlib

        return getattr(importlib.import_module(f"zoo.serve.{_APP[name]}"), name)
    raise AttributeError(f"module 'zoo.serve' has no attribute {name!r}")
