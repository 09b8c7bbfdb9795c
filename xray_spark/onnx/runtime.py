"""The ONNX runtime: a model from another toolkit (PyTorch, Keras, any ONNX exporter) scored by ONNX Runtime.

A model folder holds ``model.onnx`` and ``model.json``, whose ``onnx`` section says what the
graph expects and answers (:class:`OnnxCard`): the input's name, layout (NHWC or NCHW),
channels (1, or 3 with the film repeated) and element type, how pixels are scaled (``none``:
the film's 0-255 as they are; ``range``: 0-255 mapped linearly onto ``[low, high]``, as
torchxrayvision's [-1024, 1024]; ``mean_std``: scaled to [0, 1], less ``mean``, over ``std``
per channel, as ImageNet's), the output's name, the name of each of its columns in order,
which of our findings each column is (columns that are none of ours are ignored), and
whether the columns are ``probabilities`` or ``logits`` (a sigmoid is applied). The card's
``labels`` are the mapped findings in our order, so scoring, calibration, evaluation and
delivery see the model as one of ours.

Nothing in an ONNX file runs code: it is a protobuf graph of operators that ONNX Runtime
executes with its own kernels. What could bring code in is refused before a session opens
(:func:`check_onnx_file`): an operator of any domain but the standard ones (a custom operator
needs a shared library registered with the session; none ever is), weights in external files
outside the model's folder, a file over :data:`MAX_BYTES`, a graph the ONNX checker rejects.

Heatmaps are class activation maps where the graph ends in a global pooling and one dense
layer (:mod:`xray_spark.onnx.cam`: found by registration, or named in the card's ``cam``), at
the cost of one forward pass; otherwise occlusion (:func:`occlusion`): the film greyed out
patch by patch, and how much the finding's logit falls, which needs nothing of the graph's
inside and costs 65 forward passes a film.

:func:`model_folder` makes a model folder from an ONNX file and a card written by hand
(YAML), which ``register_model --model FILE.onnx --card CARD.yaml`` then admits to the lake.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from typing import Any

import numpy as np

from xray_spark.errors import ModelRefused, UsageError

log = logging.getLogger("xray_spark")

ONNX_SUFFIX = ".onnx"
#: The largest ONNX file (with its external weights) opened: a DenseNet-121 is about 30 MB, a ViT-L 1.2 GB.
MAX_BYTES = 2 << 30


def standard_domains() -> set[str]:
    """The operator domains a graph may use: those ONNX itself defines operators in (the default one, ``ai.onnx``,
    ``ai.onnx.ml`` and its preview domains, by the schemas of the onnx package), each run by ONNX Runtime's own
    kernels."""
    import onnx.defs

    return {"ai.onnx"} | {schema.domain for schema in onnx.defs.get_all_schemas_with_history()}


LAYOUTS, SCALINGS, ACTIVATIONS = ("NHWC", "NCHW"), ("none", "range", "mean_std"), ("probabilities", "logits")


@dataclasses.dataclass(frozen=True)
class OnnxCard:
    """The ``onnx`` section of a model card: how films go in and which outputs are which findings."""

    input: str
    output: str
    outputs: list[str]
    findings: dict[str, str]  # output column name -> our finding
    layout: str = "NHWC"
    channels: int = 1
    dtype: str = "float32"
    scaling: str = "none"
    low: float = 0.0
    high: float = 255.0
    mean: list[float] = dataclasses.field(default_factory=lambda: [0.0])
    std: list[float] = dataclasses.field(default_factory=lambda: [1.0])
    activation: str = "probabilities"
    cam: Any = "auto"  # auto, none, or {feature_map, weights[, transposed]}; a model folder holds what was found

    @classmethod
    def parse(cls, section: Any, where: str) -> OnnxCard:
        """The section checked, or one line saying what is wrong with it."""
        if not isinstance(section, dict):
            raise UsageError(f"{where}: the card has no 'onnx' section (input, output, outputs, findings, ...)")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise UsageError(f"{where}: onnx.{unknown[0]} is not a card key ({', '.join(sorted(known))})")
        try:
            card = cls(**section)
        except TypeError as exc:
            raise UsageError(f"{where}: the onnx section lacks {str(exc).split(': ')[-1]}") from None
        card.check(where)
        return card

    def check(self, where: str) -> None:
        from xray_spark.labels import FINDINGS

        for key, value, allowed in (
            ("layout", self.layout, LAYOUTS),
            ("scaling", self.scaling, SCALINGS),
            ("activation", self.activation, ACTIVATIONS),
            ("dtype", self.dtype, ("float32", "uint8")),
        ):
            if value not in allowed:
                raise UsageError(f"{where}: onnx.{key} is {value!r}, not one of {', '.join(allowed)}")
        if not (self.cam in ("auto", "none", None) or isinstance(self.cam, dict)):
            raise UsageError(f"{where}: onnx.cam is {self.cam!r}: auto, none, or feature_map and weights")
        if self.channels not in (1, 3):
            raise UsageError(f"{where}: onnx.channels is {self.channels!r}: 1 (gray) or 3 (the film repeated)")
        if self.scaling == "mean_std" and not (len(self.mean) == len(self.std) in (1, self.channels)):
            raise UsageError(f"{where}: onnx.mean and onnx.std need 1 or {self.channels} values each")
        strangers = sorted(set(self.findings) - set(self.outputs))
        ours = [f for f in self.findings.values() if f not in FINDINGS]
        if strangers or ours or not self.findings or len(set(self.findings.values())) != len(self.findings):
            what = (
                f"names no column of onnx.outputs: {strangers}"
                if strangers
                else f"maps onto unknown findings {ours}"
                if ours
                else "maps no column, or two columns onto one finding"
            )
            raise UsageError(f"{where}: onnx.findings {what} (our findings: {', '.join(FINDINGS)})")

    @property
    def labels(self) -> list[str]:
        """Our findings the model gives, in our order."""
        from xray_spark.labels import FINDINGS

        mapped = set(self.findings.values())
        return [f for f in FINDINGS if f in mapped]

    @property
    def columns(self) -> list[int]:
        """The output columns of :attr:`labels`, in that order."""
        by_finding = {finding: name for name, finding in self.findings.items()}
        return [self.outputs.index(by_finding[label]) for label in self.labels]


def _external(path: str, model: Any) -> dict[str, str]:
    """The files of the graph's external weights, as written in the graph -> where they are (each inside the model's
    folder, or refused)."""
    folder = os.path.dirname(os.path.abspath(path))
    found: dict[str, str] = {}
    for tensor in model.graph.initializer:
        if tensor.data_location != 1:  # 1: EXTERNAL
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        where = os.path.realpath(os.path.join(folder, location))
        if os.path.isabs(location) or os.path.commonpath([where, os.path.realpath(folder)]) != os.path.realpath(folder):
            raise ModelRefused(
                f"model file {path} keeps weights of {tensor.name} in {location!r}, outside its folder: refused"
            )
        if not os.path.isfile(where):
            raise ModelRefused(f"model file {path}: the weights file {location!r} of {tensor.name} is missing")
        found[location] = where
    return found


def check_onnx_file(path: str) -> None:
    """Refuse, in one line, an ONNX file that could bring code in or that ONNX's checker rejects (see the module)."""
    import onnx

    if os.path.getsize(path) > MAX_BYTES:
        raise ModelRefused(f"model file {path} is {os.path.getsize(path):,} bytes, over the {MAX_BYTES:,} opened")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # a damaged or foreign file: onnx raises DecodeError and others
        raise ModelRefused(f"model file {path} is not a readable ONNX model ({type(exc).__name__})") from None
    # The domains of the operators that run (a domain only declared in opset_import runs nothing; the quantizer
    # declares several), in the graph, its subgraphs and its local functions.
    domains = {n.domain for n in _nodes(model.graph)} | {n.domain for f in model.functions for n in f.node}
    local = {f.domain for f in model.functions}  # a call of the model's own function, whose body is checked here
    custom = sorted(domains - standard_domains() - local)
    if custom:
        raise ModelRefused(
            f"model file {path} uses operators of the custom domain {custom[0]!r}: only ONNX's standard operators "
            "run here (a custom operator needs code loaded into the runtime)"
        )
    if os.path.getsize(path) + sum(os.path.getsize(w) for w in set(_external(path, model).values())) > MAX_BYTES:
        raise ModelRefused(f"model file {path} with its external weights is over the {MAX_BYTES:,} bytes opened")
    try:
        onnx.checker.check_model(path)
    except Exception as exc:  # onnx.checker.ValidationError and the like
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelRefused(f"model file {path} fails ONNX's checker: {first}") from None


