"""The KServe v2 / Triton `GRPCInferenceService` (grpcio's asyncio server, on the event loop of the HTTP
server, with the same models, batchers and statistics). The service stubs are those tritonclient ships
(tritonclient.grpc.service_pb2*), generated from Triton's own grpc_service.proto.

An infer request becomes the same header and binary tail an HTTP request has, so both front ends check
requests with the same code and answer with the same outputs. Errors are gRPC status codes with the same
one-line message; a client's deadline bounds how long its request may wait in the queue, and a request
whose client has gone (deadline passed, call cancelled) is dropped before it is computed."""

from __future__ import annotations

import asyncio
import logging
import struct
import time

import grpc
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from zoo.serve._core import Core, error_status, server_metadata
from zoo.serve._protocol import VERSION, RequestError, parse_infer, response_tensors

log = logging.getLogger("zoo.serve")
CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND,
         413: grpc.StatusCode.RESOURCE_EXHAUSTED, 500: grpc.StatusCode.INTERNAL, 503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.DEADLINE_EXCEEDED}
CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
            "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
            "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}


def _value(parameter):
    which = parameter.WhichOneof("parameter_choice")
    return getattr(parameter, which) if which else None


def _parameters(message) -> dict:
    return {k: _value(v) for k, v in message.parameters.items()}


def infer_header(request) -> tuple[dict, bytes]:
    """A ModelInferRequest as the JSON header and binary tail of the HTTP binary-tensor extension."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise RequestError(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs: give every "
                           "input's data there, or every one in its contents")
    inputs, tail = [], []
    for i, tensor in enumerate(request.inputs):
        entry = {"name": tensor.name, "shape": list(tensor.shape), "datatype": tensor.datatype,
                 "parameters": _parameters(tensor)}
        if raw:
            blob = raw[i]
        elif tensor.datatype == "BYTES":
            blob = b"".join(struct.pack("<I", len(v)) + v for v in tensor.contents.bytes_contents)
        else:
            entry["data"] = list(getattr(tensor.contents, CONTENTS.get(tensor.datatype, "fp32_contents")))
            blob = None
        if blob is not None:
            entry["parameters"]["binary_data_size"] = len(blob)
            tail.append(blob)
        inputs.append(entry)
    header = {"inputs": inputs, "parameters": {**_parameters(request), "binary_data_output": True}}
    if request.id:
        header["id"] = request.id
    if request.outputs:
        header["outputs"] = [{"name": o.name, "parameters": {**_parameters(o), "binary_data": True}}
                             for o in request.outputs]
    return header, b"".join(tail)


class Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """Every method of the service this server implements; the rest (shared memory, trace, log settings,
    streaming) answer UNIMPLEMENTED, as the stubs' base class does."""

    def __init__(self, core: Core):
        self.core = core

    async def _fail(self, context, error: BaseException):
        status = error_status(error)
        if status is None:
            log.exception("unexpected error in a gRPC call", exc_info=error)
            status = (500, f"internal error: {type(error).__name__}")
        await context.abort(CODES.get(status[0], grpc.StatusCode.INVALID_ARGUMENT), status[1])

    async def ServerLive(self, request, context):
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return service_pb2.ServerReadyResponse(ready=self.core.ready())

    async def ModelReady(self, request, context):
        ready = self.core.models.ready(request.name) and request.version in ("", VERSION)
        return service_pb2.ModelReadyResponse(ready=ready)

    async def ServerMetadata(self, request, context):
        return json_format.ParseDict(server_metadata(), service_pb2.ServerMetadataResponse())

    async def ModelMetadata(self, request, context):
        try:
            metadata = dict(self.core.models.variant(request.name, request.version).metadata)
        except RequestError as e:
            return await self._fail(context, e)
        metadata.pop("parameters", None)   # the gRPC message has no parameters: labels come with classification
        for tensor in (*metadata["inputs"], *metadata["outputs"]):
            tensor.pop("parameters", None)
        return json_format.ParseDict(metadata, service_pb2.ModelMetadataResponse())

    async def ModelConfig(self, request, context):
        try:
            variant = self.core.models.variant(request.name, request.version)
            if variant.config is None:
                raise RequestError(f"model {request.name!r} is a {variant.session.manifest.format} bundle: it has "
                                   "no Triton configuration (those are made from ONNX bundles)", 404)
        except RequestError as e:
            return await self._fail(context, e)
        config = json_format.ParseDict(variant.config, model_config_pb2.ModelConfig())
        return service_pb2.ModelConfigResponse(config=config)

    async def ModelInfer(self, request, context):
        start = time.perf_counter()
        name, status = request.model_name, 200
        try:
            remaining = context.time_remaining()
            deadline = None if remaining is None else time.perf_counter() + remaining
            variant = self.core.models.variant(name, request.model_version)
            header, tail = infer_header(request)
            parsed = parse_infer(header, tail, variant.session.manifest, name, variant.raw)
            manifest, outputs = await self.core.infer(name, request.model_version, parsed, deadline)
            response = service_pb2.ModelInferResponse(model_name=name, model_version=VERSION, id=request.id)
            for entry, blob in response_tensors(parsed, outputs, manifest):
                response.outputs.add(name=entry["name"], datatype=entry["datatype"], shape=entry["shape"])
                response.raw_output_contents.append(blob)
            return response
        except asyncio.CancelledError:   # the client went away: its deadline passed, or it cancelled
            status = 499
            raise
        except Exception as e:  # noqa: BLE001 - every failure becomes a status code
            status = (error_status(e) or (500, ""))[0]
            return await self._fail(context, e)
        finally:
            self.core.record(name, "grpc", status, time.perf_counter() - start)

    async def ModelStatistics(self, request, context):
        try:
            stats = self.core.statistics(request.name, request.version)
        except RequestError as e:
            return await self._fail(context, e)
        return json_format.ParseDict({"model_stats": stats}, service_pb2.ModelStatisticsResponse())

    async def RepositoryIndex(self, request, context):
        index = self.core.models.index(ready_only=request.ready)
        return json_format.ParseDict({"models": index}, service_pb2.RepositoryIndexResponse())

    async def RepositoryModelLoad(self, request, context):
        try:
            await self.core.load(request.model_name)
        except RequestError as e:
            return await self._fail(context, e)
        return service_pb2.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request, context):
        try:
            await self.core.unload(request.model_name)
        except RequestError as e:
            return await self._fail(context, e)
        return service_pb2.RepositoryModelUnloadResponse()


async def start_grpc(core: Core, host: str, port: int) -> grpc.aio.Server:
    """The gRPC server on host:port (SO_REUSEPORT: every worker process of the server listens there)."""
    limit = core.options.max_body_bytes
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit),
                                      ("grpc.max_send_message_length", 2**31 - 1), ("grpc.so_reuseport", 1)])
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(core), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if server.add_insecure_port(address) == 0:
        raise OSError(f"cannot listen on {address} for gRPC")
    await server.start()
    return server
