"""The softmax rewrite: ONNX Runtime no longer fuses the attention softmax into its lookup-table
kernel, while the integer matrix products stay fused."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest

from pipeline.models import ModelMissing, model_path
from pipeline.smart_turn_graph import exact_softmax
from tests.corpus import skip_or_fail


def optimised_ops(model: bytes, tmp_path: Path) -> Counter[str]:
    """Op counts of the graph ONNX Runtime actually runs (after its fusions)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
    return Counter(node.op_type for node in onnx.load(opts.optimized_model_filepath).graph.node)


def test_softmax_runs_in_float_and_matmuls_stay_integer(tmp_path: Path):
    try:
        original = model_path("smart-turn").read_bytes()
    except ModelMissing as exc:
        skip_or_fail(str(exc))
    before = optimised_ops(original, tmp_path)
    after = optimised_ops(exact_softmax(original), tmp_path)
    assert before["QLinearSoftmax"] == 4 and before["Softmax"] <= 1, before
    assert after["QLinearSoftmax"] == 0 and after["Softmax"] == before["Softmax"] + 4, after
    assert after["QLinearMatMul"] == before["QLinearMatMul"] > 0


def test_a_graph_without_quantised_softmax_is_refused():
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Softmax", ["x"], ["y"])], "g", [x], [y])
    with pytest.raises(ValueError, match="no quantised softmax"):
        exact_softmax(onnx.helper.make_model(graph).SerializeToString())
