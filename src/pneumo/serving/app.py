"""FastAPI app: a web page to drop an X-ray on, and a JSON API.

Bad input never yields a 500: an oversized body gets 413, an unsupported type 415, an
undecodable image 422, each with a message, and the server keeps serving.
"""

from __future__ import annotations

import base64
import threading
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse

from pneumo import DISCLAIMER, __version__
from pneumo.errors import ImageReadError
from pneumo.predict import Predictor

DEFAULT_MAX_BYTES = 20 * 1024 * 1024


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "disclaimer": DISCLAIMER}, status_code=status)


# What /v1/model leaves out unless asked: where and on what the model was trained (GPU, platform,
# git commit, the training machine's paths) says nothing about its answers and helps an attacker.
_PRIVATE_TRAINING_KEYS = ("environment",)
_PRIVATE_CONFIG_KEYS = ("data", "cache_dir", "pretrained", "split_file")


def _public_training(training: dict) -> dict:
    public = {key: value for key, value in training.items() if key not in _PRIVATE_TRAINING_KEYS}
    if isinstance(public.get("config"), dict):
        public["config"] = {k: v for k, v in public["config"].items() if k not in _PRIVATE_CONFIG_KEYS}
    return public


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413, counted as it arrives.

    A Content-Length header can be absent (chunked uploads) or wrong, so the bytes themselves
    are counted, and the request is cut off before more than the limit reaches the app, which
    would otherwise spool the whole upload to a temporary file before looking at it.
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        received, too_large, answered = 0, False, False

        async def counted_receive():
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    raise _BodyTooLarge
            return message

        async def answer_413():
            nonlocal answered
            if not answered:
                answered = True
                await _error(413, f"request body is over the limit of {self.max_bytes:,} bytes")(scope, receive, send)

        async def guarded_send(message):
            # FastAPI turns an exception while parsing a form into its own 400; send the 413 instead.
            if too_large:
                await answer_413()
            else:
                await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except _BodyTooLarge:
            pass
        if too_large:
            await answer_413()


def create_app(model: str | Path, *, backend: str = "torch", max_bytes: int = DEFAULT_MAX_BYTES,
               model_details: bool = False) -> FastAPI:
    """Build the app around one model (loaded once, here).

    ``model_details`` adds the training environment (device, platform, git commit) to /v1/model.
    """
    predictor = Predictor(model, backend=backend)
    # One inference at a time: the model already uses every core, and Grad-CAM hooks are not thread-safe.
    lock = threading.Lock()
    app = FastAPI(title="pneumo", version=__version__,
                  description=f"Pediatric chest X-ray classification. {DISCLAIMER}")
    page = resources.files("pneumo.serving").joinpath("static/index.html").read_text()
    # Multipart framing around the file is small; the file itself is checked against max_bytes below.
    app.add_middleware(BodyLimit, max_bytes=max_bytes + 64 * 1024)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        # The same {"error": ...} body as every other 4xx of this API, instead of FastAPI's {"detail": ...}.
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in error.errors())
        return _error(422, f"invalid request ({problems}); send one image as the multipart field 'file'")

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_bytes:
            return _error(413, f"request body of {int(length):,} bytes is over the limit of {max_bytes:,} bytes")
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "model": predictor.model_id}

    @app.get("/v1/model")
    def model_card() -> dict:
        metadata = predictor.metadata
        return {
            "id": predictor.model_id, "sha256": predictor.sha256, "backend": predictor.backend,
            "model_name": metadata["model_name"], "classes": predictor.classes,
            "preprocessing": metadata["preprocessing"], "temperature": predictor.temperature,
            "operating_point": metadata.get("operating_point"),
            "training": metadata.get("training", {}) if model_details else _public_training(metadata.get("training", {})),
            "evaluation": metadata.get("evaluation", {}), "intended_use": DISCLAIMER,
        }

    @app.post("/v1/predict")
    async def predict(request: Request,
                      file: UploadFile = File(..., description="An X-ray image: JPEG, PNG, BMP, TIFF or DICOM."),
                      gradcam: bool = Query(False, description="Also return a Grad-CAM overlay as base64 PNG.")):
        parts = (await request.form()).getlist("file")  # parsed once already, for the 'file' argument
        if len(parts) > 1:
            return _error(400, f"{len(parts)} files in one request; send one image per request (field 'file')")
        return await run_in_threadpool(answer, file, gradcam)

    def answer(file: UploadFile, gradcam: bool):
        name = file.filename or "upload"
        data = file.file.read(max_bytes + 1)
        if len(data) > max_bytes:
            return _error(413, f"{name}: file is over the limit of {max_bytes:,} bytes")
        try:
            image = predictor.load(name, data)
        except ImageReadError as error:
            return _error(error.status, str(error))
        with lock:
            prediction = predictor.predict_images([name], [image])[0]
            overlay = predictor.explain([prediction])[0] if gradcam else None
        body = {
            **prediction.as_dict(), "decision_rule": predictor.rule,
            "model": {"id": predictor.model_id, "sha256": predictor.sha256}, "disclaimer": DISCLAIMER,
        }
        if overlay is not None:
            from pneumo.explain.gradcam import png_bytes

            body["gradcam_png"] = base64.b64encode(png_bytes(overlay)).decode()
        return body

    return app
