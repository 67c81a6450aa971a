"""Smart Turn's attention softmax, computed as the model file describes it.

The model is quantised in QDQ form: every attention softmax reads dequantised scores and its
output is quantised again. ONNX Runtime fuses that pattern into QLinearSoftmax, a lookup-table
kernel that only approximates the float softmax the graph describes and takes a third of the
model's time (measured: 14.5 of 44 ms per question). A Clip to the float32 range between the
DequantizeLinear and the Softmax changes no value but stops the fusion, so the softmax runs in
float (about 1.5 ms for all four) and is quantised where the file says; the matrix products stay
integer. Decisions on the phone-path turn set are checked against the fused graph's in
tests/pipeline/test_smart_turn.py.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

_LOW, _HIGH = "callgate_clip_low", "callgate_clip_high"


def exact_softmax(model: bytes) -> bytes:
    """The model with each DequantizeLinear -> Softmax -> QuantizeLinear unfusable."""
    graph_model = onnx.load_from_string(model)
    graph = graph_model.graph
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        source = producers.get(node.input[0]) if node.op_type == "Softmax" else None
        readers = consumers.get(node.output[0], []) if source is not None else []
        if (
            source is not None
            and source.op_type == "DequantizeLinear"
            and [reader.op_type for reader in readers] == ["QuantizeLinear"]
        ):
            clipped = f"{node.name}_clipped"
            clip = helper.make_node(
                "Clip", [node.input[0], _LOW, _HIGH], [clipped], name=f"{node.name}_clip"
            )
            nodes.append(clip)
            node.input[0] = clipped
        nodes.append(node)
    if len(nodes) == len(graph.node):
        raise ValueError("no quantised softmax found: not the Smart Turn graph expected")
    limits = np.finfo(np.float32)
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(limits.min, np.float32), _LOW),
            numpy_helper.from_array(np.array(limits.max, np.float32), _HIGH),
        ]
    )
    del graph.node[:]
    graph.node.extend(nodes)
    return graph_model.SerializeToString()
