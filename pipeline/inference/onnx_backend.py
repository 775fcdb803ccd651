"""ONNX Runtime backend for the BiLSTM + attention classifier (``jpipe export onnx``, ``--backend onnx``).

``export_onnx`` writes ``model.onnx`` next to ``model.safetensors``: the graph is built
node by node from the trained weights (no tracing), so it reproduces the packed
forward of ``AttentionClassifier`` exactly:

    token_ids (B, T), lengths (B,)
        --Gather--> (B, T, E) --ONNX LSTM/GRU with sequence_lens--> (B, T, 2H)
        --merge--> (B, T, D) --attention scores, -inf where position >= length, Softmax--> weights (B, T)
        --weights @ states--> (B, D) --Gemm--> logits (B, C) --Softmax--> probabilities (B, C)

The ONNX recurrent ops take ``sequence_lens``: the backward direction starts at each
row's last real token and padded steps are never read, as with a packed sequence in
torch. Batch and sequence axes are dynamic. The export is checked against the torch
model on random batches before it is renamed into place, and ``model.onnx`` records the
SHA-256 of the weights it came from: a model retrained since the export is refused.

``OnnxModel`` runs the graph with onnxruntime on the CPU. onnx and onnxruntime are an
optional extra (``pip install 'jpipe[onnx]'``) and are imported only here, lazily.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, ModelError

logger = logging.getLogger(__name__)

ONNX_NAME = "model.onnx"
OPSET = 17
WEIGHTS_KEY = "jpipe_weights_sha256"
CHECK_TOLERANCE = 1e-4  # largest probability / attention difference to torch accepted at export
SUB_BATCH = 16  # rows per onnxruntime call: rows of similar length, little padding (see OnnxModel.run)
EXPORT_HINT = "Export it with `jpipe export onnx` (once per trained model)."
# torch gate order -> ONNX gate order (rows of the stacked weight matrices)
GATE_ORDER = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2)}  # LSTM i,f,g,o -> i,o,f,c; GRU r,z,n -> z,r,h


def _import(name: str):
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise ConfigError(
            "E110", f"The ONNX backend needs the {name} package, which is not installed.", hint="Install it: pip install 'jpipe[onnx]'"
        ) from None


def weights_digest(directory: str | os.PathLike) -> str:
    """SHA-256 of the model directory's ``model.safetensors`` (what a ``model.onnx`` was exported from)."""
    digest = hashlib.sha256()
    with open(Path(directory) / "model.safetensors", "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- graph building
class _Graph:
    """Collects ONNX nodes and initializers under unique names."""

    def __init__(self) -> None:
        self.onnx = _import("onnx")
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.count = 0

    def const(self, name: str, array) -> str:
        import numpy as np

        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(array), name=name))
        return name

    def op(self, op_type: str, inputs: list[str], *, outputs: int = 1, **attributes) -> Any:
        self.count += 1
        names = [f"{op_type.lower()}_{self.count}_{i}" for i in range(outputs)]
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, names, **attributes))
        return names[0] if outputs == 1 else names


def _rnn_weights(state: dict, *, layer: int, cell: str):
    """ONNX W (2, G*H, in), R (2, G*H, H), B (2, 2*G*H) of one layer from torch's weights (both directions)."""
    import numpy as np

    order = GATE_ORDER[cell]

    def gates(array):
        return np.concatenate([part for part in (np.split(array, len(order), axis=0)[i] for i in order)], axis=0)

    w, r, b = [], [], []
    for suffix in (f"_l{layer}", f"_l{layer}_reverse"):
        w.append(gates(state[f"rnn.weight_ih{suffix}"]))
        r.append(gates(state[f"rnn.weight_hh{suffix}"]))
        b.append(np.concatenate([gates(state[f"rnn.bias_ih{suffix}"]), gates(state[f"rnn.bias_hh{suffix}"])]))
    return np.stack(w), np.stack(r), np.stack(b)