def _nodes(graph: Any):
    """Every node of the graph and of its subgraphs (an If's branches, a Loop's body)."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for sub in [attribute.g, *attribute.graphs] if attribute.type in (5, 10) else []:
                yield from _nodes(sub)


def read_onnx_card(model_file: str) -> OnnxCard:
    """The ``onnx`` section of the card beside ``model_file``."""
    meta_path = os.path.join(os.path.dirname(os.path.abspath(model_file)), "model.json")
    try:
        with open(meta_path, encoding="utf-8") as fh:
            section = json.load(fh).get("onnx")
    except (OSError, ValueError) as exc:
        raise UsageError(f"model description {meta_path} is unreadable ({exc})") from None
    return OnnxCard.parse(section, meta_path)


class OnnxRuntime:
    """An ONNX model behind the runtime protocol (:class:`~xray_spark.model_runtime.ModelRuntime`): films prepared
    as its card says, its outputs mapped onto our findings."""

    def __init__(self, session: Any, card: OnnxCard, model_file: str, cam_weights: np.ndarray | None = None) -> None:
        self.session, self.card, self.model_file = session, card, model_file
        self._size = self._input_size()
        self._columns = card.columns
        self._cam_weights = cam_weights  # channels x output columns, where heatmaps are class activation maps

    @classmethod
    def open(cls, model_file: str) -> OnnxRuntime:
        return cls.build(model_file, read_onnx_card(model_file))

    @classmethod
    def build(cls, model_file: str, card: OnnxCard) -> OnnxRuntime:
        """A session for ``model_file`` as ``card`` says; where the card has a ``cam`` section, the graph also returns
        its feature map, and the dense layer's weights are read from the file."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = int(os.environ.get("XRAY_SPARK_ONNX_THREADS", "1"))  # one per Spark task
        if not isinstance(card.cam, dict):
            return cls(ort.InferenceSession(model_file, options, providers=_providers(ort)), card, model_file)
        import onnx

        from xray_spark.onnx.cam import cam_weights, with_feature_map

        graph = onnx.load(model_file)
        session = ort.InferenceSession(with_feature_map(graph, card.cam), options, providers=_providers(ort))
        return cls(session, card, model_file, cam_weights(graph, card.cam))

    def _input_size(self) -> int:
        """The film side the graph takes, checked against the card's input name, layout, channels and outputs."""
        card, where = self.card, f"model file {self.model_file}"
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        if card.input not in inputs or card.output not in outputs:
            missing = f"input {card.input!r}" if card.input not in inputs else f"output {card.output!r}"
            raise ModelRefused(
                f"{where} has no {missing} its card names (inputs {sorted(inputs)}, outputs {sorted(outputs)})"
            )
        shape = list(inputs[card.input].shape)
        spatial = shape[1:3] if card.layout == "NHWC" else shape[2:4]
        channels = shape[3] if card.layout == "NHWC" else shape[1]
        square = len(shape) == 4 and all(isinstance(d, int) for d in spatial) and spatial[0] == spatial[1]
        if not square or channels != card.channels:
            raise ModelRefused(
                f"{where} takes {shape}; its card says {card.layout} with {card.channels} channel(s) of square films"
            )
        width = list(outputs[card.output].shape)[-1]
        if isinstance(width, int) and width != len(card.outputs):
            raise ModelRefused(f"{where} gives {width} columns in {card.output!r}; its card names {len(card.outputs)}")
        return int(spatial[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self._size, self._size, 1)

    @property
    def n_outputs(self) -> int:
        return len(self._columns)

    def feed(self, pixels: np.ndarray) -> np.ndarray:
        """``(n, size, size, 1)`` uint8 films as the graph takes them."""
        card = self.card
        x = np.asarray(pixels)
        if card.dtype == "uint8":
            x = x.astype(np.uint8)
        else:
            x = x.astype(np.float32)
            if card.scaling == "range":
                x = card.low + x * np.float32((card.high - card.low) / 255.0)
            elif card.scaling == "mean_std":
                x = x / np.float32(255.0)
        if card.channels == 3:
            x = np.repeat(x, 3, axis=-1)
        if card.scaling == "mean_std" and card.dtype == "float32":
            x = (x - np.asarray(card.mean, np.float32)) / np.asarray(card.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if card.layout == "NCHW" else x)

    def scores(self, pixels: np.ndarray) -> np.ndarray:
        """Our findings' outputs as the graph gives them (logits or probabilities), in our order."""
        (out,) = self.session.run([self.card.output], {self.card.input: self.feed(pixels)})
        return np.asarray(out, dtype=np.float32)[:, self._columns]

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        mine = self.scores(pixels)
        return 1.0 / (1.0 + np.exp(-mine)) if self.card.activation == "logits" else mine

    def explain(self, pixels: np.ndarray, findings: np.ndarray) -> np.ndarray:
        """Heatmaps in [0, 1], ``(n, h, w)``: class activation maps at the feature map's size where the card has a
        ``cam`` section (:func:`xray_spark.onnx.cam.class_maps`), else by occlusion, ``OCCLUSION_GRID`` a side:
        how much the finding's logit falls when a patch of the film is greyed out (:func:`occlusion`)."""
        if self._cam_weights is None:
            return occlusion(self._logits, pixels, findings)
        from xray_spark.onnx.cam import class_maps

        _, features = self.session.run(
            [self.card.output, self.card.cam["feature_map"]], {self.card.input: self.feed(pixels)}
        )
        columns = np.asarray(self._columns)[np.asarray(findings, dtype=int)]
        return class_maps(np.asarray(features), self._cam_weights, columns, self.card.cam.get("pools"))

    def _logits(self, pixels: np.ndarray) -> np.ndarray:
        mine = self.scores(pixels)
        if self.card.activation == "logits":
            return mine
        p = np.clip(mine.astype(np.float64), 1e-7, 1 - 1e-7)
        return np.log(p / (1 - p)).astype(np.float32)


#: Occlusion heatmaps are this many cells a side; each cell's patch is two cells wide, centred on it.
OCCLUSION_GRID = 8
#: Films per ONNX Runtime call while occluding (each film makes OCCLUSION_GRID**2 occluded copies).
OCCLUSION_BATCH = 256


def occlusion(logits, pixels: np.ndarray, findings: np.ndarray, grid: int = OCCLUSION_GRID) -> np.ndarray:
    """Heatmaps by occlusion (Zeiler and Fergus, ECCV 2014), for a model whose inside is not known: for each cell of
    a ``grid`` x ``grid`` division of the film, a patch two cells wide centred on it is set to the film's mean grey,
    and the cell's value is how much the finding's logit fell (never below 0); each map is scaled to its maximum.
    It costs ``grid**2 + 1`` forward passes per film (65 at the default 8), against one forward and one backward
    pass for Grad-CAM: for the top films of a night, not a whole archive."""
    n, size = len(pixels), pixels.shape[1]
    edges = np.linspace(0, size, grid + 1).round().astype(int)
    cell = size / grid
    base = logits(pixels)[np.arange(n), findings]
    out = np.zeros((n, grid, grid), dtype=np.float32)
    for i in range(n):
        film = pixels[i]
        grey = np.uint8(round(float(film.mean())))
        copies = np.repeat(film[None], grid * grid, axis=0)
        for k in range(grid * grid):
            r, c = divmod(k, grid)
            centre_r, centre_c = (edges[r] + edges[r + 1]) / 2, (edges[c] + edges[c + 1]) / 2
            r0, r1 = int(max(0, centre_r - cell)), int(min(size, centre_r + cell))
            c0, c1 = int(max(0, centre_c - cell)), int(min(size, centre_c + cell))
            copies[k, r0:r1, c0:c1] = grey
        fallen = np.concatenate(
            [logits(copies[j : j + OCCLUSION_BATCH])[:, findings[i]] for j in range(0, len(copies), OCCLUSION_BATCH)]
        )
        drop = np.maximum(base[i] - fallen, 0).reshape(grid, grid)
        out[i] = drop / drop.max() if drop.max() > 0 else drop
    return out


def _providers(ort: Any) -> list[str]:
    """CUDA where ``onnxruntime-gpu`` is installed and sees a GPU, then the CPU."""
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def resolve_cam(model: Any, cam: Any, where: str, n_outputs: int) -> dict | None:
    """The card's ``cam`` as a model folder keeps it: what ``auto`` finds in the graph (None: occlusion, also where
    the dense layer found has another width than the card's outputs), None for ``none``, a hand-named section
    checked (refused where its weights' width is not the outputs')."""
    from xray_spark.onnx.cam import cam_weights, check_cam, find_cam

    found = check_cam(model, cam, where) if isinstance(cam, dict) else find_cam(model) if cam == "auto" else None
    width = cam_weights(model, found).shape[1] if found else n_outputs
    if width != n_outputs and isinstance(cam, dict):
        raise ModelRefused(f"{where}: onnx.cam.weights give {width} classes; onnx.outputs names {n_outputs}")
    return found if width == n_outputs else None


def open_onnx(model_file: str) -> OnnxRuntime:
    return OnnxRuntime.open(model_file)


#: What a card may carry beside its version and onnx section: a model exported from this lake keeps how its
#: thresholds were chosen, its validation call rates (the monitor's expectations) and the digests of the patients
#: it was trained on (the challenge refuses to measure it on them).
CARD_KEYS = (
    "thresholds",
    "threshold_rule",
    "calibration",
    "operating_points",
    "training_patients",
    "dataset",
    "description",
)


def model_folder(model_file: str, card_file: str, out_dir: str) -> str:
    """A model folder (``model.onnx`` and ``model.json``) in ``out_dir`` from an ONNX file and a card in YAML: its
    ``version``, ``onnx`` section and, optionally, the :data:`CARD_KEYS`."""
    import yaml

    from xray_spark.lake import write_json_atomic

    try:
        with open(card_file, encoding="utf-8") as fh:
            given = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"model card {card_file} is unreadable ({exc})") from None
    if not isinstance(given, dict) or not str(given.get("version") or ""):
        raise UsageError(f"model card {card_file} needs a version and an onnx section")
    onnx_card = OnnxCard.parse(given.get("onnx"), card_file)
    check_onnx_file(model_file)
    import onnx

    asked = onnx_card.cam
    found = resolve_cam(onnx.load(model_file), asked, card_file, len(onnx_card.outputs))
    onnx_card = dataclasses.replace(onnx_card, cam=found)
    runtime = OnnxRuntime.build(model_file, onnx_card)  # the graph checked against the card
    size = runtime.input_shape[0]
    if onnx_card.cam:
        try:
            runtime.explain(np.full((1, size, size, 1), 128, np.uint8), np.zeros(1, int))
        except Exception as exc:  # the map and weights do not fit together, or not the card's output columns
            if isinstance(asked, dict):
                raise ModelRefused(f"model file {model_file}: onnx.cam gives no heatmap ({exc})") from None
            onnx_card = dataclasses.replace(onnx_card, cam=None)  # what auto found is not the classifier: occlusion
    if onnx_card.cam:
        log.info("heatmaps: class activation maps of %r, weighted by %r", found["feature_map"], found["weights"])
    else:
        why = "the card says cam: none" if asked in ("none", None) else "no global pooling then dense layer found"
        log.info("heatmaps: by occlusion, 65 forward passes a film (%s)", why)

    os.makedirs(out_dir, exist_ok=True)
    shutil.copyfile(model_file, os.path.join(out_dir, "model" + ONNX_SUFFIX))
    for location, where in _external(model_file, onnx.load(model_file, load_external_data=False)).items():
        os.makedirs(os.path.dirname(os.path.join(out_dir, location)), exist_ok=True)
        shutil.copyfile(where, os.path.join(out_dir, location))
    kept = {k: given[k] for k in CARD_KEYS if k in given}
    if kept.get("thresholds") and not kept.get("threshold_rule"):
        kept["threshold_rule"] = "given by the model's card at registration"
    meta = {
        "version": str(given["version"]),
        "model": "external",
        "model_file": "model" + ONNX_SUFFIX,
        "labels": onnx_card.labels,
        "input": {"size": size},
        "onnx": dataclasses.asdict(onnx_card),
        **kept,
    }
    write_json_atomic(os.path.join(out_dir, "model.json"), meta)
    return out_dir
