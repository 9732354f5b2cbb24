"""What crosses the sandbox boundary, and how: tagged JSON plus arrays in an .npz, never pickle.

A message is one frame on a pipe:

    8-byte header (json length, blob length, big-endian uint32) | JSON (UTF-8) | blob (.npz)

The JSON holds plain values; anything else is a tagged object:

    {"$tensor": i, "dtype": "torch.float32", "requires_grad": false}  array i of the blob
    {"$ndarray": i}                                    a numpy array (numeric dtypes only)
    {"$tuple": [...]}  {"$dict": [[key, value], ...], "type": "dict"}  {"$float": "nan"}
    {"$handle": n, "type": "ClassName"}                an object kept in the child (a `new`
                                                       or a kept `build`)
    {"$build": "minialign.module:attr", "args": [...], "kwargs": {...}}   parent -> child only:
                                                       the child calls trusted library code to
                                                       build an argument (a tokenizer, a model)

Only exact types are encoded (`type(x) is torch.Tensor`, not a subclass; int, not an int
subclass): an object of any other type, such as one whose `==` always answers True, cannot be
sent, and the child reports "returned an object of type X" instead. The blob is read with
`np.load(..., allow_pickle=False)`, so an object array is refused. Sizes and nesting depth are
bounded, and every decoding error is a `ProtocolError`, never a crash of the trusted parent.
The blob's zip entries must be stored, not compressed (`np.savez` stores): a small compressed
frame cannot inflate into gigabytes in the parent, and each array's header must claim no more
bytes than its entry holds.
"""

from __future__ import annotations

import collections
import io
import json
import math
import os
import select
import struct
import time
import zipfile

import numpy as np

HEADER = struct.Struct(">II")
MAX_JSON = 16 * 2**20  # bytes of JSON in one frame
MAX_BLOB = 256 * 2**20  # bytes of arrays in one frame
MAX_DEPTH = 40  # nesting of lists / dicts / tuples
DICT_TYPES = {dict: "dict", collections.OrderedDict: "OrderedDict",
              collections.Counter: "Counter", collections.defaultdict: "defaultdict"}


class ProtocolError(Exception):
    """A frame that is not what the protocol allows (garbled, too large, wrong types)."""


class Unsupported(Exception):
    """A value of a type that cannot cross the boundary; `type_name` names it for the student."""

    def __init__(self, type_name: str, where: str = ""):
        super().__init__(f"an object of type {type_name}" + (f" ({where})" if where else ""))
        self.type_name = type_name
        self.where = where


class Handle:
    """Parent side: an object that lives in the child (see runner.RemoteObject)."""

    def __init__(self, number: int, type_name: str = ""):
        self.number = number
        self.type_name = type_name


class Build:
    """Parent side: an argument the child builds by calling trusted library code.

    Build("minialign.tokenizer:Tokenizer", merges) calls minialign.tokenizer.Tokenizer(merges) in
    the child; Build("minialign.course.fixtures:tiny_gpt", seed=0) calls a fixture function.
    Arguments may themselves be Builds, or objects kept in the child (their handles). Only
    targets inside the minialign package are allowed.
    """

    def __init__(self, target: str, *args, **kwargs):
        if not target.startswith("minialign.") or ":" not in target:
            raise ValueError(f"Build target must be 'minialign.module:attr', got {target!r}")
        self.target, self.args, self.kwargs = target, args, kwargs


# ==============================================================================================
# values <-> tagged JSON + arrays


def encode(value, arrays: list, depth: int = 0, where: str = "the result"):
    """A JSON-able form of `value`; tensors and numpy arrays are appended to `arrays`."""
    import torch

    if depth > MAX_DEPTH:
        raise Unsupported("a structure nested too deeply", where)
    t = type(value)
    if value is None or t is bool or t is str or t is int:
        return value
    if t is float:
        return value if math.isfinite(value) else {"$float": repr(value)}
    if t is torch.Tensor:
        return _encode_tensor(value, arrays)
    if t is np.ndarray:
        if value.dtype.kind not in "biufc":
            raise Unsupported(f"numpy array of dtype {value.dtype}", where)
        arrays.append(np.ascontiguousarray(value))
        return {"$ndarray": len(arrays) - 1}
    if isinstance(value, np.generic) and t.__module__ == "numpy" and value.dtype.kind in "biufc":
        arrays.append(np.asarray(value))
        return {"$ndarray": len(arrays) - 1, "scalar": True}
    if t is list:
        return [encode(v, arrays, depth + 1, where) for v in value]
    if t is tuple:
        return {"$tuple": [encode(v, arrays, depth + 1, where) for v in value]}
    if t in DICT_TYPES:
        return {"$dict": [[encode(k, arrays, depth + 1, where), encode(v, arrays, depth + 1, where)]
                          for k, v in value.items()], "type": DICT_TYPES[t]}
    if t is Handle:
        return {"$handle": value.number}
    if t is Build:
        return {"$build": value.target, "args": [encode(a, arrays, depth + 1) for a in value.args],
                "kwargs": {k: encode(v, arrays, depth + 1) for k, v in value.kwargs.items()}}
    raise Unsupported(_type_name(value), where)


