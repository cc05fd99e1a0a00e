"""ONNX Runtime on CPU, as the ``cpu`` export target serves it: the graph rewrites done at export time and the
session options.

``model.onnx`` stays the standard graph (TensorRT and other runtimes read it). For CPU serving, export also writes
two rewritten copies next to it, which ``model.py`` loads:

- ``model.cpu.onnx``: every output, each ViT block's self-attention fused into ONNX Runtime's CPU
  ``com.microsoft.Attention`` kernel where the block's intermediates are not outputs themselves;
- ``embedding.cpu.onnx``: only the embedding (what searches ask for; ONNX Runtime runs every node of a graph
  whatever outputs are fetched, so this skips the last block's explicit attention map), fused the same way.

The fusion replaces the ~15 nodes the exporter writes for ``scaled_dot_product_attention`` (reshape, transpose,
three gathers, two scalings, QK^T, softmax, AV, transpose, reshape) by one node; ONNX Runtime's own transformer
optimiser does not recognise that pattern. ``benchmarks/embedding/`` measures each rewrite.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

CPU_GRAPH = "model.cpu.onnx"
EMBEDDING_GRAPH = "embedding.cpu.onnx"

# ORT's worker threads spin-wait for work after each operator by default. In a serving stack on a small CPU box (the
# Triton server, its gRPC threads, the gateway, Milvus and the clients share the cores) the spinning takes the cycles
# the others need: with it, Triton spent 6.9 ms of CPU per query at one caller, without it 2.5 ms
# (benchmarks/gateway_search/, CPU per process). Alone on a machine it is within noise (benchmarks/embedding/).
DEFAULT_ALLOW_SPINNING = False


# A dynamic batch bigger than this many input pixels (eight 224x224 images) runs as several session calls of at most
# that size: each call's activations then stay in the CPU caches (ViT-S/16 and EfficientNet-Lite0 at 224 px run
# faster in chunks of 8 than as one batch of 32; 28 px models are never split). 0 = one call per batch.
DEFAULT_MAX_BATCH_PIXELS = 8 * 224 * 224


def session_options(threads: int = 0, allow_spinning: bool = DEFAULT_ALLOW_SPINNING) -> ort.SessionOptions:
    """All graph optimisations, one operator at a time (sequential), ``threads`` intra-op threads (0 = one per
    physical core)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    return opts


def _live(nodes: list, outputs: set[str]) -> list:
    """``nodes`` without those whose outputs nothing reads (repeatedly)."""
    while True:
        used = {i for n in nodes for i in n.input} | outputs
        kept = [n for n in nodes if any(o in used for o in n.output)]
        if len(kept) == len(nodes):
            return kept
        nodes = kept


def keep_outputs(model: onnx.ModelProto, names: list[str]) -> None:
    """Makes, in place, a graph that computes only the outputs ``names``. ONNX Runtime runs every node of a graph
    whatever outputs are fetched, so the embedding-only session is built from this (for a ViT it skips the last
    block's explicit attention map, which also lets that block's attention be fused)."""
    g = model.graph
    kept = [o for o in g.output if o.name in names]
    nodes = _live(list(g.node), {o.name for o in kept})
    del g.output[:]
    g.output.extend(kept)
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in nodes for i in n.input}
    initializers = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(initializers)


def _perm(node) -> list[int] | None:
    return next((list(a.ints) for a in node.attribute if a.name == "perm"), None)


