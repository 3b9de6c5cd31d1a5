"""Read and write safetensors files without the `safetensors` package (one writer, one reader).

The writer is the one tested in reference/engine-notes.md section 5 (tensors sorted by dtype size
then name, header padded with spaces to a multiple of 8, no holes); it takes torch tensors or numpy
arrays.
The reader applies the checks of the reference implementation (header bounds, known dtypes, offsets
that cover the data buffer exactly) and returns numpy arrays, so it works without torch.

    from safetensors_io import save, load
    save("model.safetensors", model.state_dict(), {"format": "pt"})
    tensors, metadata = load("model.safetensors")      # {"conv.0.weight": np.ndarray, ...}, {...}
"""

import json
import struct

import numpy as np

MAX_HEADER = 100_000_000  # bytes; MAX_HEADER_SIZE of the reference implementation

# dtype string -> numpy dtype (little-endian). BF16 has no numpy type: it is read as uint16 bits.
_NP = {
    "BOOL": np.dtype("bool"), "U8": np.dtype("uint8"), "I8": np.dtype("int8"),
    "I16": np.dtype("<i2"), "U16": np.dtype("<u2"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I32": np.dtype("<i4"), "U32": np.dtype("<u4"), "F32": np.dtype("<f4"), "F64": np.dtype("<f8"),
    "I64": np.dtype("<i8"), "U64": np.dtype("<u8"),
}
_FROM_NP = {np.dtype(v).newbyteorder("<").str: k for k, v in _NP.items() if k != "BF16"}


class SafetensorsError(ValueError):
    """The file is not a valid safetensors file; the message says what is wrong."""


def _encode(value):
    """Returns (dtype string, shape, little-endian bytes) for a torch tensor or a numpy array."""
    if not isinstance(value, np.ndarray) and hasattr(value, "detach"):  # a torch tensor
        import torch  # only needed when torch tensors are passed

        t = value.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16: store the raw bits
            return "BF16", list(t.shape), t.view(torch.int16).numpy().tobytes()
        value = t.numpy()
    arr = np.ascontiguousarray(value)
    key = arr.dtype.newbyteorder("<").str if arr.dtype.byteorder != "|" else arr.dtype.str
    if key not in _FROM_NP:
        raise SafetensorsError(f"unsupported dtype {arr.dtype}")
    return _FROM_NP[key], list(arr.shape), arr.astype(arr.dtype.newbyteorder("<")).tobytes()


def save(path, tensors, metadata=None):
    """Writes `tensors` (name -> torch tensor or numpy array) to `path` as safetensors.

    `metadata` is an optional string -> string map stored as "__metadata__". Shared or aliased
    tensors are fine: every tensor is serialised separately.
    """
    encoded = {name: _encode(v) for name, v in tensors.items()}
    order = sorted(encoded, key=lambda n: (-_NP[encoded[n][0]].itemsize, n))
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name in order:
        dtype, shape, blob = encoded[name]
        assert len(blob) == int(np.prod(shape, dtype=np.int64)) * _NP[dtype].itemsize
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for blob in blobs:
            f.write(blob)


def _check_entry(name, entry):
    """Validates one header entry and returns (dtype string, shape, begin, end)."""
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise SafetensorsError(f"tensor '{name}': expected exactly dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in _NP:
        raise SafetensorsError(f"tensor '{name}': unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise SafetensorsError(f"tensor '{name}': shape must be a list of integers >= 0, "
                               f"got {shape}")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(type(o) is int for o in offsets) or not 0 <= offsets[0] <= offsets[1]):
        raise SafetensorsError(f"tensor '{name}': bad data_offsets {offsets}")
    nbytes = int(np.prod(shape, dtype=object)) * _NP[dtype].itemsize
    if offsets[1] - offsets[0] != nbytes:
        raise SafetensorsError(f"tensor '{name}': {dtype} {shape} needs {nbytes} bytes, "
                               f"data_offsets {offsets} hold {offsets[1] - offsets[0]}")
    return dtype, shape, offsets[0], offsets[1]


def _reject_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise SafetensorsError("duplicate key in the header")
    return dict(pairs)


def loads(data):
    """Parses safetensors bytes; returns ({name: numpy array}, {metadata}). BF16 becomes float32."""
    if len(data) < 8:
        raise SafetensorsError(f"file too short ({len(data)} bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER or n > len(data) - 8:
        raise SafetensorsError(f"header size {n} exceeds the file or the {MAX_HEADER} byte limit")
    raw = data[8:8 + n]
    if not raw.startswith(b"{"):
        raise SafetensorsError("header does not start with '{'")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_reject_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"header is not valid UTF-8 JSON: {e}") from None
    metadata = header.pop("__metadata__", {}) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SafetensorsError("__metadata__ must map strings to strings")
    buf = memoryview(data)[8 + n:]
    entries = sorted(((_check_entry(k, v), k) for k, v in header.items()), key=lambda e: e[0][2])
    expected = 0
    tensors = {}
    for (dtype, shape, begin, end), name in entries:
        if begin != expected:
            raise SafetensorsError(f"tensor '{name}' starts at {begin}, expected {expected} "
                                   "(holes and overlaps are not allowed)")
        arr = np.frombuffer(buf[begin:end], dtype=_NP[dtype]).reshape(shape)
        if dtype == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = arr.copy()
        expected = end
    if expected != len(buf):
        raise SafetensorsError(f"data buffer holds {len(buf)} bytes, tensors cover {expected}")
    return tensors, metadata


def load(path):
    """Reads a safetensors file; returns ({name: numpy array}, {metadata})."""
    with open(path, "rb") as f:
        return loads(f.read())
