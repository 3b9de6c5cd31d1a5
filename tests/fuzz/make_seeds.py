#!/usr/bin/env python3
"""make_seeds.py - writes the seed corpora of tests/fuzz/<target>/ (valid and near-valid inputs).

Run from anywhere: `/usr/bin/python3 tests/fuzz/make_seeds.py` (needs Pillow for the JPEG, GIF,
BMP and TGA variants: Debian's python3-pil). It copies the shipped model files and example images
that are small enough (< 200 KB) and writes hand-made inputs next to them, replacing the files of
tests/fuzz/<target>/ but keeping regressions/. The seeds are committed, so CI never runs this.
"""
import base64
import glob
import io
import json
import os
import struct
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MAX_SEED = 200 * 1024


def out_dir(target):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        p = os.path.join(d, f)
        if os.path.isfile(p):
            os.remove(p)
    return d


def write(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(HERE, target, name), "wb") as f:
        f.write(data)


def small_files(pattern):
    """(name, bytes) of matching files under the repository, < MAX_SEED, without duplicates."""
    seen = set()
    for p in sorted(glob.glob(os.path.join(ROOT, pattern))):
        data = open(p, "rb").read()
        if len(data) >= MAX_SEED or data in seen:
            continue
        seen.add(data)
        rel = os.path.relpath(p, ROOT).replace("/", "_")
        yield rel, data


# ---- safetensors -------------------------------------------------------------------------------