def _recurrent(g: _Graph, state: dict, args: dict, *, inputs: str, lengths32: str) -> str:
    """(T, B, E) -> (B, T, 2H): the stacked bidirectional LSTM/GRU layers with sequence_lens."""
    cell, hidden = args.get("cell", "lstm"), int(args.get("hidden_size", 128))
    flat = g.const("shape_flat", _int64([0, 0, -1]))
    sequence = inputs
    for layer in range(int(args.get("num_layers", 1))):
        w, r, b = _rnn_weights(state, layer=layer, cell=cell)
        weights = [g.const(f"rnn_{name}_{layer}", value) for name, value in (("W", w), ("R", r), ("B", b))]
        extra = {"linear_before_reset": 1} if cell == "gru" else {}  # torch's GRU applies r after the hidden linear
        outputs = g.op(cell.upper(), [sequence, *weights, lengths32], outputs=1, hidden_size=hidden, direction="bidirectional", **extra)
        # Y (T, 2, B, H) -> (T, B, 2, H) -> (T, B, 2H): forward states first, as in torch
        sequence = g.op("Reshape", [g.op("Transpose", [outputs], perm=[0, 2, 1, 3]), flat])
    return g.op("Transpose", [sequence], perm=[1, 0, 2])


def _merge(g: _Graph, states: str, *, merge: str, hidden: int) -> str:
    if merge == "concat":
        return states
    axis = g.const("axis_last", _int64([-1]))
    forward = g.op("Slice", [states, g.const("slice_0", _int64([0])), g.const("slice_h", _int64([hidden])), axis])
    backward = g.op("Slice", [states, g.const("slice_h2", _int64([hidden])), g.const("slice_2h", _int64([2 * hidden])), axis])
    if merge == "mul":
        return g.op("Mul", [forward, backward])
    total = g.op("Add", [forward, backward])
    return g.op("Div", [total, g.const("two", _float([2.0]))]) if merge == "ave" else total


def _scores(g: _Graph, state: dict, states: str, *, attention: str, attention_size: int) -> str:
    """(B, T, D) -> attention scores (B, T), as ``pipeline.models.layers`` computes them."""
    import math

    if attention == "additive":
        projected = g.op(
            "Add",
            [
                g.op("MatMul", [states, g.const("att_W", state["attention.project.weight"].T)]),
                g.const("att_b", state["attention.project.bias"]),
            ],
        )
        scored = g.op("MatMul", [g.op("Tanh", [projected]), g.const("att_v", state["attention.score.weight"].T)])  # (B, T, 1)
        return g.op("Squeeze", [scored, g.const("axis_last_sq", _int64([-1]))])
    keys = g.op("MatMul", [states, g.const("att_K", state["attention.keys.weight"].T)])
    scored = g.op("MatMul", [keys, g.const("att_q", state["attention.query"])])  # (B, T)
    return g.op("Mul", [scored, g.const("att_scale", _float([1.0 / math.sqrt(attention_size)]))])


def _mask_and_pool(g: _Graph, scores: str, states: str, *, token_ids: str, lengths: str) -> tuple[str, str]:
    """-inf on padded positions, softmax -> weights (B, T); weights @ states -> pooled (B, D)."""
    import numpy as np

    width = g.op("Gather", [g.op("Shape", [token_ids]), g.const("index_1", np.asarray(1, dtype=np.int64))], axis=0)
    positions = g.op("Range", [g.const("zero", np.asarray(0, dtype=np.int64)), width, g.const("one", np.asarray(1, dtype=np.int64))])
    mask = g.op(
        "Less",
        [g.op("Unsqueeze", [positions, g.const("axis_0", _int64([0]))]), g.op("Unsqueeze", [lengths, g.const("axis_1", _int64([1]))])],
    )
    masked = g.op("Where", [mask, scores, g.const("minus_inf", _float([-np.inf]))])
    weights = g.op("Softmax", [masked], axis=-1)
    pooled = g.op("MatMul", [g.op("Unsqueeze", [weights, g.const("axis_1b", _int64([1]))]), states])  # (B, 1, D)
    return g.op("Squeeze", [pooled, g.const("axis_1c", _int64([1]))]), weights