def fuse_attention(model: onnx.ModelProto) -> int:
    """Rewrites, in place, every exported ``scaled_dot_product_attention`` block of a ViT into one
    ``com.microsoft.Attention`` node; returns how many. A block whose intermediate tensors are also used elsewhere
    (the last block when the graph also outputs its attention map) is left as it is."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def prod(t, op):
        n = producer.get(t)
        return n if n is not None and n.op_type == op else None

    def only(t, op):
        c = consumers.get(t, [])
        return c[0] if len(c) == 1 and c[0].op_type == op else None

    def const(t):  # the initializer behind t (the exporter forwards shared weights through Identity nodes)
        while t not in inits and prod(t, "Identity") is not None:
            t = producer[t].input[0]
        return t if t in inits else None

    def int_value(t):
        if const(t) is not None:
            return int(numpy_helper.to_array(inits[const(t)]).reshape(-1)[0])
        n = prod(t, "Constant")
        return int(numpy_helper.to_array(n.attribute[0].t).reshape(-1)[0]) if n is not None else None

    fused: dict[str, onnx.NodeProto] = {}  # output name of the node it replaces -> the fused node
    groups: dict[str, set[str]] = {}  # the same -> outputs of the attention nodes it makes redundant
    for sm in [n for n in g.node if n.op_type == "Softmax"]:
        # softmax(q * s @ (k^T * s)) @ v, transposed back and reshaped to [B, N, D]
        m1, m2 = prod(sm.input[0], "MatMul"), only(sm.output[0], "MatMul")
        if m1 is None or m2 is None or m2.input[0] != sm.output[0]:
            continue
        t_out = only(m2.output[0], "Transpose")
        r_out = only(t_out.output[0], "Reshape") if t_out is not None and _perm(t_out) == [0, 2, 1, 3] else None
        mq, mk, gv = prod(m1.input[0], "Mul"), prod(m1.input[1], "Mul"), prod(m2.input[1], "Gather")
        if r_out is None or mq is None or mk is None or gv is None:
            continue
        gq, tk = prod(mq.input[0], "Gather"), prod(mk.input[0], "Transpose")
        gk = prod(tk.input[0], "Gather") if tk is not None and _perm(tk) == [0, 1, 3, 2] else None
        if gq is None or gk is None or not gq.input[0] == gk.input[0] == gv.input[0]:
            continue
        # q, k, v = (x @ W + b).reshape(B, N, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
        if [int_value(x.input[1]) for x in (gq, gk, gv)] != [0, 1, 2]:
            continue
        tqkv = prod(gq.input[0], "Transpose")
        rs = prod(tqkv.input[0], "Reshape") if tqkv is not None and _perm(tqkv) == [2, 0, 3, 1, 4] else None
        shape = prod(rs.input[1], "Concat") if rs is not None else None
        add = prod(rs.input[0], "Add") if rs is not None else None
        if shape is None or add is None or len(shape.input) != 5 or int_value(shape.input[2]) != 3:
            continue
        heads = int_value(shape.input[3])
        bias = next((const(i) for i in add.input if const(i) is not None), None)
        mm = next((prod(i, "MatMul") for i in add.input if prod(i, "MatMul") is not None), None)
        weight = const(mm.input[1]) if mm is not None else None
        if not heads or bias is None or weight is None or list(inits[weight].dims)[1] % (3 * heads):
            continue
        groups[r_out.output[0]] = {n.output[0] for n in (sm, m1, m2, t_out, mq, mk, gv, gq, tk, gk, tqkv, rs)}
        fused[r_out.output[0]] = helper.make_node(
            "Attention", [mm.input[0], weight, bias], [r_out.output[0]], name=f"{mm.name}/FusedAttention",
            domain="com.microsoft", num_heads=heads)
    outputs = {o.name for o in g.output}
    while fused:
        # drop what only fed the replaced nodes (the shape arithmetic of each block)
        nodes = _live([fused.get(n.output[0], n) if n.output else n for n in g.node], outputs)
        alive = {o for n in nodes for o in n.output}
        shared = [k for k in fused if groups[k] & alive]  # a block whose q/k/v or scores are used elsewhere
        if not shared:
            break
        for k in shared:
            del fused[k]
    if not fused:
        return 0
    del g.node[:]
    g.node.extend(nodes)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return len(fused)


def build_session(path: str, threads: int = 0, allow_spinning: bool = DEFAULT_ALLOW_SPINNING, fuse: bool = True,
                  outputs: list[str] | None = None) -> ort.InferenceSession:
    """The session this model serves with: ``path``'s graph cut down to ``outputs`` (default: all of them), with
    fused attention (when ``fuse``)."""
    source = path
    if fuse or outputs is not None:
        graph = onnx.load(path)
        if outputs is not None:
            keep_outputs(graph, outputs)
        if fuse:
            fuse_attention(graph)
        source = graph.SerializeToString()
    return ort.InferenceSession(source, session_options(threads, allow_spinning), providers=["CPUExecutionProvider"])


def images_per_call(batch: int, height: int, width: int, max_batch_pixels: int = DEFAULT_MAX_BATCH_PIXELS) -> int:
    return batch if max_batch_pixels <= 0 else max(1, min(batch, max_batch_pixels // (height * width)))


def run_in_chunks(session: ort.InferenceSession, names: list[str], input_name: str, batch: np.ndarray,
                  max_batch_pixels: int = DEFAULT_MAX_BATCH_PIXELS) -> list[np.ndarray]:
    """``session.run`` on ``batch``, in consecutive chunks of at most ``max_batch_pixels`` input pixels."""
    step = images_per_call(len(batch), batch.shape[-2], batch.shape[-1], max_batch_pixels)
    if step >= len(batch):
        return session.run(names, {input_name: batch})
    parts = [session.run(names, {input_name: batch[i:i + step]}) for i in range(0, len(batch), step)]
    return [np.concatenate(chunks) for chunks in zip(*parts, strict=True)]


def write_served_graphs(onnx_path: Path, embedding_output: str) -> list[Path]:
    """Writes ``model.cpu.onnx`` and ``embedding.cpu.onnx`` next to ``onnx_path`` (see the module doc)."""
    out = []
    for name, outputs in ((CPU_GRAPH, None), (EMBEDDING_GRAPH, [embedding_output])):
        graph = onnx.load(onnx_path)
        if outputs is not None:
            keep_outputs(graph, outputs)
        fuse_attention(graph)
        onnx.checker.check_model(graph)
        path = Path(onnx_path).with_name(name)
        onnx.save(graph, path)
        out.append(path)
    return out
