"""A zoo bundle as a Triton Python-backend model: copied as `<model>/1/model.py` beside the bundle's
manifest.json and model.onnx by `zoo export --format triton` and `zoo serve --engine triton`.

The bundle runs through zoo.runtime (checksum and sealed manifest verified at load). The model takes its
inputs as tensors, or, when its config's parameter `inputs` is "raw" (the model `<name>-raw`), each input
raw as `<input>_raw` (BYTES, one element per row: an image file, a JSON record, a JSON list of numbers, a
category name) through the manifest's preprocessing; request parameter `strict: true` then refuses raw
inputs unlike the training data. Triton's dynamic batcher hands over several requests at once: each is
checked on its own (a bad one gets its own error), the rest run as one batch and each gets its own rows.
Needs zoo installed in the Python environment of Triton's Python-backend stub."""

import json
from pathlib import Path

import triton_python_backend_utils as pb_utils

import zoo.runtime
from zoo.serve import RAW_SUFFIX, from_elements, prepare, run_batch


def _error(message: str):
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(
        message, pb_utils.TritonError.INVALID_ARG))


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
        threads = int(parameters.get("threads") or 0) or None
        self.raw = parameters.get("inputs") == "raw"
        device = "cuda" if args.get("model_instance_kind") == "GPU" else "cpu"
        folder = Path(args["model_repository"]) / args["model_version"]
        self.session = zoo.runtime.load(folder, device=device, threads=threads)

    def _arrays(self, request):
        if not self.raw:
            return self.session.validate({name: pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                                          for name in self.session.input_names})
        raw = {name: [bytes(v) for v in pb_utils.get_input_tensor_by_name(request, name + RAW_SUFFIX).as_numpy().ravel()]
               for name in self.session.input_names}
        strict = json.loads(request.parameters() or "{}").get("strict") is True
        arrays, _ = prepare(self.session, from_elements(self.session, raw), strict)
        return self.session.validate(arrays)

    def execute(self, requests):
        responses = [None] * len(requests)
        good = []
        for i, request in enumerate(requests):
            try:
                good.append((i, self._arrays(request)))
            except ValueError as e:
                responses[i] = _error(str(e))
        if good:
            try:
                results = run_batch(self.session, [arrays for _, arrays in good])
            except zoo.runtime.BackendError as e:
                results = [e] * len(good)
            for (i, _), result in zip(good, results):
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(result))) \
                    if isinstance(result, Exception) else pb_utils.InferenceResponse(
                        output_tensors=[pb_utils.Tensor(name, values) for name, values in result.items()])
        return responses

    def finalize(self):
        self.session.close()
