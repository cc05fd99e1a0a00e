"""The exported models served by the real Triton binary give ONNX Runtime's embeddings and batch dynamically."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from export.parity import compare, onnx_session, real_images
from extractors.registry import get_spec
from extractors.tensor_names import EMBEDDING_OUTPUT, INPUT_NAME
from tests.fixtures.models import SERVED_MODELS, VIT_MODEL


def infer(url: str, model: str, pixels: np.ndarray, timeout: float = 30.0) -> np.ndarray:
    client = grpcclient.InferenceServerClient(url)
    inp = grpcclient.InferInput(INPUT_NAME, list(pixels.shape), "UINT8")
    inp.set_data_from_numpy(pixels)
    result = client.infer(model, [inp], outputs=[grpcclient.InferRequestedOutput(EMBEDDING_OUTPUT)],
                          client_timeout=timeout)
    return result.as_numpy(EMBEDDING_OUTPUT)


@pytest.mark.parametrize("model", SERVED_MODELS)
def test_triton_embeddings_equal_onnx_runtime_direct(triton, exported_repository, model):
    repo, _ = exported_repository
    size = get_spec(model).input_size
    session = onnx_session(repo / model / "1" / "model.onnx")
    for batch in (1, 8):
        pixels = real_images(size, batch)
        direct = session.run([EMBEDDING_OUTPUT], {INPUT_NAME: pixels})[0]
        served = infer(triton.grpc_url, model, pixels)
        min_cos, _ = compare(direct, served)
        assert served.shape == (batch, get_spec(model).dim)
        assert min_cos >= 0.99999, min_cos


def test_dynamic_batching_under_16_concurrent_callers(triton):
    client = grpcclient.InferenceServerClient(triton.grpc_url)

    def counts():
        stats = client.get_inference_statistics(VIT_MODEL, as_json=True)["model_stats"][0]
        return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))

    inferences_before, executions_before = counts()
    pixels = real_images(28, 1)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda _: infer(triton.grpc_url, VIT_MODEL, pixels), range(800)))
    inferences, executions = (a - b for a, b in zip(counts(), (inferences_before, executions_before), strict=True))
    assert inferences == 800
    # Triton merged concurrent single-image requests into batches: fewer model executions than images. (With the
    # default 100 us queue delay the mean batch here is ~2-6 depending on how busy the 2 cores are.)
    assert executions < inferences * 0.75, (executions, inferences)


@pytest.mark.parametrize("bad", ["dtype", "shape", "model"])
def test_bad_input_is_an_error_not_a_hang(triton, bad):
    pixels = real_images(28, 2)
    with pytest.raises(InferenceServerException):
        if bad == "dtype":
            client = grpcclient.InferenceServerClient(triton.grpc_url)
            inp = grpcclient.InferInput(INPUT_NAME, list(pixels.shape), "FP32")
            inp.set_data_from_numpy(pixels.astype(np.float32))
            client.infer(VIT_MODEL, [inp], client_timeout=10)
        elif bad == "shape":
            infer(triton.grpc_url, VIT_MODEL, real_images(224, 2)[:, :, :, :100], timeout=10)
        else:
            infer(triton.grpc_url, "no_such_model", pixels, timeout=10)


def test_the_embedder_splits_a_request_larger_than_the_models_batch_limit(triton):
    """An explained search embeds the query and up to max_explain_top_k (100) hits at once: more than Triton's
    max_batch_size (64), which Triton refuses in one request."""
    import asyncio

    from server.embedder.triton import TritonEmbedder

    async def main():
        embedder = TritonEmbedder([triton.grpc_url])
        try:
            limit = (await embedder.describe(VIT_MODEL)).max_batch_size
            pixels = np.concatenate([real_images(28, 8)] * ((limit + 8) // 8 + 1))[: limit + 7]
            embeddings, contributions = await embedder.embed_with_contributions(VIT_MODEL, pixels)
            return limit, pixels, embeddings, contributions, await embedder.embed(VIT_MODEL, pixels[:8])
        finally:
            await embedder.close()

    limit, pixels, embeddings, contributions, first = asyncio.run(main())
    assert limit == 64 and len(pixels) == limit + 7
    assert embeddings.shape == (len(pixels), get_spec(VIT_MODEL).dim) and len(contributions) == len(pixels)
    # the images repeat every 8: those past the limit (a second request) embed as the first ones did
    assert compare(first, embeddings[:8])[0] >= 0.9999 and compare(first[:7], embeddings[64:71])[0] >= 0.9999
