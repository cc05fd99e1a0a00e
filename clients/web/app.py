"""The page's HTTP app: ``GET /`` is the page (static/), ``/api/*`` its JSON endpoints (OpenAPI at ``/docs``).

Every endpoint is one call of the SDK (``clients.sdk``) to the gateway, with the caller's bearer token (the page's
token field) passed on as the gRPC ``authorization`` metadata. A failed call answers with the HTTP status of its
gRPC status (``clients/web/errors.py``) and ``{"code", "message"}``: the gateway's own words. Images travel as
base64 in the JSON (thumbnails and overlays are a few kilobytes)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Form, Header, HTTPException, Request, Response, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from clients.sdk import Hit, SearchClient, SearchError, filters_to_proto
from clients.web.errors import http_status
from clients.web.examples import examples

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD_BYTES = 20 << 20  # the gateway's own default image limit (VSEARCH_MAX_IMAGE_BYTES)


class ModelOut(BaseModel):
    name: str
    dim: int
    count: int
    input_size: int
    trained_on: str = ""
    domain: str = ""


class ExplanationOut(BaseModel):
    grid: list[int]
    query_heatmap: list[float]
    hit_heatmap: list[float]
    non_spatial: float
    query_overlay_png: str | None  # base64
    hit_overlay_png: str | None


class HitOut(BaseModel):
    id: str
    score: float
    verdict: str | None
    metadata: dict
    thumbnail: str | None  # base64 PNG or JPEG
    explanation: ExplanationOut | None


class SearchOut(BaseModel):
    model: str
    hits: list[HitOut]
    timings: dict[str, float]


class ErrorOut(BaseModel):
    code: str
    message: str


def _b64(data: bytes) -> str | None:
    return base64.b64encode(data).decode("ascii") if data else None


def _hit(h: Hit) -> HitOut:
    e = h.explanation
    return HitOut(id=h.id, score=h.score, verdict=h.verdict, metadata=h.metadata, thumbnail=_b64(h.thumbnail),
                  explanation=None if e is None else ExplanationOut(
                      grid=list(e.grid), query_heatmap=e.query_heatmap, hit_heatmap=e.hit_heatmap,
                      non_spatial=e.non_spatial, query_overlay_png=_b64(e.query_overlay_png),
                      hit_overlay_png=_b64(e.hit_overlay_png)))


def _read_upload(upload: UploadFile, limit: int) -> bytes:
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, detail=f"the image is larger than {limit} bytes: send a smaller one")
    return data


def _parse_json(text: str | None, what: str):
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise HTTPException(400, detail=f"{what} is not JSON: {e}") from None


def _token(authorization: str | None) -> str | None:
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip() or None
    return None


def create_app(gateway: str, timeout_s: float = 60.0, max_upload_bytes: int = MAX_UPLOAD_BYTES) -> FastAPI:
    """The app for the gateway at ``gateway`` (host:port). An upload over ``max_upload_bytes`` is refused (413)
    before it is read whole."""
    app = FastAPI(title="visual-search web", description="Search a visual-search gateway from a browser. Every "
                  "endpoint is one call of the gateway's gRPC API; errors carry its status and message.",
                  version="1")
    gateway_client = SearchClient(gateway, timeout=timeout_s, retries=1)  # one channel for every user

    def client(authorization: str | None) -> SearchClient:
        return gateway_client.with_token(_token(authorization))

    @app.exception_handler(SearchError)
    async def grpc_error(request: Request, e: SearchError) -> JSONResponse:
        return JSONResponse({"code": e.code, "message": e.details}, status_code=http_status(e.code))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        code = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 413: "RESOURCE_EXHAUSTED"}.get(e.status_code, "UNKNOWN")
        return JSONResponse({"code": code, "message": str(e.detail)}, status_code=e.status_code)

    errors: dict = {code: {"model": ErrorOut} for code in (400, 401, 403, 404, 413, 429, 500, 503)}

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/models", response_model=list[ModelOut], responses=errors)
    def models(authorization: Annotated[str | None, Header()] = None) -> list[ModelOut]:
        """The gateway's models (ListModels)."""
        return [ModelOut(name=m.name, dim=m.dim, count=m.count, input_size=m.input_size, trained_on=m.trained_on,
                         domain=m.domain) for m in client(authorization).list_models()]

    @app.get("/api/examples", response_model=list[str])
    def example_names() -> list[str]:
        """Names of the example images."""
        return list(examples())

    @app.get("/api/examples/{name}", responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}, 404: {}})
    def example(name: str) -> Response:
        data = examples().get(name)
        if data is None:
            raise HTTPException(404, detail=f"no example {name!r}")
        return Response(data, media_type="image/png" if data.startswith(b"\x89PNG") else "image/jpeg")

    @app.post("/api/search", response_model=SearchOut, responses=errors)
    def search(
        model: Annotated[str, Form()],
        image: Annotated[UploadFile | None, File(description="the query image")] = None,
        id: Annotated[str | None, Form(description="search by this stored item instead")] = None,
        top_k: Annotated[int, Form()] = 12,
        filters: Annotated[str | None, Form(description='JSON: {"label": 3} or {"label": ["in", [1, 2]]}')] = None,
        region: Annotated[str | None, Form(description="JSON [x0, y0, x1, y1], normalised")] = None,
        explain: Annotated[bool, Form()] = False,
        authorization: Annotated[str | None, Header()] = None,
    ) -> SearchOut:
        """Search by an uploaded image (optionally a region of it) or by a stored id, with thumbnails; with
        ``explain``, each hit's heatmaps and PNG overlays."""
        if (image is None) == (not id):
            raise HTTPException(400, detail="send an image or an id (exactly one)")
        parsed = _parse_json(filters, "filters") or {}
        if not isinstance(parsed, dict):
            raise HTTPException(400, detail='filters must be a JSON object such as {"label": 3}')
        try:
            filters_to_proto(parsed)  # the SDK's own check, here so that a bad filter is a 400, not a 500
        except ValueError as e:
            raise HTTPException(400, detail=str(e)) from None
        box = _parse_json(region, "region")
        if box is not None and (not isinstance(box, list) or len(box) != 4
                                or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in box)):
            raise HTTPException(400, detail="region must be [x0, y0, x1, y1], four numbers")
        query = {"image": _read_upload(image, max_upload_bytes)} if image is not None else {"id": id}
        result = client(authorization).search(model, top_k=top_k, filters=parsed, include_thumbnails=True,
                                              explain=explain, explain_png=explain,
                                              region=tuple(box) if box else None, **query)
        return SearchOut(model=result.model, hits=[_hit(h) for h in result.hits], timings=result.timings)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
