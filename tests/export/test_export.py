"""Export: a checker-clean ONNX graph that computes what torch computes, and configs Triton accepts."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from export.parity import MAX_ABS_DIFF, MIN_COSINE, onnx_session, real_images
from export.triton_config import TARGETS, parse_config, render_config
from extractors.tensor_names import EMBEDDING_OUTPUT, INPUT_NAME
from launchers.exporting import triton_model_config
from server.settings import Settings
from tests.fixtures.models import CNN_MODEL, SERVED_MODELS, VIT_MODEL


@pytest.mark.parametrize("model", SERVED_MODELS)
def test_parity_on_real_images_at_batch_1_and_8(exported_repository, model):
    _, results = exported_repository
    parity = results[model].parity
    # model.onnx, then the two CPU serving graphs (model.cpu.onnx, embedding.cpu.onnx), each at batch 1 and 8
    assert [p.batch for p in parity] == [1, 8] * 3
    for p in parity:
        assert p.min_cosine >= MIN_COSINE and p.max_abs_diff <= MAX_ABS_DIFF, p


@pytest.mark.parametrize("model", SERVED_MODELS)
def test_graph_is_uint8_in_unit_norm_out_with_a_dynamic_batch(exported_repository, model):
    repo, _ = exported_repository
    path = repo / model / "1" / "model.onnx"
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph, full_check=True)
    (inp,) = graph.graph.input
    assert inp.name == INPUT_NAME and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert inp.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert graph.opset_import[0].version >= 17
    session = onnx_session(path)
    for batch in (1, 3, 8):
        images = real_images(session.get_inputs()[0].shape[-1], batch)
        emb = session.run([EMBEDDING_OUTPUT], {INPUT_NAME: images})[0]
        assert emb.shape[0] == batch and emb.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_vit_also_exports_its_cls_attention(exported_repository):
    repo, _ = exported_repository
    session = onnx_session(repo / VIT_MODEL / "1" / "model.onnx")
    attention = session.run(["attention"], {INPUT_NAME: real_images(28, 2)})[0]
    assert attention.shape == (2, 4, 16)  # heads x patches (4x4 patches of 7 px)
    assert np.all(attention >= 0) and np.all(attention.sum(-1) <= 1.0 + 1e-5)


def test_written_configs_parse_with_tritons_model_config_protobuf(exported_repository):
    repo, _ = exported_repository
    for model in SERVED_MODELS:
        config = parse_config((repo / model / "config.pbtxt").read_text())
        assert config.name == model and config.backend == "python"
        assert config.max_batch_size == Settings().triton_max_batch_size
        assert config.dynamic_batching.max_queue_delay_microseconds == Settings().triton_max_queue_delay_us
        assert (repo / model / "1" / "model.py").exists()


@pytest.mark.parametrize("target", TARGETS)
def test_every_target_renders_a_valid_config_from_settings(target):
    settings = Settings(triton_max_batch_size=32, triton_preferred_batch_sizes=[4, 16, 64],
                        triton_max_queue_delay_us=250, triton_instance_count=2)
    config = parse_config(render_config(CNN_MODEL, 224, {"embedding": [1280]}, target, triton_model_config(settings)))
    assert config.max_batch_size == 32
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 16]  # 64 > max_batch_size is dropped
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    assert config.instance_group[0].count == 2
    if target == "gpu":
        (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
        assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"
        assert accelerator.parameters["trt_layer_norm_fp32_fallback"] == "1"
        assert config.model_warmup[0].batch_size == 8


def test_unknown_target_is_rejected():
    with pytest.raises(ValueError, match="unknown export target"):
        render_config(CNN_MODEL, 224, {"embedding": [1280]}, "tpu", triton_model_config(Settings()))


@pytest.mark.parametrize("model", SERVED_MODELS)
def test_served_graph_declares_patch_contributions_and_stale_exports_are_detected(exported_repository, model):
    from extractors.contributions import served_outputs
    from extractors.tensor_names import PATCH_CONTRIBUTIONS_OUTPUT
    from launchers.exporting import lacks_outputs

    repo, _ = exported_repository
    path = repo / model / "1" / "model.onnx"
    config = parse_config((repo / model / "config.pbtxt").read_text())
    assert [o.name for o in config.output] == served_outputs(model)
    assert PATCH_CONTRIBUTIONS_OUTPUT in [o.name for o in config.output]
    assert not lacks_outputs(path, served_outputs(model))
    # An export from before the output (or any graph missing one) is re-exported by `vsearch up`.
    assert lacks_outputs(path, [*served_outputs(model), "an_output_from_the_future"])