def _encode_tensor(value, arrays):
    import torch

    if value.layout != torch.strided or value.is_quantized or value.device.type == "meta":
        raise Unsupported(f"tensor with layout {value.layout} on {value.device}")
    data = value.detach().cpu().resolve_conj().resolve_neg()
    if data.dtype in (torch.bfloat16, torch.float16) or not _numpy_dtype_ok(data.dtype):
        data = data.float()  # numpy has no bfloat16: carry float32, restore the dtype on arrival
    arrays.append(data.contiguous().numpy())
    return {"$tensor": len(arrays) - 1, "dtype": str(value.dtype),
            "requires_grad": bool(value.requires_grad)}


def _numpy_dtype_ok(dtype) -> bool:
    import torch

    return dtype in (torch.float32, torch.float64, torch.int64, torch.int32, torch.int16,
                     torch.int8, torch.uint8, torch.bool, torch.complex64, torch.complex128)


def decode(obj, arrays: dict, depth: int = 0, resolve=None):
    """The value encoded by `encode`. `resolve(tag, obj)` handles $handle and $build (child side)."""
    if depth > MAX_DEPTH:
        raise ProtocolError("value nested too deeply")
    if obj is None or type(obj) in (bool, int, float, str):
        return obj
    if type(obj) is list:
        return [decode(v, arrays, depth + 1, resolve) for v in obj]
    if type(obj) is not dict or len(obj) == 0:
        raise ProtocolError(f"unexpected JSON value of type {type(obj).__name__}")
    if "$tensor" in obj:
        return _decode_tensor(obj, arrays)
    if "$ndarray" in obj:
        array = _array(arrays, obj["$ndarray"])
        return array[()] if obj.get("scalar") else array
    if "$float" in obj:
        if obj["$float"] not in ("nan", "inf", "-inf"):
            raise ProtocolError("bad float tag")
        return float(obj["$float"])
    if "$tuple" in obj:
        return tuple(decode(_list(obj["$tuple"]), arrays, depth + 1, resolve))
    if "$dict" in obj:
        out = {}
        for pair in _list(obj["$dict"]):
            if type(pair) is not list or len(pair) != 2:
                raise ProtocolError("bad dict item")
            key = decode(pair[0], arrays, depth + 1, resolve)
            if not _hashable_plain(key):
                raise ProtocolError(f"dict key of type {type(key).__name__}")
            out[key] = decode(pair[1], arrays, depth + 1, resolve)
        return out
    if "$handle" in obj or "$build" in obj:
        if resolve is None:
            if "$handle" in obj and type(obj["$handle"]) is int:
                return Handle(obj["$handle"], str(obj.get("type", "")))
            raise ProtocolError("unexpected tag")
        return resolve(obj, lambda v: decode(v, arrays, depth + 1, resolve))
    raise ProtocolError(f"unknown tag {sorted(obj)[:3]}")


def _decode_tensor(obj, arrays):
    import torch

    name = obj.get("dtype")
    dtype = getattr(torch, name[len("torch."):], None) if isinstance(name, str) \
        and name.startswith("torch.") else None
    if not isinstance(dtype, torch.dtype):
        raise ProtocolError(f"bad tensor dtype {name!r}")
    array = _array(arrays, obj["$tensor"])
    tensor = torch.from_numpy(np.array(array, copy=True)).to(dtype)
    if obj.get("requires_grad") is True and (dtype.is_floating_point or dtype.is_complex):
        tensor.requires_grad_(True)
    return tensor


def _array(arrays, index):
    if type(index) is not int or index not in arrays:
        raise ProtocolError(f"frame refers to a missing array {index!r}")
    return arrays[index]


def _list(value):
    if type(value) is not list:
        raise ProtocolError("expected a list")
    return value


