"""The Open Inference Protocol's (KServe V2) inference request, for a tabular model: its wire
objects, and its tensors read into the checked columns of the model (the answer's side is
`refit.serve.codecs.v2`).

    request = read_request(body, request.headers.get("inference-header-content-length"), reader)
    columns = tensor_columns(reader, request, model.name)

Two layouts of the rows are read: one input per feature (MLServer's `"pd"` content type), and
one `[N, F]` tensor whatever its name. Values come as JSON, flat or nested, or as the binary
tensor data extension (Triton's, which tritonclient sends by default).
"""

from __future__ import annotations

import math
import struct
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from refit.errors import InputError, MalformedBodyError, Problem
from refit.predictions import Columns
from refit.serve._json import parse_json
from refit.serve._numbers import MAX_COUNT, client_count, shown
from refit.serve.failures import invalid
from refit.serve.records import MAX_PROBLEMS, RecordReader, clipped
from refit.signature import InputColumn
from refit.spec import FeatureType

Datatype = Literal[
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
]
_NUMERIC = frozenset(
    {"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"}
    | {"FP16", "FP32", "FP64"}
)
# The datatypes a feature takes. BYTES carries any JSON value (MLServer decodes it to Python
# objects), so it fits every feature; the values are then checked as a record's are.
_TAKES: dict[FeatureType, frozenset[str]] = {
    FeatureType.FLOAT: _NUMERIC | {"BYTES"},
    FeatureType.INT: _NUMERIC | {"BYTES"},
    FeatureType.BOOL: frozenset({"BOOL", "BYTES"}),
    FeatureType.CATEGORY: _NUMERIC | {"BYTES"},
}
MAX_RANK = 8
"""The most dimensions a tensor's shape may have (a tabular model's take one or two)."""
BINARY_HEADER = "inference-header-content-length"
"""The header of the binary tensor data extension: the length of the JSON part of the body."""
_BINARY = {
    "BOOL": "?",
    **{f"UINT{bits}": f"<u{bits // 8}" for bits in (8, 16, 32, 64)},
    **{f"INT{bits}": f"<i{bits // 8}" for bits in (8, 16, 32, 64)},
    **{f"FP{bits}": f"<f{bits // 8}" for bits in (16, 32, 64)},
}


class RequestInput(BaseModel):
    """One input tensor: a feature's column (`shape` [N]) or all rows (`shape` [N, F])."""

    model_config = ConfigDict(strict=True)

    name: str
    shape: list[Annotated[int, Field(ge=0, le=MAX_COUNT)]] = Field(max_length=MAX_RANK)
    datatype: Datatype
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None
    """Row-major values, flat or nested; absent when they come as binary data."""


class RequestOutput(BaseModel):
    """An output to answer with: `predict` or `predict_proba`."""

    model_config = ConfigDict(strict=True)

    name: str
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    """`inference_request` of the Open Inference Protocol."""

    model_config = ConfigDict(strict=True)

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


def read_request(body: bytes, header_length: str | None, reader: RecordReader) -> InferenceRequest:
    """The inference request of a body: JSON, or, when the `Inference-Header-Content-Length`
    header is given, a JSON header then binary tensor data. A body of more values or inputs
    than `reader`'s model could take is refused before they are read."""
    bound = reader.max_separators
    if header_length is None:
        return _parsed(parse_json(body, max_separators=bound), reader)
    head, blob = _split_binary(body, header_length)
    request = _parsed(parse_json(head, max_separators=bound), reader)
    _attach(request, blob)
    return request


def _parsed(body: Any, reader: RecordReader) -> InferenceRequest:
    if not isinstance(body, dict):
        raise MalformedBodyError('expected a JSON object {"inputs": [...]}')
    inputs = body.get("inputs")
    if isinstance(inputs, list) and len(inputs) > 2 * reader.max_fields:
        # Far more inputs than the model's fields: refused before each is validated.
        reader.check_names([_name(tensor) for tensor in inputs], "inputs")
    try:
        return InferenceRequest.model_validate(body)
    except ValidationError as exc:
        raise MalformedBodyError(invalid(exc.errors())) from None


def _name(tensor: Any) -> str:
    name = tensor.get("name") if isinstance(tensor, dict) else None
    return name if isinstance(name, str) else ""


def _flatten(data: list[Any]) -> list[Any]:
    """Row-major values of nested lists (iterative: the nesting depth is the client's)."""
    if not any(isinstance(item, list) for item in data):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _size(shape: list[int]) -> int:
    size = 1
    for dim in shape:
        size *= dim
    return size


def _values(tensor: RequestInput, what: str) -> list[Any]:
    """The flat values of `tensor`, as many as its shape says."""
    if tensor.data is None:
        raise MalformedBodyError(
            f"input {shown(tensor.name)} has no data (nor parameters.binary_data_size)"
        )
    values = _flatten(tensor.data)
    if len(values) != _size(tensor.shape):
        raise MalformedBodyError(
            f"input {shown(tensor.name)} has shape {tensor.shape}, which holds "
            f"{_size(tensor.shape)} values, but its data has {len(values)}; {what}"
        )
    return values


def _split_binary(body: bytes, header_length: str) -> tuple[bytes, bytes]:
    """The JSON header and the binary tail of a body of the binary tensor data extension."""
    length = client_count(header_length, "Inference-Header-Content-Length")
    if not 0 < length <= len(body):
        raise MalformedBodyError(
            f"Inference-Header-Content-Length is {length}, but the body has {len(body)} bytes"
        )
    return body[:length], body[length:]


