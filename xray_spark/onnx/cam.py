"""Class activation maps from an ONNX graph: where a model that pools its last feature map and then applies one
dense layer looked (Zhou et al., CVPR 2016), read from the graph itself.

A DenseNet (torchxrayvision's, CheXNet's, the zoo's) ends in a feature map ``F`` (channels ``k``),
a global average pooling, and one dense layer ``W`` (``k`` x classes). A finding's map is then
``relu(sum_k W[k, c] * F[k, y, x])``: one forward pass that also returns ``F``, and a product with
the weights already in the file. A model that concatenates an average and a maximum pooling of the
same map (our small_cnn) gets, besides the average's map, each channel's maximum weighted at the
place where that channel peaks: the logit split exactly among the map's positions.

The card's ``onnx.cam`` says where the map comes from: ``auto`` (the default: :func:`find_cam`
looks for global pooling then one dense layer, through the reshapes, dropouts and quantize steps
between), ``none`` (heatmaps by occlusion), or ``{feature_map: TENSOR, weights: INITIALIZER}``
named by hand, with ``transposed: true`` for weights stored classes-first (PyTorch's Linear). What
registration found is written into the model's card.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Operators between a pooling and the dense layer that change no value (or only its shape or precision).
PASS_THROUGH = {"Squeeze", "Reshape", "Flatten", "Identity", "Dropout", "QuantizeLinear", "DequantizeLinear", "Cast"}
#: Global poolings of a feature map to one value a channel.
POOLS = {"GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax"}
DENSE = {"MatMul", "Gemm"}
#: Of those, the ones that keep a feature map's shape: a quantized graph's map is read before its quantize steps.
SAME_SHAPE = {"Identity", "QuantizeLinear", "DequantizeLinear", "Cast"}


class _Graph:
    """The graph's nodes by the tensors they make, and its initializers by name."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.maker = {out: node for node in model.graph.node for out in node.output}
        self.initializers = {t.name: t for t in model.graph.initializer}

    def source(self, tensor: str, through: set[str] = PASS_THROUGH) -> tuple[str, Any]:
        """The tensor behind ``tensor`` once the value-preserving steps are passed, and the node that makes it."""
        node = self.maker.get(tensor)
        while node is not None and node.op_type in through:
            tensor = node.input[0]
            node = self.maker.get(tensor)
        return tensor, node

    def pooled_map(self, tensor: str) -> tuple[str, list[str]] | None:
        """The feature map that ``tensor`` is a global pooling of (or a concatenation of poolings of), and each
        pooling's kind (``average`` or ``max``) in order; None for anything else."""
        _, node = self.source(tensor)
        parts = list(node.input) if node is not None and node.op_type == "Concat" else [tensor]
        maps, pools = set(), []
        for part in parts:
            _, pool = self.source(part)
            if pool is None or pool.op_type not in POOLS or not self.spatial(pool):
                return None
            maps.add(self.source(pool.input[0], SAME_SHAPE)[0])
            pools.append("max" if "Max" in pool.op_type else "average")
        return (maps.pop(), pools) if len(maps) == 1 else None

    def spatial(self, pool: Any) -> bool:
        """Whether a pooling reduces the rows and columns only (a ReduceMean over the channels too is no pooling)."""
        if pool.op_type.startswith("Global"):
            return True
        from onnx import numpy_helper

        axes = next((list(a.ints) for a in pool.attribute if a.name == "axes"), None)
        if axes is None and len(pool.input) > 1 and pool.input[1] in self.initializers:
            axes = numpy_helper.to_array(self.initializers[pool.input[1]]).tolist()
        return sorted(axes or []) in ([1, 2], [2, 3])

    def weights(self, name: str) -> np.ndarray | None:
        """The initializer ``name`` as an array, or the float weights a DequantizeLinear makes of int8 ones."""
        from onnx import numpy_helper

        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name]).astype(np.float32)
        node = self.maker.get(name)
        if node is None or node.op_type != "DequantizeLinear" or node.input[0] not in self.initializers:
            return None
        q, scale = numpy_helper.to_array(self.initializers[node.input[0]]), self.weights(node.input[1])
        zero = self.weights(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(1, np.float32)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if scale is None or zero is None:
            return None
        shape = [1] * q.ndim
        if scale.size > 1:
            shape[axis] = -1
        return (q.astype(np.float32) - zero.reshape(shape)) * scale.reshape(shape)

    def transposed(self, weights: str) -> bool:
        """Whether the dense layer that reads ``weights`` holds them classes-first (a Gemm with ``transB``)."""
        for node in self.model.graph.node:
            if node.op_type == "Gemm" and len(node.input) > 1 and self.source(node.input[1])[0] == weights:
                return any(a.name == "transB" and a.i == 1 for a in node.attribute)
        return False


def find_cam(model: Any) -> dict | None:
    """Where the card's ``cam: auto`` finds its map: the feature map and weights of the last dense layer that reads a
    global pooling, or None when the graph has none (then heatmaps come by occlusion)."""
    graph = _Graph(model)
    for node in reversed(model.graph.node):
        if node.op_type not in DENSE or len(node.input) < 2:
            continue
        pooled = graph.pooled_map(node.input[0])
        weights = node.input[1] if graph.weights(node.input[1]) is not None else None
        if pooled and weights:
            transposed = node.op_type == "Gemm" and any(a.name == "transB" and a.i == 1 for a in node.attribute)
            return {"feature_map": pooled[0], "weights": weights, "transposed": transposed, "pools": pooled[1]}
    return None


def check_cam(model: Any, cam: dict, where: str) -> dict:
    """A hand-named ``cam`` section checked against the graph: the map is a tensor a node makes, the weights a
    (dequantized) initializer of two dimensions; ``transposed`` read from the graph where not given."""
    from xray_spark.errors import ModelRefused

    graph = _Graph(model)
    unknown = sorted(set(cam) - {"feature_map", "weights", "transposed", "pools"})
    if unknown or not {"feature_map", "weights"} <= set(cam):
        raise ModelRefused(f"{where}: onnx.cam is auto, none, or feature_map and weights (and transposed, pools)")
    if not set(cam.get("pools") or []) <= {"average", "max"}:
        raise ModelRefused(f"{where}: onnx.cam.pools lists average or max for each pooling, not {cam['pools']!r}")
    if cam["feature_map"] not in graph.maker:
        raise ModelRefused(f"{where}: onnx.cam.feature_map {cam['feature_map']!r} is no tensor of the graph")
    weights = graph.weights(cam["weights"])
    if weights is None or weights.ndim != 2:
        raise ModelRefused(f"{where}: onnx.cam.weights {cam['weights']!r} is no two-dimensional weight of the graph")
    transposed = cam.get("transposed")
    return {**cam, "transposed": graph.transposed(cam["weights"]) if transposed is None else bool(transposed)}


def cam_weights(model: Any, cam: dict) -> np.ndarray:
    """The dense layer's weights, channels x classes."""
    weights = _Graph(model).weights(cam["weights"])
    if weights is None:
        raise ValueError(f"the graph has no weights {cam['weights']!r}")
    return weights.T if cam.get("transposed") else weights


def with_feature_map(model: Any, cam: dict) -> bytes:
    """The graph, serialized, with its feature map as one more output (ONNX Runtime returns only graph outputs)."""
    from onnx import helper

    copy = type(model)()
    copy.CopyFrom(model)
    if cam["feature_map"] not in {o.name for o in copy.graph.output}:
        copy.graph.output.append(helper.make_empty_tensor_value_info(cam["feature_map"]))
    return copy.SerializeToString()


def class_maps(
    features: np.ndarray, weights: np.ndarray, columns: np.ndarray, pools: list[str] | None = None
) -> np.ndarray:
    """Heatmaps in [0, 1], ``(n, h, w)``: what each position of film ``i``'s feature map adds to the logit of
    output ``columns[i]`` (never below 0), scaled to its maximum. ``features`` is ``(n, k, h, w)`` or ``(n, h, w,
    k)``, told apart by ``k``; the weights' channels are ``k`` or a multiple of it, one block per pooling
    concatenated (``pools``: ``average`` or ``max`` each; all average when not given). An average pooling's block
    adds ``w[k] * F[k, y, x] / (h * w)`` at every position (the class activation map), a maximum pooling's adds
    ``w[k] * max F[k]`` where channel ``k`` peaks: together, exactly the logit less its bias."""
    total = weights.shape[0]
    fits = [(features.shape[axis], axis) for axis in (1, 3) if total % features.shape[axis] == 0]
    if features.ndim != 4 or not fits:
        raise ValueError(f"a feature map {features.shape} does not match a dense layer of {total} inputs")
    k, axis = max(fits)  # the channels: far more of them than rows or columns where both fit
    blocks = weights.reshape(total // k, k, -1)  # (pools, k, classes)
    kinds = list(pools) if pools else ["average"] * len(blocks)  # a card written before pools were recorded
    if len(kinds) != len(blocks):
        raise ValueError(f"{len(kinds)} pooling kinds for a dense layer of {len(blocks)} blocks of {k} channels")
    maps = (np.moveaxis(features, 1, -1) if axis == 1 else features).astype(np.float32)  # (n, h, w, k)
    n, h, w = maps.shape[:3]
    flat = maps.reshape(n, h * w, k)
    cams = np.zeros((n, h * w), np.float32)
    for kind, block in zip(kinds, blocks, strict=True):
        chosen = block[:, columns].T  # (n, k)
        if kind == "max":
            peaks = flat.argmax(axis=1)  # (n, k): where each channel's maximum is
            np.add.at(cams, (np.arange(n)[:, None], peaks), flat.max(axis=1) * chosen)
        else:
            cams += np.einsum("npk,nk->np", flat, chosen) / (h * w)
    cams = np.maximum(cams.reshape(n, h, w), 0)
    peak = cams.reshape(len(cams), -1).max(axis=1) if len(cams) else np.zeros(0)
    return (cams / np.where(peak > 0, peak, 1.0)[:, None, None]).astype(np.float32)