def _hashable_plain(key) -> bool:
    if key is None or type(key) in (bool, int, float, str):
        return True
    return type(key) is tuple and all(_hashable_plain(k) for k in key)


def _type_name(value) -> str:
    t = type(value)
    module = getattr(t, "__module__", "") or ""
    name = getattr(t, "__qualname__", None) or getattr(t, "__name__", "?")
    return name if module in ("builtins", "") or module.startswith("student_") \
        else f"{module}.{name}"


# ==============================================================================================
# frames


def pack(message: dict, arrays=()) -> bytes:
    body = json.dumps(message, allow_nan=False, separators=(",", ":")).encode("utf-8")
    blob = b""
    if arrays:
        buffer = io.BytesIO()
        np.savez(buffer, **{f"a{i}": a for i, a in enumerate(arrays)})
        blob = buffer.getvalue()
    if len(body) > MAX_JSON or len(blob) > MAX_BLOB:
        raise Unsupported(f"a value too large to send ({len(body) + len(blob)} bytes)")
    return HEADER.pack(len(body), len(blob)) + body + blob


def split_frame(frame: bytes) -> tuple[bytes, bytes]:
    """(json body, blob) of a frame made by `pack`."""
    json_len, _ = HEADER.unpack(frame[: HEADER.size])
    return frame[HEADER.size: HEADER.size + json_len], frame[HEADER.size + json_len:]


def unpack(body: bytes, blob: bytes) -> tuple[dict, dict]:
    try:
        message = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise ProtocolError(f"unreadable message: {e}") from None
    if type(message) is not dict:
        raise ProtocolError("a message must be a JSON object")
    arrays = {}
    if blob:
        _check_blob(blob)
        try:
            with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
                for key in npz.files:
                    if not (key.startswith("a") and key[1:].isdigit()):
                        raise ProtocolError(f"bad array name {key!r}")
                    arrays[int(key[1:])] = npz[key]
        except ProtocolError:
            raise
        except Exception as e:  # includes ValueError "Object arrays cannot be loaded..."
            raise ProtocolError(f"unreadable arrays: {type(e).__name__}: {e}") from None
    return message, arrays


def _check_blob(blob: bytes) -> None:
    """Refuse a blob whose arrays would take more memory than its own size: compressed
    entries, and array headers claiming more elements than their entry holds."""
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            for entry in archive.infolist():
                if entry.compress_type != zipfile.ZIP_STORED or entry.file_size > len(blob):
                    raise ProtocolError("compressed arrays are not accepted")
                with archive.open(entry) as f:
                    version = np.lib.format.read_magic(f)
                    header = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
                              np.lib.format.read_array_header_2_0)
                    shape, _, dtype = header(f, max_header_size=10_000)
                    if math.prod(shape) * dtype.itemsize > entry.file_size:
                        raise ProtocolError(f"array {entry.filename} claims more data than "
                                            f"it holds")
    except ProtocolError:
        raise
    except Exception as e:  # noqa: BLE001 - a broken zip or header, whatever numpy raises
        raise ProtocolError(f"unreadable arrays: {type(e).__name__}: {e}") from None


def write_frame(fd: int, message: dict, arrays=(), deadline: float | None = None) -> None:
    """Write one frame; with a deadline (monotonic seconds) the fd must be non-blocking."""
    data = memoryview(pack(message, arrays))
    while data:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([], [fd], [], remaining)[1]:
                raise TimeoutError("timed out sending a message")
        try:
            n = os.write(fd, data)
        except BlockingIOError:
            continue
        data = data[n:]


def read_frame(fd: int, deadline: float | None = None) -> tuple[dict, dict]:
    """Read one frame. Raises EOFError when the writer is gone, TimeoutError past the deadline."""
    json_len, blob_len = HEADER.unpack(_read_exactly(fd, HEADER.size, deadline))
    if json_len > MAX_JSON or blob_len > MAX_BLOB:
        raise ProtocolError(f"frame too large ({json_len} + {blob_len} bytes)")
    body = _read_exactly(fd, json_len, deadline)
    blob = _read_exactly(fd, blob_len, deadline) if blob_len else b""
    return unpack(body, blob)


def _read_exactly(fd: int, n: int, deadline: float | None) -> bytes:
    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError("timed out waiting for a message")
        try:
            chunk = os.read(fd, min(n - got, 1 << 20))
        except BlockingIOError:
            continue
        if not chunk:
            raise EOFError("the other side closed the pipe")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)
