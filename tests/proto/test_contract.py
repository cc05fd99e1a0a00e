"""The public gRPC contract (proto/visualsearch/v1/search.proto): it passes `buf lint` (STANDARD, proto/buf.yaml),
and the generated Python stubs import, have the expected service shape and are up to date with the .proto."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2, text_format

REPO = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO / "proto"
PROTO_FILE = "visualsearch/v1/search.proto"
NODE_DIR = REPO / "clients" / "node"
BUF = NODE_DIR / "node_modules" / ".bin" / "buf"

# name -> (request, response, client_streaming, server_streaming)
RPCS = {
    "Search": ("SearchRequest", "SearchResponse", False, False),
    "SearchBatch": ("SearchBatchRequest", "SearchBatchResponse", False, False),
    "Upsert": ("UpsertRequest", "UpsertResponse", True, False),
    "Delete": ("DeleteRequest", "DeleteResponse", False, False),
    "Get": ("GetRequest", "GetResponse", False, False),
    "ListModels": ("ListModelsRequest", "ListModelsResponse", False, False),
    "Embed": ("EmbedRequest", "EmbedResponse", False, False),
    "FindDuplicates": ("FindDuplicatesRequest", "FindDuplicatesResponse", False, True),
}


def _buf() -> Path:
    if not BUF.exists():
        pytest.fail(
            f"{BUF.relative_to(REPO)} is missing: buf comes from npm. Run `make install` "
            f"(or `npm ci --prefix clients/node`).",
            pytrace=False,
        )
    if shutil.which("node") is None:
        pytest.fail("`node` is not on PATH: the npm-installed buf is started by a Node.js shim.", pytrace=False)
    return BUF


def _buf_lint(root: Path) -> subprocess.CompletedProcess[str]:
    # buf.yaml (v2) lives in proto/ and names its module `path: .`, so the input is the proto/ directory itself,
    # run from its parent: buf finds proto/buf.yaml from the input. (`--config proto/buf.yaml proto` fails: the
    # config's module path would then be read relative to the working directory.)
    return subprocess.run([str(_buf()), "lint", "proto"], cwd=root, capture_output=True, text=True, timeout=180)


def test_buf_lint_passes() -> None:
    result = _buf_lint(REPO)
    assert result.returncode == 0, f"buf lint proto found problems:\n{result.stdout}{result.stderr}"


def test_buf_lint_reads_proto_buf_yaml(tmp_path: Path) -> None:
    """Guards the invocation: an obvious STANDARD violation in a copy of proto/ must be reported."""
    shutil.copytree(PROTO_DIR, tmp_path / "proto")
    proto = tmp_path / "proto" / PROTO_FILE
    proto.write_text(proto.read_text() + "\nmessage bad_name {\n  int32 BadField = 1;\n}\n")
    result = _buf_lint(tmp_path)
    assert result.returncode != 0, "buf lint accepted a message named bad_name: is it linting anything?"
    assert "bad_name" in result.stdout and "BadField" in result.stdout, result.stdout + result.stderr


def test_stubs_import_and_service_shape() -> None:
    from visualsearch.v1 import search_pb2, search_pb2_grpc

    assert search_pb2.DESCRIPTOR.name == PROTO_FILE
    assert search_pb2.DESCRIPTOR.package == "visualsearch.v1"
    service = search_pb2.DESCRIPTOR.services_by_name["SearchService"]
    assert service.full_name == "visualsearch.v1.SearchService"
    shapes = {
        m.name: (m.input_type.name, m.output_type.name, m.client_streaming, m.server_streaming) for m in service.methods
    }
    assert shapes == RPCS

    # The grpc stub agrees with the descriptor (one multi-callable per RPC, of the right streaming kind).
    kinds = {
        (False, False): grpc.UnaryUnaryMultiCallable,
        (True, False): grpc.StreamUnaryMultiCallable,
        (False, True): grpc.UnaryStreamMultiCallable,
        (True, True): grpc.StreamStreamMultiCallable,
    }
    channel = grpc.insecure_channel("127.0.0.1:9")  # never connected: stubs only build call objects
    try:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        for name, (_, _, client_streaming, server_streaming) in RPCS.items():
            assert isinstance(getattr(stub, name), kinds[client_streaming, server_streaming]), name
    finally:
        channel.close()
    assert hasattr(search_pb2_grpc, "SearchServiceServicer")
    assert hasattr(search_pb2_grpc, "add_SearchServiceServicer_to_server")


def _serialized_file(pb2_source: Path) -> bytes:
    """The bytes a generated *_pb2.py passes to DescriptorPool.AddSerializedFile, read without importing it
    (importing would register a second, conflicting file in the default descriptor pool)."""
    for node in ast.walk(ast.parse(pb2_source.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "AddSerializedFile":
            return ast.literal_eval(node.args[0])
    raise AssertionError(f"no AddSerializedFile(...) call in {pb2_source}")


def test_stubs_are_up_to_date(tmp_path: Path) -> None:
    from visualsearch.v1 import search_pb2

    result = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-Iproto", f"--python_out={tmp_path}", PROTO_FILE],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"protoc failed:\n{result.stderr}"
    fresh = _serialized_file(tmp_path / "visualsearch" / "v1" / "search_pb2.py")
    current = search_pb2.DESCRIPTOR.serialized_pb
    if fresh != current:

        def text(data: bytes) -> str:
            return text_format.MessageToString(descriptor_pb2.FileDescriptorProto.FromString(data))

        pytest.fail(
            f"visualsearch/v1/ stubs ({search_pb2.__file__}) are stale: they were generated from another version "
            f"of {PROTO_FILE}. Regenerate with `make install`.\n--- imported ---\n{text(current)}\n"
            f"--- from proto/ ---\n{text(fresh)}",
            pytrace=False,
        )