def build_model_proto(state: dict, args: dict, *, labels: list[str], digest: str):
    """The ONNX ModelProto of a classifier from its numpy state dict and ``model_args``."""
    g = _Graph()
    helper, TensorProto = g.onnx.helper, g.onnx.TensorProto
    hidden = int(args.get("hidden_size", 128))
    embedded = g.op("Gather", [g.const("embedding", state["embedding.weight"]), "token_ids"], axis=0)  # (B, T, E)
    sequence = g.op("Transpose", [embedded], perm=[1, 0, 2])  # (T, B, E)
    states = _recurrent(g, state, args, inputs=sequence, lengths32=g.op("Cast", ["lengths"], to=TensorProto.INT32))
    states = _merge(g, states, merge=args.get("bidirectional_merge", "concat"), hidden=hidden)
    attention = args.get("attention", "additive")
    scores = _scores(g, state, states, attention=attention, attention_size=int(args.get("attention_size", 128)))
    pooled, weights = _mask_and_pool(g, scores, states, token_ids="token_ids", lengths="lengths")
    logits = g.op("Gemm", [pooled, g.const("out_W", state["output.weight"]), g.const("out_b", state["output.bias"])], transB=1)
    g.nodes.append(helper.make_node("Softmax", [logits], ["probabilities"], axis=-1))
    g.nodes.append(helper.make_node("Identity", [weights], ["weights"]))
    graph = helper.make_graph(
        g.nodes,
        "jpipe_attention_classifier",
        [
            helper.make_tensor_value_info("token_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info("lengths", TensorProto.INT64, ["batch"]),
        ],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", len(labels)]),
            helper.make_tensor_value_info("weights", TensorProto.FLOAT, ["batch", "sequence"]),
        ],
        initializer=g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="jpipe")
    model.ir_version = 8  # readable by onnxruntime >= 1.14
    helper.set_model_props(model, {WEIGHTS_KEY: digest, "labels": ",".join(labels)})
    g.onnx.checker.check_model(model)
    return model


def _int64(values):
    import numpy as np

    return np.asarray(values, dtype=np.int64)


def _float(values):
    import numpy as np

    return np.asarray(values, dtype=np.float32)


# ---------------------------------------------------------------- export
def export_onnx(directory: str | os.PathLike, *, output: str | os.PathLike | None = None, check: bool = True) -> dict[str, Any]:
    """Write the classifier of model directory ``directory`` as ONNX (default ``<directory>/model.onnx``).

    The file is written atomically, after the exported graph was compared with the torch model on
    random batches (``check``): a difference above ``CHECK_TOLERANCE`` is a ModelError and nothing is written.
    """
    from pipeline.io import atomic_path
    from pipeline.models.classifier import AttentionClassifier
    from pipeline.models.model_dir import read_model_dir

    onnx = _import("onnx")
    directory = Path(directory)
    info = read_model_dir(directory, architecture="AttentionClassifier")
    model = AttentionClassifier.from_dir(directory, device="cpu")
    state = {name: tensor.detach().float().numpy() for name, tensor in model.state_dict().items()}
    proto = build_model_proto(state, info["model_args"], labels=list(info["labels"]), digest=weights_digest(directory))
    target = Path(output) if output is not None else directory / ONNX_NAME
    difference = _check_against_torch(proto, model) if check else None
    with atomic_path(target, suffix=".onnx") as tmp:
        onnx.save_model(proto, str(tmp))
    logger.debug("Wrote %s (largest difference to torch %s).", target, difference)
    return {
        "path": str(target),
        "bytes": target.stat().st_size,
        "opset": OPSET,
        "labels": list(info["labels"]),
        "max_difference_to_torch": difference,
    }


