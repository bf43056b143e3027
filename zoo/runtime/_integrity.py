"""What a bundle's model file reads, checked before any backend opens it: the model file's sha256, and for ONNX
the external-data files its tensors name (each must be a file inside the bundle whose sha256 the manifest records
in `external_data`, a field sealed into the model file since format version 3).

The references are read with protobuf and a partial ONNX schema (every message that can hold a tensor, only the
fields that lead to one), so the runtime needs neither the onnx package nor trust in onnxruntime's own
path checks."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path, PurePosixPath

from zoo.runtime._backends import BackendError
from zoo.runtime._manifest import MANIFEST_NAME, BundleError, Manifest

__all__ = ["check_files", "external_data"]

# message -> (field name, number, message type or None for a scalar, repeated) for the ONNX fields on the way
# to a TensorProto's external_data (onnx.proto3; unknown fields are skipped by protobuf)
_ONNX = {
    "Entry": [("key", 1, None, False), ("value", 2, None, False)],
    "Tensor": [("external_data", 13, "Entry", True), ("data_location", 14, "int", False)],
    "Sparse": [("values", 1, "Tensor", False), ("indices", 2, "Tensor", False)],
    "Attribute": [("t", 5, "Tensor", False), ("g", 6, "Graph", False), ("tensors", 10, "Tensor", True),
                  ("graphs", 11, "Graph", True), ("sparse_tensor", 22, "Sparse", False),
                  ("sparse_tensors", 23, "Sparse", True)],
    "Node": [("attribute", 5, "Attribute", True)],
    "Graph": [("node", 1, "Node", True), ("initializer", 5, "Tensor", True), ("sparse_initializer", 15, "Sparse", True)],
    "Function": [("node", 7, "Node", True), ("attribute_proto", 11, "Attribute", True)],
    "Training": [("initialization", 1, "Graph", False), ("algorithm", 2, "Graph", False)],
    "Model": [("graph", 7, "Graph", False), ("training_info", 20, "Training", True), ("functions", 25, "Function", True)],
}
_EXTERNAL = 1   # TensorProto.DataLocation.EXTERNAL


@functools.cache
def _model_class():
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="zoo_onnx_references.proto", package="zoo_onnx", syntax="proto2")
    for name, fields in _ONNX.items():
        message = file.message_type.add(name=name)
        for field, number, kind, repeated in fields:
            label = F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL
            if kind is None:
                message.field.add(name=field, number=number, label=label, type=F.TYPE_STRING)
            elif kind == "int":
                message.field.add(name=field, number=number, label=label, type=F.TYPE_INT32)
            else:
                message.field.add(name=field, number=number, label=label, type=F.TYPE_MESSAGE,
                                  type_name=f".zoo_onnx.{kind}")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("zoo_onnx.Model"))


def _tensors(message):
    """Every Tensor message inside `message`, depth first."""
    from google.protobuf.message import Message

    if message.DESCRIPTOR.name == "Tensor":
        yield message
        return
    for field, value in message.ListFields():
        if field.message_type is not None:
            for item in [value] if isinstance(value, Message) else value:
                yield from _tensors(item)


def external_data(content: bytes, where: Path) -> list[str]:
    """The external-data locations an ONNX model file's tensors name, in order of first mention."""
    from google.protobuf.message import DecodeError

    try:
        model = _model_class().FromString(content)
    except (DecodeError, RecursionError) as e:
        raise BackendError(f"{where} is not a readable ONNX model ({e})") from None   # as onnxruntime would say
    found = {}
    for tensor in _tensors(model):
        entries = {e.key: e.value for e in tensor.external_data}
        if tensor.data_location == _EXTERNAL or entries:
            found[entries.get("location", "")] = None
    return list(found)


def _inside(bundle: Path, location: str, model_file: Path) -> Path:
    """The bundle file an external-data location names; BundleError when it could be anything else."""
    parts = PurePosixPath(location).parts
    if (not location or "\\" in location or PurePosixPath(location).is_absolute() or ".." in parts
            or location in (MANIFEST_NAME, model_file.name)):
        raise BundleError(f"{model_file} reads external data from {location!r}: only files inside the bundle "
                          "folder (no absolute paths, no '..') may hold a model's weights", exit_code=1)
    path = bundle / location
    if path.is_symlink() or not path.is_file() or not path.resolve().is_relative_to(bundle.resolve()):
        raise BundleError(f"{model_file} reads external data from {location!r}, which is not a plain file inside "
                          f"{bundle} (missing, a link or a folder)", exit_code=1)
    return path


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def check_files(manifest: Manifest, verify: bool) -> None:
    """The model file against `file_sha256` and, for ONNX, every external-data file it reads against the
    manifest's `external_data` (with `verify`); external data outside the bundle is refused either way."""
    content = manifest.file.read_bytes() if manifest.format == "onnx" or verify else b""
    if verify:
        expected = manifest.data.get("file_sha256")
        if not expected:
            raise BundleError(f"{manifest.bundle / MANIFEST_NAME} has no file_sha256, so {manifest.file.name} "
                              "cannot be checked: re-export the bundle, or load it with verify=False if you "
                              "trust it", exit_code=1)
        digest = hashlib.sha256(content).hexdigest()
        if digest != expected:
            raise BundleError(f"{manifest.file}: sha256 {digest[:12]}… does not match the manifest's "
                              f"{str(expected)[:12]}…: the model file was changed or truncated", exit_code=1)
    if manifest.format != "onnx":
        return
    recorded = manifest.data.get("external_data") or {}
    for location in external_data(content, manifest.file):
        path = _inside(manifest.bundle, location, manifest.file)
        if not verify:
            continue
        if location not in recorded:
            raise BundleError(f"{manifest.file} reads external data from {location}, which no checksum in "
                              f"{MANIFEST_NAME} covers (external_data): re-export the bundle, or load it with "
                              "verify=False if you trust it", exit_code=1)
        digest = _sha256(path)
        if digest != recorded[location]:
            raise BundleError(f"{path}: sha256 {digest[:12]}… does not match the manifest's "
                              f"{recorded[location][:12]}…: the model's external data was changed", exit_code=1)
