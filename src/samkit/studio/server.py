"""samkit studio's HTTP API (FastAPI). Thin: validate, call the project, format the answer.

Every endpoint is a plain ``def``, so FastAPI runs it in its thread pool and model work never
blocks the event loop. Masks travel as COCO compressed RLE strings of the image's ``(H, W)``
(EXIF orientation); points and boxes are XY image pixels.

Safety, against other machines and against the web pages its user visits:

- Host check: a request whose ``Host`` header names none of the addresses the server is
  reached by (loopback names, the host it listens on, ``--allow-host`` names) is refused,
  so a DNS-rebinding page (evil.example resolving to 127.0.0.1) cannot read or change the
  project.
- Origin check: a request that changes anything (POST, PUT, PATCH, DELETE) from a browser
  must come from the studio's own page: an ``Origin`` (or ``Sec-Fetch-Site``) naming another
  site is refused, so a page elsewhere cannot add images, import annotations or edit
  instances with a "simple" cross-site form post. Clients that are not browsers send no
  ``Origin`` and are not affected.
- Token: when set (always when the server listens beyond loopback), every request must carry
  it (``Authorization: Bearer``, ``X-Samkit-Token``, a ``samkit_token`` cookie, or ``?token=``
  on the page URL, which also sets the cookie).

Files are served only by image id from the project's image folder. Uploads are size-limited
and must decode as images.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from samkit.errors import SamkitError
from samkit.ops.rle import decode_coco_rle
from samkit.studio.export import FORMATS, coco_dict, export_zip, import_coco
from samkit.studio.project import MAX_UPLOAD_BYTES, Project
from samkit.studio.store import NotFound, StoreError, mask_record

SHORTCUTS = {
    "left click": "add an object point", "right click / shift+click": "add a background point",
    "drag": "draw a box", "1 / 2 / 3": "pick a candidate mask", "enter / a": "accept",
    "esc": "clear the prompt", "ctrl+z / ctrl+y": "undo / redo", "b / e": "brush / eraser",
    "n / p": "next / previous image", "s": "segment everything", "d": "mark image done",
}


class PredictBody(BaseModel):
    points: list[Annotated[list[float], Field(min_length=3, max_length=3)]] | None = Field(
        None, description="[[x, y, label], ...], label 1 = object, 0 = background")
    box: Annotated[list[float], Field(min_length=4, max_length=4)] | None = Field(
        None, description="[x0, y0, x1, y1] in pixels")
    logits_id: str | None = Field(None, description="refine this earlier answer")
    multimask: bool = True


class InstanceBody(BaseModel):
    rle: str = Field(description="COCO compressed RLE counts of an (H, W) mask")
    class_id: int | None = Field(None, description="the instance's class")
    class_name: str | None = Field(None, description="or its class by name (created if new)")
    score: float | None = None
    source: str = "click"


class InstancePatch(BaseModel):
    rle: str | None = None
    class_id: int | None = None


class ClassBody(BaseModel):
    name: str
    color: str | None = Field(None, pattern=r"^#[0-9a-fA-F]{6}$")


class StatusBody(BaseModel):
    status: str


class FindBody(BaseModel):
    text: str = Field(min_length=1, max_length=2000, description="class names: \"cat, dog\"")
    box_threshold: float | None = Field(None, ge=0, le=1)
    text_threshold: float | None = Field(None, ge=0, le=1)
    clip_threshold: float | None = Field(None, ge=0, le=1)


class AutoBody(BaseModel):
    points_per_side: int = Field(32, ge=1, le=128)
    pred_iou_thresh: float | None = Field(None, ge=0, le=1)
    stability_score_thresh: float | None = Field(None, ge=0, le=1)
    min_mask_region_area: int = Field(0, ge=0)


logger = logging.getLogger("samkit.studio")

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def _hostname(netloc: str) -> str:
    """``"host:port"`` / ``"[::1]:port"`` -> lower-case host without port or brackets."""
    return (urlsplit(f"//{netloc}").hostname or "").lower()


def request_refusal(method: str, headers: Any, hosts: frozenset[str] | None) -> str | None:
    """Why a request must be refused by the Host / Origin checks, or None.

    Args:
        method: The HTTP method.
        headers: The request headers (case-insensitive mapping).
        hosts: Host names the server may be reached by; None: any (a server listening on
            every interface, where the token guards it).
    """
    host = headers.get("host", "")
    if hosts is not None and _hostname(host) not in hosts:
        return (f"Host {host!r} is not an address of this studio (allowed: "
                f"{', '.join(sorted(hosts))}); start it with --allow-host NAME to use another")
    if method.upper() in WRITE_METHODS:
        origin = headers.get("origin")
        if origin is not None and (origin == "null" or urlsplit(origin).netloc.lower()
                                   != host.lower()):
            return f"cross-origin request refused (Origin {origin!r}, Host {host!r})"
        if headers.get("sec-fetch-site") not in (None, "same-origin", "none"):
            return ("cross-site request refused (Sec-Fetch-Site "
                    f"{headers.get('sec-fetch-site')!r})")
    return None


def create_app(project: Project, token: str | None = None,
               amg_defaults: dict[str, Any] | None = None,
               allowed_hosts: Iterable[str] | None = LOOPBACK_HOSTS) -> FastAPI:
    """The studio app for ``project``.

    Args:
        project: The open project.
        token: When given, every request must carry it.
        amg_defaults: Automatic-mask settings recommended for the model.
        allowed_hosts: Host names the server is reached by (the ``Host`` header must name
            one); None accepts any (only with a token: a server on every interface).
    """
    app = FastAPI(title="samkit studio", docs_url=None, redoc_url=None)
    app.state.project = project
    store = project.store
    hosts = None if allowed_hosts is None else frozenset(h.lower().strip("[]")
                                                         for h in allowed_hosts)
    if hosts is None and token is None:
        raise ValueError("a studio that accepts any Host header needs a token")

    @app.middleware("http")
    async def check_request(request: Request, call_next: Any) -> Response:
        refusal = request_refusal(request.method, request.headers, hosts)
        if refusal is not None:
            return JSONResponse({"detail": refusal}, status_code=403)
        if token is None:
            return await call_next(request)
        given = (request.headers.get("x-samkit-token")
                 or request.headers.get("authorization", "").removeprefix("Bearer ").strip()
                 or request.cookies.get("samkit_token") or request.query_params.get("token"))
        if not given or not hmac.compare_digest(given, token):
            return JSONResponse({"detail": "missing or wrong token: open the URL that "
                                 "`samkit studio` printed (it carries ?token=...)"},
                                status_code=401)
        response = await call_next(request)
        if request.query_params.get("token"):
            response.set_cookie("samkit_token", token, httponly=True, samesite="strict")
        return response

    @app.exception_handler(SamkitError)  # StoreError, and the predictor's input checks
    async def bad_input(_: Request, exc: SamkitError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404 if isinstance(
            exc, NotFound) else 400)

    @app.exception_handler(Exception)  # a bug: shown as one, never as the user's mistake
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        logger.error("internal error on %s %s", request.method, request.url.path,
                     exc_info=(type(exc), exc, exc.__traceback__))
        return JSONResponse({"detail": f"internal error in samkit studio ({type(exc).__name__}:"
                             f" {exc}); the server log has the traceback. Please report it."},
                            status_code=500)

    def mask_of(image_id: int, rle: str) -> Any:
        info = store.get_image(image_id)
        if info["error"]:
            raise StoreError(f"image {image_id} could not be read: {info['error']}")
        try:
            mask = decode_coco_rle({"size": [info["height"], info["width"]], "counts": rle})
            ok = mask_record(mask)[0] == rle  # runs that do not cover H*W re-encode otherwise
        except Exception:
            ok = False
        if not ok:
            raise StoreError(f"rle is not a COCO RLE string of a {info['height']}x"
                             f"{info['width']} mask (height x width of image {image_id})")
        return mask

    # -- project ---------------------------------------------------------------------------
    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return {"project": project.dir.name, "model_id": project.model_id,
                "images_dir": str(project.images_dir), "counts": store.counts(),
                "schema_version": store.schema_version, "shortcuts": SHORTCUTS,
                "export_formats": list(FORMATS), "max_upload_bytes": MAX_UPLOAD_BYTES,
                "find": project.labeler is not None}

    # -- images ----------------------------------------------------------------------------
    @app.get("/api/images")
    def list_images(status: str | None = None, search: str | None = None,
                    offset: Annotated[int, Query(ge=0)] = 0,
                    limit: Annotated[int, Query(ge=1, le=10000)] = 100) -> dict[str, Any]:
        rows, total = store.list_images(status, offset, limit, search)
        cached = {p.stem for p in project.cache_dir.glob("*.pt")}
        for r in rows:
            r["cached"] = r["error"] is None and r["sha256"] in cached
        return {"images": rows, "total": total}

    @app.post("/api/images")
    def upload(file: Annotated[UploadFile, File()]) -> dict[str, Any]:
        data = file.file.read(MAX_UPLOAD_BYTES + 1)
        return project.add_upload(file.filename or "", data)

    @app.get("/api/images/{image_id}")
    def get_image(image_id: int) -> dict[str, Any]:
        return {**store.get_image(image_id), "cached": project.is_cached(image_id),
                "instances": [i.to_dict() for i in store.instances(image_id)],
                "next": store.neighbour(image_id, 1), "previous": store.neighbour(image_id, -1)}

    @app.get("/api/images/{image_id}/file")
    def image_file(image_id: int) -> FileResponse:
        return FileResponse(project.display_jpeg(image_id), media_type="image/jpeg")

    @app.post("/api/images/{image_id}/status")
    def set_status(image_id: int, body: StatusBody) -> dict[str, Any]:
        store.set_status(image_id, body.status)
        return store.get_image(image_id)

    @app.post("/api/images/{image_id}/embed")
    def embed(image_id: int) -> dict[str, Any]:
        import time

        t = time.perf_counter()
        _, size, computed = project.embedding(image_id)
        return {"computed": computed, "ms": round((time.perf_counter() - t) * 1e3, 2),
                "size": list(size)}

    @app.post("/api/images/{image_id}/predict")
    def predict(image_id: int, body: PredictBody) -> dict[str, Any]:
        return project.predict(image_id, body.points, body.box, body.logits_id, body.multimask)

    @app.post("/api/images/{image_id}/auto")
    def auto(image_id: int, body: AutoBody | None = None) -> dict[str, Any]:
        params = {**(amg_defaults or {}),
                  **(body or AutoBody()).model_dump(exclude_none=True)}
        return {"masks": project.segment_everything(image_id, **params), "params": params}

    @app.post("/api/images/{image_id}/find")
    def find(image_id: int, body: FindBody) -> dict[str, Any]:
        return project.find(image_id, body.text,
                            **body.model_dump(exclude_none=True, exclude={"text"}))

    # -- instances -------------------------------------------------------------------------
    @app.get("/api/images/{image_id}/instances")
    def instances(image_id: int) -> list[dict[str, Any]]:
        store.get_image(image_id)
        return [i.to_dict() for i in store.instances(image_id)]

    @app.post("/api/images/{image_id}/instances", status_code=201)
    def add_instance(image_id: int, body: InstanceBody) -> dict[str, Any]:
        if (body.class_id is None) == (body.class_name is None):
            raise StoreError("give the instance's class_id or its class_name (one of them)")
        mask = mask_of(image_id, body.rle)
        class_id = body.class_id if body.class_id is not None else store.add_class(
            str(body.class_name))
        return store.add_instance(image_id, class_id, mask, body.score,
                                  body.source).to_dict()

    @app.patch("/api/instances/{instance_id}")
    def patch_instance(instance_id: int, body: InstancePatch) -> dict[str, Any]:
        inst = store.get_instance(instance_id)
        mask = None if body.rle is None else mask_of(inst.image_id, body.rle)
        return store.update_instance(instance_id, body.class_id, mask).to_dict()

    @app.delete("/api/instances/{instance_id}")
    def delete_instance(instance_id: int) -> dict[str, Any]:
        return store.delete_instance(instance_id).to_dict()

    # -- classes ---------------------------------------------------------------------------
    @app.get("/api/classes")
    def classes() -> list[dict[str, Any]]:
        return store.list_classes()

    @app.post("/api/classes", status_code=201)
    def add_class(body: ClassBody) -> dict[str, Any]:
        cid = store.add_class(body.name, body.color)
        return next(c for c in store.list_classes() if c["id"] == cid)

    @app.patch("/api/classes/{class_id}")
    def rename_class(class_id: int, body: ClassBody) -> dict[str, Any]:
        store.rename_class(class_id, body.name)
        return next(c for c in store.list_classes() if c["id"] == class_id)

    # -- embeddings ------------------------------------------------------------------------
    @app.get("/api/embeddings")
    def embeddings_status() -> dict[str, Any]:
        return project.worker.status()

    @app.post("/api/embeddings/precompute")
    def precompute() -> dict[str, Any]:
        return {"queued": project.worker.enqueue_missing(), **project.worker.status()}

    # -- export / import -------------------------------------------------------------------
    @app.get("/api/export")
    def export(format: str = "coco") -> Response:
        name = f"{project.dir.name}-{format}"
        if format == "coco":
            return Response(json.dumps(coco_dict(store)), media_type="application/json",
                            headers={"Content-Disposition":
                                     f'attachment; filename="{name}.json"'})
        return Response(export_zip(store, format), media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="{name}.zip"'})

    @app.post("/api/import")
    def import_annotations(file: Annotated[UploadFile, File()]) -> dict[str, Any]:
        raw = file.file.read(MAX_UPLOAD_BYTES + 1)
        if len(raw) > MAX_UPLOAD_BYTES:
            raise StoreError(f"upload is over {MAX_UPLOAD_BYTES} bytes")
        try:
            coco = json.loads(raw)
        except ValueError as exc:
            raise StoreError(f"the file is not JSON: {exc}") from None
        return import_coco(store, coco)

    ui = Path(__file__).parent / "ui"
    if (ui / "assets").is_dir():
        app.mount("/assets", StaticFiles(directory=ui / "assets"), name="assets")

    @app.get("/")
    def index() -> Response:
        if (ui / "index.html").exists():
            return FileResponse(ui / "index.html", headers={"Cache-Control": "no-cache"})
        return JSONResponse({"detail": "the browser UI is missing from this install (build "
                             "it with `npm run build` in studio-ui/); the API lives under "
                             "/api"}, status_code=404)

    return app