def _check_against_torch(proto, model, *, batches: int = 4, seed: int = 0) -> float:
    """Largest |onnx - torch| over probabilities and attention weights on random padded batches."""
    import numpy as np
    import torch

    ort = _import("onnxruntime")
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    vocab_size = model.embedding.num_embeddings
    largest = 0.0
    for batch in range(batches):
        size, width = 1 + batch * 5, 1 + batch * 9
        lengths = rng.integers(1, width + 1, size=size).astype(np.int64)
        lengths[0] = width  # one row without padding
        ids = rng.integers(2, vocab_size, size=(size, width)).astype(np.int64)
        ids[np.arange(width)[None, :] >= lengths[:, None]] = model.padding_index
        probabilities, weights = session.run(None, {"token_ids": ids, "lengths": lengths})
        with torch.inference_mode():
            logits, torch_weights = model(torch.from_numpy(ids), torch.from_numpy(lengths))
        expected = torch.softmax(logits.float(), dim=-1).numpy()
        largest = max(largest, float(np.abs(probabilities - expected).max()), float(np.abs(weights - torch_weights.numpy()).max()))
    if not largest <= CHECK_TOLERANCE:
        raise ModelError(
            "E304",
            f"The exported ONNX graph differs from the torch model by {largest:.2e} (more than {CHECK_TOLERANCE}).",
            hint="Report this model's config.json: its architecture may not be supported by the ONNX export.",
        )
    return largest


# ---------------------------------------------------------------- inference
@dataclass
class OnnxModel:
    """An onnxruntime session of a classifier's ``model.onnx``: ``run(ids, lengths)`` -> (probabilities, weights)."""

    session: Any
    path: Path
    threads: int

    sub_batch: int = SUB_BATCH

    def run(self, token_ids, lengths):
        """``token_ids`` (B, T) int64, ``lengths`` (B,) int64 >= 1 -> probabilities (B, C), attention (B, T), float32 numpy.

        ONNX Runtime's LSTM computes every step up to the batch's longest row (torch's packed
        sequence skips the padding), so the rows are sorted by length and run ``sub_batch`` at
        a time, each cut to its own longest row: little padding is computed.
        """
        import numpy as np

        order = np.argsort(-lengths, kind="stable")
        probabilities, weights = None, np.zeros(token_ids.shape, dtype=np.float32)
        for start in range(0, len(order), self.sub_batch):
            rows = order[start : start + self.sub_batch]
            width = int(lengths[rows].max())
            inputs = {"token_ids": np.ascontiguousarray(token_ids[rows, :width]), "lengths": np.ascontiguousarray(lengths[rows])}
            chunk_probabilities, chunk_weights = self.session.run(None, inputs)
            if probabilities is None:
                probabilities = np.zeros((len(order), chunk_probabilities.shape[1]), dtype=np.float32)
            probabilities[rows] = chunk_probabilities
            weights[rows, :width] = chunk_weights
        return probabilities, weights


def load_onnx_model(directory: str | os.PathLike, *, threads: int = 1) -> OnnxModel:
    """The ``model.onnx`` of ``directory`` in an onnxruntime CPU session with ``threads`` intra-op threads.

    A missing ``model.onnx``, or one exported from other weights than ``model.safetensors``, is ModelError E319.
    """
    directory = Path(directory)
    path = directory / ONNX_NAME
    if not path.is_file():
        raise ModelError("E319", f"No ONNX export of the model in {directory} ({ONNX_NAME} is missing).", hint=EXPORT_HINT)
    ort = _import("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    # No busy-waiting between runs: the tokenizer thread needs the other core.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types for bad files
        raise ModelError("E304", f"Cannot load {path}: {exc}", hint=EXPORT_HINT) from None
    exported_from = session.get_modelmeta().custom_metadata_map.get(WEIGHTS_KEY)
    if exported_from != weights_digest(directory):
        raise ModelError(
            "E319",
            f"{path} was exported from other weights than {directory / 'model.safetensors'} (the model was retrained since).",
            hint=EXPORT_HINT,
        )
    return OnnxModel(session=session, path=path, threads=max(1, threads))
