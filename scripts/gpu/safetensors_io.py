"""The safetensors format, written and read by hand (standard library only).

A file is an 8-byte little-endian header length N, N bytes of JSON (padded with spaces
to a multiple of 8) mapping each tensor name to its dtype, shape and [begin, end) byte
offsets into the data that follows, then the data. The `safetensors` package is used
instead when it is installed (model.py); this module is the fallback and the reader.
"""

import json
import struct

# dtype names of the format and their sizes in bytes
DTYPE_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
              "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def write(path, tensors, metadata=None):
    """Writes tensors, a list of (name, dtype, shape, data bytes), in that order."""
    header = {}
    offset = 0
    for name, dtype, shape, data in tensors:
        n = DTYPE_SIZE[dtype]
        for d in shape:
            n *= d
        if n != len(data):
            raise ValueError("%s: %d bytes for %s %s" % (name, len(data), dtype, list(shape)))
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for _, _, _, data in tensors:
            f.write(data)


def read_header(path):
    """(header dict without __metadata__, metadata, byte offset of the data)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > 100 << 20:
            raise ValueError("%s: header of %d bytes is not plausible" % (path, n))
        header = json.loads(f.read(n))
    meta = header.pop("__metadata__", {})
    return header, meta, 8 + n