def _attach(request: InferenceRequest, blob: bytes) -> None:
    """Give each input whose `parameters.binary_data_size` says so its values from `blob`."""
    offset = 0
    for tensor in request.inputs:
        size = (tensor.parameters or {}).get("binary_data_size")
        if size is None:
            continue
        if type(size) is not int or not 0 <= size <= len(blob) - offset:
            raise MalformedBodyError(
                f"input {shown(tensor.name)} has binary_data_size {_told(size)}, but "
                f"{len(blob) - offset} bytes of binary data are left"
            )
        tensor.data = _decode(blob[offset : offset + size], tensor.datatype, tensor.name)
        offset += size
    if offset != len(blob):
        raise MalformedBodyError(f"{len(blob) - offset} bytes of binary data belong to no input")


def _told(value: Any) -> str:
    """A client's value as a message repeats it: a count as written, anything else cut short."""
    return str(value) if type(value) is int and 0 <= value <= MAX_COUNT else shown(str(value))


def _decode(chunk: bytes, datatype: str, name: str) -> list[Any]:
    """The values of one binary tensor: little-endian, row-major; BYTES items are each
    prefixed by their length as 4 bytes. A NaN is a missing value (null in JSON)."""
    if datatype != "BYTES":
        dtype = np.dtype(_BINARY[datatype])
        if len(chunk) % dtype.itemsize:
            raise MalformedBodyError(
                f"input {shown(name)} has {len(chunk)} bytes of {datatype} data, not a multiple of "
                f"{dtype.itemsize}"
            )
        values: list[Any] = np.frombuffer(chunk, dtype=dtype).tolist()
        if datatype.startswith("FP"):  # NaN is binary's only missing value; JSON has null
            return [None if math.isnan(value) else value for value in values]
        return values
    items, at = [], 0
    while at < len(chunk):
        (size,) = struct.unpack_from("<I", chunk, at) if at + 4 <= len(chunk) else (-1,)
        if size < 0 or at + 4 + size > len(chunk):
            raise MalformedBodyError(f"input {shown(name)} has BYTES data cut short at byte {at}")
        try:
            items.append(chunk[at + 4 : at + 4 + size].decode("utf-8"))
        except UnicodeDecodeError:
            raise MalformedBodyError(f"input {shown(name)} has BYTES that are not UTF-8") from None
        at += 4 + size
    return items


def _takes(datatypes: frozenset[str]) -> str:
    named = sorted(datatypes - _NUMERIC)
    if datatypes >= _NUMERIC:
        named.insert(0, "a numeric datatype (FP64, FP32, INT64, ...)")
    return " or ".join(named)


def _content_type(parameters: dict[str, Any] | None) -> Any:
    return (parameters or {}).get("content_type")


def tensor_columns(reader: RecordReader, request: InferenceRequest, name: str) -> Columns:
    """The checked columns of a request, in whichever layout it came."""
    inputs, content = request.inputs, _content_type(request.parameters)
    if content != "pd" and len(inputs) == 1:
        tensor = inputs[0]
        column = tensor.name in reader.names and tensor.shape[1:] in ([], [1])
        if content == "np" or not column:
            return _from_tensor(reader, tensor, name)
    return _from_inputs(reader, inputs)


def _from_tensor(reader: RecordReader, tensor: RequestInput, name: str) -> Columns:
    width = len(reader.names)
    layout = (
        f"one row per instance of the {width} features, in the order that "
        f"GET /v2/models/{name} lists them"
    )
    if len(tensor.shape) != 2 or tensor.shape[1] != width:
        raise MalformedBodyError(
            f"input {shown(tensor.name)} has shape {tensor.shape}; send either one tensor of shape "
            f"[N, {width}] ({layout}) or one input per feature, named after it"
        )
    takes = frozenset.intersection(*(_TAKES[c.type] for c in reader.columns))
    if tensor.datatype not in takes:
        expected = _takes(takes) if takes else 'one input per feature (content_type "pd")'
        raise InputError([Problem(tensor.name, "wrong datatype", tensor.datatype, expected)])
    values = _values(tensor, f"expected [N, {width}]: {layout}")
    index = {feature: j for j, feature in enumerate(reader.names)}
    table = {feature: values[j::width] for feature, j in index.items()}
    return reader.table_columns(
        table, lambda feature, i: f"{tensor.name}[{i}][{index[feature]}] ({feature})"
    )


def _from_inputs(reader: RecordReader, inputs: list[RequestInput]) -> Columns:
    columns: dict[str, InputColumn] = {c.name: c for c in reader.columns}
    if reader.ignores_extra:  # else each unknown or repeated input is named below
        reader.check_names([tensor.name for tensor in inputs], "inputs")
    problems: list[Problem] = []
    table: dict[str, list[Any]] = {}
    for tensor in inputs:
        if len(problems) >= MAX_PROBLEMS:
            break
        if tensor.name not in columns and reader.ignores_extra:
            continue  # an input named for no feature, which serve.extra_fields ignores
        if tensor.name in table:
            problems.append(
                Problem(clipped(tensor.name), "given twice", None, "one input per feature")
            )
            continue
        column = columns.get(tensor.name)
        if len(tensor.shape) not in (1, 2) or tensor.shape[1:] not in ([], [1]):
            problems.append(
                Problem(clipped(tensor.name), "wrong shape", tensor.shape, "[N] or [N, 1]")
            )
            continue
        if column is not None and tensor.datatype not in _TAKES[column.type]:
            expected = _takes(_TAKES[column.type])
            problems.append(Problem(tensor.name, "wrong datatype", tensor.datatype, expected))
            continue
        table[tensor.name] = _values(tensor, "one value per row")
    if problems:
        raise InputError(problems)
    return reader.table_columns(table, lambda feature, i: f"{feature}[{i}]")