def safetensors(tensors, metadata=None, pad=True, header=None):
    """tensors: list of (name, dtype, shape, raw bytes). Offsets follow the list order."""
    h = {}
    if metadata is not None:
        h["__metadata__"] = metadata
    off = 0
    for name, dtype, shape, raw in tensors:
        h[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    text = header if header is not None else json.dumps(h, separators=(",", ":"))
    b = text.encode()
    if pad:
        b += b" " * (-len(b) % 8)
    return struct.pack("<Q", len(b)) + b + b"".join(t[3] for t in tensors)


def seeds_safetensors():
    out_dir("safetensors")
    for name, data in small_files("config/models/*/model.safetensors"):
        write("safetensors", name, data)
    for name, data in small_files("tests/fixtures/*/*.safetensors"):
        # A fixture's model.safetensors adds little next to the shipped model of the same name.
        model = name.split("_")[2:-1]
        if name.endswith("_model.safetensors") and os.path.exists(
                os.path.join(ROOT, "config/models", "_".join(model), "model.safetensors")):
            continue
        write("safetensors", name, data)
    sizes = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4,
             "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8}
    all_dtypes = [("t_" + d.lower(), d, [2], bytes(range(1, 1 + 2 * n))) for d, n in sizes.items()]
    write("safetensors", "all_dtypes", safetensors(all_dtypes, {"format": "pt"}))
    f32 = struct.pack("<6f", 1.0, -2.0, 0.5, float("inf"), float("nan"), 1e-40)
    write("safetensors", "f32_2x3", safetensors([("w", "F32", [2, 3], f32)]))
    write("safetensors", "f16_bf16", safetensors([
        ("h", "F16", [4], struct.pack("<4H", 0x3c00, 0x8001, 0x7c00, 0x7e00)),
        ("b", "BF16", [2, 1], struct.pack("<2H", 0x3f80, 0xff80))]))
    write("safetensors", "f64", safetensors([("d", "F64", [2], struct.pack("<2d", 1e300, -1e-300))]))
    write("safetensors", "scalar", safetensors([("s", "F32", [], struct.pack("<f", 3.0))]))
    write("safetensors", "empty_tensor", safetensors([("e", "F32", [0, 3], b""),
                                                      ("x", "F32", [1], b"\0\0\x80?")]))
    write("safetensors", "no_tensors", safetensors([]))
    write("safetensors", "metadata_only", safetensors([], {"format": "pt", "k": "v"}))
    write("safetensors", "unpadded", safetensors([("a", "U8", [3], b"abc")], pad=False))
    # Near-valid: each breaks one rule.
    ok = [("a", "F32", [2], b"\0" * 8), ("b", "F32", [1], b"\0" * 4)]
    write("safetensors", "bad_header_past_end", struct.pack("<Q", 1 << 20) + b"{}")
    write("safetensors", "bad_header_huge", struct.pack("<Q", 2**64 - 1) + b"{}")
    write("safetensors", "bad_short", b"\x02\0\0\0")
    write("safetensors", "bad_overlap", safetensors(ok, header=json.dumps({
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})))
    write("safetensors", "bad_hole", safetensors(ok, header=json.dumps({
        "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
        "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})))
    write("safetensors", "bad_offsets_past_end", safetensors(ok, header=json.dumps({
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4096]}})))
    write("safetensors", "bad_shape_mismatch", safetensors(ok, header=json.dumps({
        "a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})))
    write("safetensors", "bad_dtype", safetensors(ok, header=json.dumps({
        "a": {"dtype": "F8", "shape": [8], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})))
    write("safetensors", "bad_negative_shape", safetensors(ok, header=json.dumps({
        "a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})))
    write("safetensors", "bad_overflow_shape", safetensors(ok, header=json.dumps({
        "a": {"dtype": "F64", "shape": [2**62, 4], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})))
    write("safetensors", "bad_duplicate_key", safetensors(ok, header=
        '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
        '"a":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}'))
    write("safetensors", "bad_not_object", safetensors(ok, header='[1,2,3]'))
    write("safetensors", "bad_float_offsets", safetensors(ok, header=json.dumps({
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8.0]},
        "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})))
    write("safetensors", "bad_long_name", safetensors([("n" * 300, "U8", [1], b"x")]))
    write("safetensors", "bad_rank9", safetensors([("r", "U8", [1] * 9, b"x")]))
    write("safetensors", "bad_trailing", safetensors(ok) + b"extra")


# ---- model.json --------------------------------------------------------------------------------

def seeds_model_json():
    out_dir("model_json")
    for name, data in small_files("config/models/*/model.json"):
        write("model_json", name, data)
    for name, data in small_files("tests/fixtures/*/model.json"):
        write("model_json", name, data)
    every_op = {
        "name": "every_op", "description": "one of each layer", "seed": 7, "precision": "bf16",
        "input": {"name": "image", "shape": [3, 32, 32]},
        "output": {"name": "probs", "labels": ["a", "b", "c", "d"]},
        "max_batch_size": 8, "dynamic_batching": {"max_queue_delay_us": 100},
        "preprocess": {"color": "rgb", "resize": [32, 32], "scale": 0.00392156862745098,
                       "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "invert": True},
        "layers": [
            {"op": "Conv2d", "name": "c1", "in_channels": 3, "out_channels": 8, "kernel_size": 3,
             "stride": 1, "padding": "same", "dilation": 2, "groups": 1, "bias": True,
             "padding_mode": "zeros"},
            {"op": "BatchNorm2d", "name": "bn", "num_features": 8, "eps": 1e-3, "momentum": None,
             "affine": False, "track_running_stats": True},
            {"op": "LeakyReLU", "negative_slope": 0.2, "inplace": True},
            {"op": "Conv2d", "name": "c2", "in_channels": 8, "out_channels": 8, "kernel_size": [3, 1],
             "stride": [2, 1], "padding": "valid", "groups": 4, "bias": False},
            {"op": "MaxPool2d", "kernel_size": [2, 2], "stride": [1, 2], "padding": [1, 0],
             "dilation": [1, 1], "ceil_mode": True, "return_indices": False},
            {"op": "AvgPool2d", "kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True,
             "count_include_pad": False, "divisor_override": None},
            {"op": "GELU", "approximate": "tanh"},
            {"op": "Dropout2d", "p": 0.1},
            {"op": "AdaptiveAvgPool2d", "output_size": [2, 2]},
            {"op": "Sigmoid"}, {"op": "Tanh"}, {"op": "Identity"},
            {"op": "Flatten", "start_dim": 1, "end_dim": 3},
            {"op": "Linear", "name": "fc", "in_features": 32, "out_features": 4, "bias": True},
            {"op": "ReLU", "inplace": False},
            {"op": "Softmax", "dim": 1},
            {"op": "LogSoftmax", "dim": -1},
        ]}
    write("model_json", "every_op", json.dumps(every_op, indent=1))
    free = {"name": "free_hw", "input": {"name": "x", "shape": [1, -1, -1]},
            "output": {"name": "y"},
            "layers": [{"op": "Conv2d", "name": "c", "in_channels": 1, "out_channels": 2,
                        "kernel_size": 5, "padding": 2},
                       {"op": "AdaptiveAvgPool2d", "output_size": 1},
                       {"op": "Flatten"},
                       {"op": "Linear", "name": "l", "in_features": 2, "out_features": 3}]}
    write("model_json", "free_hw", json.dumps(free))
    features = {"name": "mlp", "input": {"shape": [16]}, "max_batch_size": 4096,
                "layers": [{"op": "Linear", "name": "a", "in_features": 16, "out_features": 1},
                           {"op": "GELU", "approximate": "none"}]}
    write("model_json", "features", json.dumps(features))
    # Near-valid: one wrong value each.
    def broken(name, **change):
        m = json.loads(json.dumps(free))
        for path, v in change.items():
            obj = m
            keys = path.split("__")
            for k in keys[:-1]:
                obj = obj[int(k)] if k.isdigit() else obj[k]
            last = keys[-1]
            if last.isdigit():
                obj[int(last)] = v
            else:
                obj[last] = v
        write("model_json", "bad_" + name, json.dumps(m))
    broken("kernel_negative", layers__0__kernel_size=-1)
    broken("kernel_huge", layers__0__kernel_size=2**40)
    broken("unknown_op", layers__1__op="Conv3d")
    broken("unknown_key", layers__0__bogus=1)
    broken("in_features", layers__3__in_features=5)
    broken("shape_rank", input__shape=[1, 2])
    broken("batch_zero", max_batch_size=0)
    broken("layers_empty", layers=[])
    broken("stride_float", layers__0__stride=1.5)
    broken("padding_word", layers__0__padding="full")
    broken("groups", layers__0__groups=3)
    broken("labels_type", output={"name": "y", "labels": [1, 2]})
    broken("weights_type", weights=3)
    # Graphs: a residual block with a projection shortcut, squeeze-excitation, concatenation, Mean.
    graph = {"name": "graph", "input": {"shape": [4, -1, -1]}, "max_batch_size": 4,
             "layers": [
                 {"op": "Conv2d", "name": "c1", "in_channels": 4, "out_channels": 8,
                  "kernel_size": 3, "stride": 2, "padding": 1, "bias": False},
                 {"op": "BatchNorm2d", "name": "bn1", "num_features": 8},
                 {"op": "ReLU6", "id": "r"},
                 {"op": "Conv2d", "name": "down", "inputs": ["input"], "in_channels": 4,
                  "out_channels": 8, "kernel_size": 1, "stride": 2, "bias": False},
                 {"op": "Add", "id": "res", "inputs": ["r", "down"]},
                 {"op": "AdaptiveAvgPool2d", "output_size": 1},
                 {"op": "Conv2d", "name": "fc1", "in_channels": 8, "out_channels": 4,
                  "kernel_size": 1},
                 {"op": "SiLU"},
                 {"op": "Conv2d", "name": "fc2", "in_channels": 4, "out_channels": 8,
                  "kernel_size": 1},
                 {"op": "Hardsigmoid", "id": "gate"},
                 {"op": "Mul", "id": "se", "inputs": ["res", "gate"]},
                 {"op": "StochasticDepth", "p": 0.1, "mode": "row"},
                 {"op": "Hardswish", "id": "hs"},
                 {"op": "MaxPool2d", "id": "pool", "inputs": ["se"], "kernel_size": 3, "stride": 1,
                  "padding": 1},
                 {"op": "Cat", "id": "cat", "dim": 1, "inputs": ["hs", "pool", "res"]},
                 {"op": "Mean", "dim": [2, 3], "keepdim": False},
                 {"op": "Linear", "name": "fc", "in_features": 24, "out_features": 3}]}
    write("model_json", "graph", json.dumps(graph, indent=1))

    def broken_graph(name, index, **change):
        m = json.loads(json.dumps(graph))
        m["layers"][index].update(change)
        write("model_json", "bad_graph_" + name, json.dumps(m))
    broken_graph("dangling", 4, inputs=["r", "nowhere"])
    broken_graph("later", 4, inputs=["r", "gate"])
    broken_graph("itself", 4, inputs=["res", "down"])
    broken_graph("add_arity", 4, inputs=["r"])
    broken_graph("mul_arity", 10, inputs=["res", "gate", "gate"])
    broken_graph("duplicate_id", 12, id="gate")
    broken_graph("unused_branch", 15, inputs=["pool"])
    broken_graph("cat_dim0", 14, dim=0)
    broken_graph("mean_dims", 15, dim=[1, 2])
    broken_graph("reserved_id", 2, id="input")
    broken_graph("inputs_type", 4, inputs="r")
    write("model_json", "bad_truncated", json.dumps(free)[:-7])
    write("model_json", "bad_array", "[]")
    write("model_json", "bad_duplicate", '{"name":"a","name":"b","layers":[]}')


def json_dict(path, words):
    with open(path, "w") as f:
        f.write("# libFuzzer dictionary; written by make_seeds.py\n")
        for i, w in enumerate(words):
            esc = w.replace("\\", "\\\\").replace('"', '\\"')
            f.write('k%d="%s"\n' % (i, esc))


# ---- infer requests ----------------------------------------------------------------------------

def png_bytes(w, h, gray=True):
    raw = b"".join(b"\0" + bytes((x * 37 + y * 11) & 255 for x in range(w * (1 if gray else 3)))
                   for y in range(h))
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0 if gray else 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def seeds_infer_json():
    out_dir("infer_json")
    for name, data in small_files("examples/*.json"):
        if b'"inputs"' in data:
            write("infer_json", name, data)
    def req(inp, **top):
        r = dict(top)
        r["inputs"] = [inp]
        return json.dumps(r)
    flat = [0.5, -1.25, 3e-3, 1e10, -0.0, 7]
    write("infer_json", "flat_fp32", req({"name": "input", "shape": [1, 6], "datatype": "FP32",
                                          "data": flat}))
    write("infer_json", "nested_fp32", req({"name": "input", "shape": [1, 1, 2, 3], "datatype": "FP32",
                                            "data": [[[[1, 2, 3], [4, 5, 6]]]]}, id="req-1"))
    write("infer_json", "fp64_params", req({"name": "input", "shape": [2, 2], "datatype": "FP64",
                                            "data": [1.5, 2.5, 1e-300, 1e300]},
                                           id="x", parameters={"layer_shapes": True,
                                                               "binary_data_output": False},
                                           outputs=[{"name": "logits",
                                                     "parameters": {"binary_data": True}}]))
    for dt, vals in [("INT8", [-128, 127]), ("UINT8", [0, 255]), ("INT16", [-32768, 32767]),
                     ("UINT16", [0, 65535]), ("INT32", [-2**31, 2**31 - 1]),
                     ("UINT32", [0, 2**32 - 1]), ("INT64", [-2**63, 2**63 - 1]),
                     ("UINT64", [0, 2**64 - 1]), ("BOOL", [True, False]), ("FP16", [1.0, 65504])]:
        write("infer_json", "dtype_" + dt.lower(), req({"name": "input", "shape": [1, 2],
                                                         "datatype": dt, "data": vals}))
    img = base64.b64encode(png_bytes(4, 3)).decode()
    write("infer_json", "bytes_b64", req({"name": "input", "shape": [1], "datatype": "BYTES",
                                          "data": [{"b64": img}]}))
    write("infer_json", "bytes_b64_plain", req({"name": "input", "shape": [2, 1], "datatype": "BYTES",
                                                "data": [img, img]}))
    write("infer_json", "spaced", '{ "inputs" : [ { "name" : "input" , "shape" : [ 1 , 3 ] , '
                                  '"datatype" : "FP32" , "data" : [ [ 1.0e0 , -2E-1 , 3 ] ] } ] }')
    write("infer_json", "escaped_keys", '{"in\\u0070uts":[{"name":"input","shape":[1,2],'
                                        '"datatype":"FP32","data":[1,2]}]}')
    # Near-valid.
    write("infer_json", "bad_short_data", req({"name": "input", "shape": [1, 4], "datatype": "FP32",
                                               "data": [1, 2, 3]}))
    write("infer_json", "bad_ragged", req({"name": "input", "shape": [2, 2], "datatype": "FP32",
                                           "data": [[1, 2], [3]]}))
    write("infer_json", "bad_nan", '{"inputs":[{"name":"input","shape":[1,2],"datatype":"FP32",'
                                   '"data":[NaN,Infinity]}]}')
    write("infer_json", "bad_null", req({"name": "input", "shape": [1, 2], "datatype": "FP32",
                                         "data": [None, "1"]}))
    write("infer_json", "bad_overflow_dims", req({"name": "input", "shape": [2**62, 2**62],
                                                  "datatype": "FP32", "data": [1]}))
    write("infer_json", "bad_two_inputs", json.dumps({"inputs": [
        {"name": "a", "shape": [1], "datatype": "FP32", "data": [1]},
        {"name": "b", "shape": [1], "datatype": "FP32", "data": [1]}]}))
    write("infer_json", "bad_deep", '{"inputs":[{"name":"input","shape":[1],"datatype":"FP32","data":'
          + "[" * 200 + "1" + "]" * 200 + "}]}")
    write("infer_json", "bad_utf8", b'{"inputs":[{"name":"in\xff\xfe","shape":[1],'
                                    b'"datatype":"FP32","data":[1]}]}')
    write("infer_json", "bad_truncated", req({"name": "input", "shape": [1, 6], "datatype": "FP32",
                                              "data": flat})[:-9])
    write("infer_json", "bad_top_array", "[1,2,3]")
    write("infer_json", "bad_fp32_range", req({"name": "input", "shape": [1], "datatype": "FP32",
                                               "data": [1e39]}))
    write("infer_json", "bad_b64", req({"name": "input", "shape": [1], "datatype": "BYTES",
                                        "data": [{"b64": "****"}]}))


def seeds_binary_tensor():
    out_dir("binary_tensor")
    def framed(header, binary):
        h = json.dumps(header).encode()
        return struct.pack("<I", len(h)) + h + binary
    f32 = struct.pack("<6f", 1, 2, 3, 4, 5, 6)
    write("binary_tensor", "fp32", framed({"inputs": [{"name": "input", "shape": [1, 6],
                                          "datatype": "FP32", "parameters": {"binary_data_size": 24}}],
                                          "outputs": [{"name": "logits",
                                                       "parameters": {"binary_data": True}}]}, f32))
    for dt, fmt in [("FP64", "<2d"), ("INT32", "<2i"), ("UINT8", "<2B"), ("INT64", "<2q"),
                    ("FP16", "<2e"), ("UINT16", "<2H")]:
        raw = struct.pack(fmt, 1, 2)
        write("binary_tensor", "dtype_" + dt.lower(), framed(
            {"inputs": [{"name": "input", "shape": [1, 2], "datatype": dt,
                         "parameters": {"binary_data_size": len(raw)}}]}, raw))
    png = png_bytes(3, 2)
    elems = struct.pack("<I", len(png)) + png + struct.pack("<I", 3) + b"abc"
    write("binary_tensor", "bytes_elems", framed({"inputs": [{"name": "input", "shape": [2],
                                                 "datatype": "BYTES",
                                                 "parameters": {"binary_data_size": len(elems)}}]},
                                                 elems))
    js = json.dumps({"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32",
                                 "data": [1, 2]}]}).encode()
    write("binary_tensor", "json_only", struct.pack("<I", 0) + js)
    write("binary_tensor", "json_full_header", struct.pack("<I", len(js)) + js)
    # Near-valid.
    write("binary_tensor", "bad_size_mismatch", framed(
        {"inputs": [{"name": "input", "shape": [1, 6], "datatype": "FP32",
                     "parameters": {"binary_data_size": 20}}]}, f32))
    write("binary_tensor", "bad_header_past_body", struct.pack("<I", len(js) + 1) + js)
    write("binary_tensor", "bad_extra_bytes", struct.pack("<I", len(js)) + js + b"\0\0\0\0")
    write("binary_tensor", "bad_elem_length", framed(
        {"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES",
                     "parameters": {"binary_data_size": 6}}]}, struct.pack("<I", 1000) + b"ab"))
    write("binary_tensor", "bad_both", framed(
        {"inputs": [{"name": "input", "shape": [1, 1], "datatype": "FP32", "data": [1],
                     "parameters": {"binary_data_size": 4}}]}, b"\0\0\0\0"))


# ---- multipart ---------------------------------------------------------------------------------

def seeds_multipart():
    out_dir("multipart")
    png = png_bytes(8, 8)
    def body(boundary, parts, nl=b"\r\n", preamble=b"", close=True):
        b = preamble
        for headers, data in parts:
            b += b"--" + boundary + nl + b"".join(h + nl for h in headers) + nl + data + nl
        if close:
            b += b"--" + boundary + b"--" + nl
        return b
    disp = b'Content-Disposition: form-data; name="data"; filename="3.png"'
    ct = b"Content-Type: image/png"
    write("multipart", "one_png", b"multipart/form-data; boundary=XyZ\n" + body(b"XyZ", [([disp, ct], png)]))
    write("multipart", "two_parts", b'multipart/form-data; boundary="a b:c"\n'
          + body(b"a b:c", [([disp, ct], png), ([b'Content-Disposition: form-data; name="x"'], b"1")]))
    write("multipart", "curl_style", b"multipart/form-data; boundary=------------------------d74496d6\n"
          + body(b"------------------------d74496d6", [([disp, b"Content-Type: application/octet-stream"], png)]))
    write("multipart", "lf_only", b"multipart/form-data; boundary=b\n"
          + body(b"b", [([disp], b"data")], nl=b"\n"))
    write("multipart", "preamble", b"Multipart/Form-Data; charset=utf-8; BOUNDARY=zz\n"
          + body(b"zz", [([disp], b"x")], preamble=b"this is a preamble\r\n"))
    write("multipart", "no_headers", b"multipart/form-data; boundary=b\n" + body(b"b", [([], b"x")]))
    write("multipart", "empty_part", b"multipart/form-data; boundary=b\n" + body(b"b", [([disp], b"")]))
    write("multipart", "five_parts", b"multipart/form-data; boundary=b\n"
          + body(b"b", [([disp], bytes([65 + i])) for i in range(5)]))
    write("multipart", "tight_end", b"multipart/form-data; boundary=b\n--b\r\n\r\nx\r\n--b--")
    write("multipart", "bad_no_boundary", b"multipart/form-data\n--b\r\n\r\nx\r\n--b--\r\n")
    write("multipart", "bad_media_type", b"application/json\n{}")
    write("multipart", "bad_unclosed", b"multipart/form-data; boundary=b\n"
          + body(b"b", [([disp], b"data")], close=False))
    write("multipart", "bad_no_blank_line", b"multipart/form-data; boundary=b\n--b\r\n" + disp + b"\r\n--b--\r\n")
    write("multipart", "bad_no_start", b"multipart/form-data; boundary=b\nhello")
    write("multipart", "bad_long_boundary", b"multipart/form-data; boundary=" + b"x" * 71 + b"\n")
    write("multipart", "bad_quote", b'multipart/form-data; boundary="abc\n--abc\r\n\r\n\r\n--abc--')


# ---- images ------------------------------------------------------------------------------------

def seeds_image():
    out_dir("image")
    # Settings prefix: flags (1 rgb, 2 preprocess, 4 invert, 8 server limit), height-1, width-1.
    settings = [bytes([0, 27, 27]), bytes([3, 31, 31]), bytes([7, 7, 7]), bytes([8, 0, 63])]
    images = {}
    for name, data in small_files("examples/*.png"):
        images[name] = data
    for name, data in small_files("examples/*.jpg"):
        images[name] = data
    images["png_gray_4x3"] = png_bytes(4, 3)
    images["png_rgb_5x2"] = png_bytes(5, 2, gray=False)
    images["pgm_p5"] = b"P5\n# comment\n3 2\n255\n" + bytes(range(6))
    images["ppm_p6_16bit"] = b"P6 2 1 65535\n" + bytes(range(12))
    images["bmp_24"] = bmp_bytes(3, 2)
    # A GIF of 1x1 (the smallest well-formed one).
    images["gif_1x1"] = bytes.fromhex("47494638396101000100800000ffffff00000021f90401000000002c"
                                      "00000000010001000002024401003b")
    images["tga_rgb"] = struct.pack("<BBBHHBHHHHBB", 0, 0, 2, 0, 0, 0, 0, 0, 2, 2, 24, 0) + bytes(12)
    images["hdr"] = b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 2 +X 2\n" + bytes([128, 64, 32, 129] * 4)
    from PIL import Image
    def pil(mode, size, fmt, **kw):
        im = Image.new(mode, size)
        bands = len(im.getbands())
        im.putdata([tuple((x * 53 + i) & 255 for i in range(bands)) if bands > 1 else (x * 53) & 255
                    for x in range(size[0] * size[1])])
        b = io.BytesIO()
        im.save(b, fmt, **kw)
        return b.getvalue()
    images["jpeg_progressive"] = pil("RGB", (17, 9), "JPEG", progressive=True, quality=70)
    images["jpeg_gray"] = pil("L", (9, 9), "JPEG", quality=90)
    images["jpeg_subsampled"] = pil("RGB", (16, 16), "JPEG", subsampling=2, quality=50)
    images["jpeg_cmyk"] = pil("CMYK", (8, 8), "JPEG")
    images["png_palette"] = pil("P", (7, 3), "PNG")
    images["png_rgba"] = pil("RGBA", (4, 4), "PNG")
    images["png_la"] = pil("LA", (3, 3), "PNG")
    images["png_16bit"] = pil("I;16", (3, 2), "PNG")
    images["png_1bit"] = pil("1", (9, 2), "PNG")
    images["gif_palette"] = pil("P", (6, 5), "GIF")
    images["bmp_rgba"] = pil("RGBA", (3, 3), "BMP")
    images["bmp_palette"] = pil("P", (5, 2), "BMP")
    images["tga_rle"] = pil("RGB", (4, 4), "TGA", compression="tga_rle")
    # Decompression bombs and truncations.
    bomb = bytearray(png_bytes(4, 3))
    struct.pack_into(">II", bomb, 16, 100000, 100000)
    images["bad_png_bomb"] = bytes(bomb)
    images["bad_pnm_short"] = b"P5 300 300 255\n" + bytes(10)
    images["bad_png_truncated"] = png_bytes(8, 8)[:40]
    images["bad_jpeg_truncated"] = images.get("examples_5.jpg", b"\xff\xd8")[:200]
    images["bad_garbage"] = b"not an image at all"
    # An empty IDAT chunk before the real one (stb computed NULL + 0 here; libspng decodes it).
    png = png_bytes(4, 3)
    ihdr_end = 8 + 25
    images["png_empty_idat"] = png[:ihdr_end] + struct.pack(">I", 0) + b"IDAT" + struct.pack(
        ">I", zlib.crc32(b"IDAT") & 0xffffffff) + png[ihdr_end:]
    # A PNM header number past INT_MAX, which would wrap stb's int: image.c refuses it first.
    images["bad_pnm_huge_number"] = b"P5 99999999999 2 255\n" + bytes(8)
    # 16-bit PNM only with its own channel count: converting channels as well is the stb 2.27 bug
    # kept under regressions/ (pnm16_*), which must not stop the fuzzer at its first input.
    images["pgm_p5_16bit"] = b"P5 2 2 65535\n" + bytes(range(8))
    own_channels = {"ppm_p6_16bit": bytes([1, 3, 3]), "pgm_p5_16bit": bytes([0, 3, 3])}
    for i, (name, data) in enumerate(sorted(images.items())):
        write("image", name, own_channels.get(name, settings[i % len(settings)]) + data)


def bmp_bytes(w, h):
    row = bytes((x * 40 + c) & 255 for x in range(w) for c in range(3))
    row += b"\0" * (-len(row) % 4)
    pixels = row * h
    header = struct.pack("<2sIHHI", b"BM", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return header + info + pixels


# ---- /shapes queries ---------------------------------------------------------------------------

def seeds_shapes_query():
    out_dir("shapes_query")
    for q in ["1,3,28,28", "1,1,8,8", "16,784", "64,3,28,28", "1,3,30,30", "1,3,224,224",
              "2,2", "1,3,2147483647,2147483647", "1,1,1,1", "4096,1,8,8", "1,2,3,4,5,6,7,8",
              "+1, 3,\t28,28", "0001,3,32,32", "1,", "1,,3", "-1,3,28,28", "2147483648",
              "1,3,28,28,", "x", "1 ,3"]:
        write("shapes_query", q.replace(",", "_").replace(" ", "s").replace("\t", "t") or "empty", q)


def main():
    try:
        import PIL  # noqa: F401  (checked first: seeds_image would otherwise lose its files)
    except ImportError:
        sys.exit("make_seeds.py: needs Pillow (Debian: apt-get install python3-pil; "
                 "run with /usr/bin/python3)")
    seeds_safetensors()
    seeds_model_json()
    seeds_infer_json()
    seeds_binary_tensor()
    seeds_multipart()
    seeds_image()
    seeds_shapes_query()
    json_dict(os.path.join(HERE, "safetensors.dict"),
              ["__metadata__", "dtype", "shape", "data_offsets", "format", "pt", "BOOL", "U8", "I8",
               "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64", "F8_E4M3",
               "{", "}", "[", "]", ":", ",", "\"", "\\u0000", "-1", "18446744073709551615"])
    json_dict(os.path.join(HERE, "model_json.dict"),
              ["name", "description", "weights", "seed", "input", "output", "max_batch_size",
               "dynamic_batching", "preprocess", "precision", "layers", "shape", "labels",
               "max_queue_delay_us", "color", "resize", "scale", "mean", "std", "invert", "op",
               "in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
               "groups", "bias", "padding_mode", "num_features", "eps", "momentum", "affine",
               "track_running_stats", "in_features", "out_features", "start_dim", "end_dim",
               "inplace", "negative_slope", "approximate", "dim", "ceil_mode", "return_indices",
               "count_include_pad", "divisor_override", "output_size", "p", "Conv2d",
               "BatchNorm2d", "Linear", "Flatten", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU",
               "Softmax", "LogSoftmax", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "Dropout",
               "Dropout2d", "Identity", "id", "inputs", "keepdim", "mode", "row", "batch",
               "ReLU6", "Hardswish", "Hardsigmoid", "SiLU", "StochasticDepth", "Add", "Mul", "Cat",
               "Mean", "same", "valid", "zeros", "reflect", "none", "tanh",
               "gray", "rgb", "f32", "bf16", "true", "false", "null", "-1", "1e-05",
               "2147483648", "9223372036854775807", "1e400"])
    infer_words = ["inputs", "outputs", "name", "shape", "datatype", "data", "parameters", "id",
                   "binary_data_size", "binary_data", "binary_data_output", "layer_shapes", "b64",
                   "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                   "FP16", "FP32", "FP64", "BYTES", "true", "false", "null", "NaN", "Infinity",
                   "-0", "1e-45", "3.5e38", "1e39", "18446744073709551616", "\\u00e9", "\\ud800"]
    json_dict(os.path.join(HERE, "infer_json.dict"), infer_words)


if __name__ == "__main__":
    main()
