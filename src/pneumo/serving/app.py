"""FastAPI app: a web page to drop an X-ray on, and a JSON API.

Bad input never yields a 500: an oversized body gets 413, an unsupported type 415, an
undecodable image 422, each with a message, and the server keeps serving. Uploads are decoded
a few at a time (decoding is where hostile files cost memory) and classified in micro-batches.
Optional guards, all off unless set: an API key, trusted Host names, allowed cross-origin
callers and a per-client rate limit.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import re
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import uvicorn
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from uvicorn.protocols.http.h11_impl import H11Protocol

from pneumo import DISCLAIMER, __version__
from pneumo.config import flat_config
from pneumo.errors import ImageReadError, ModelFileError
from pneumo.explain.gradcam import png_bytes
from pneumo.predict import Predictor
from pneumo.serving.batching import MicroBatcher

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
#: Seconds a connection has to send a request's headers, and an upload its next chunk: a client that connects and
#: sends nothing, or drips its headers, is cut off instead of holding a connection forever. (A whole upload has no
#: deadline of its own: a reverse proxy's client_body_timeout and the body limit bound it.)
CLIENT_TIMEOUT = 15.0
MULTIPART_FRAMING = 64 * 1024  # bytes a request may carry beyond its file (boundaries, headers)


@dataclass(frozen=True)
class ServerSettings:
    """What the server accepts and from whom.

    Attributes:
        max_bytes: largest upload (bytes received are counted, chunked bodies included).
        max_decoded_bytes: largest decoded image (None: the readers' default, sized for CR/DX).
        decoders: uploads decoded at the same time; the rest wait (bounds memory under a flood of bombs).
        api_key: when set, /v1/* requires it as ``X-API-Key`` or ``Authorization: Bearer``.
        allowed_hosts: Host header values accepted (DNS-rebinding guard); empty accepts any.
        cors_origins: other origins whose pages may call the API; requests from any other
            origin are refused (403) rather than processed.
        rate_limit: requests per minute per client address on /v1/*; 0 is no limit.
        max_batch: most images classified in one model call.
        batch_wait_ms: longest wait for more images once one is queued.
        model_details: add the training environment (device, platform, git commit) to /v1/model.
        client_timeout: seconds a client has to send its headers, and each chunk of its upload.
    """

    max_bytes: int = DEFAULT_MAX_BYTES
    max_decoded_bytes: int | None = None
    decoders: int = 2
    api_key: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    rate_limit: int = 0
    max_batch: int = 16
    batch_wait_ms: float = 5.0
    model_details: bool = False
    client_timeout: float = CLIENT_TIMEOUT

    def __post_init__(self):
        for name, option, low in (("max_bytes", "--max-mb", 1), ("max_decoded_bytes", "--max-image-mb", 1),
                                  ("decoders", "--decoders", 1), ("rate_limit", "--rate-limit", 0),
                                  ("max_batch", "--max-batch", 1), ("batch_wait_ms", "--batch-wait-ms", 0),
                                  ("client_timeout", "--client-timeout", 0.1)):
            value = getattr(self, name)
            if value is not None and value < low:
                raise ValueError(f"The '{name}' server setting ({option}) must be >= {low}. Got {value} instead.")
        if self.api_key is not None and len(self.api_key) < 16:
            raise ValueError("The API key (--api-key or PNEUMO_API_KEY) must have at least 16 characters (e.g. "
                             "python -c 'import secrets; print(secrets.token_urlsafe())'). Got a shorter one instead.")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "disclaimer": DISCLAIMER}, status_code=status)


# What /v1/model leaves out unless asked: where and on what the model was trained (GPU, platform,
# git commit, the training machine's paths) says nothing about its answers and helps an attacker.
_PRIVATE_TRAINING_KEYS = ("environment",)
_PRIVATE_CONFIG_KEYS = ("data", "cache_dir", "pretrained", "split_file")


def _public_training(training: dict) -> dict:
    public = {key: value for key, value in training.items() if key not in _PRIVATE_TRAINING_KEYS}
    if isinstance(public.get("config"), dict):
        public["config"] = {k: v for k, v in flat_config(public["config"]).items() if k not in _PRIVATE_CONFIG_KEYS}
    return public


class _BodyTooLarge(Exception):
    pass


class _BodyTooSlow(Exception):
    pass


class SlowClientH11(H11Protocol):
    """Uvicorn's HTTP/1.1 protocol, closing a connection whose next request's headers are not in within ``timeout``.

    Uvicorn's keep-alive timer stops at the first byte of a request, so a client that connects and sends nothing,
    or its headers a byte at a time, would hold a connection forever. This deadline runs from the connection's
    opening, and from each response, until a request's headers are complete.
    """

    timeout = CLIENT_TIMEOUT

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.headers_deadline = None
        self.timed_cycle = None
        self._arm_deadline()

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not self.timed_cycle:  # a request's headers are in: its body has BodyLimit's own timeout
            self.timed_cycle = self.cycle
            self.headers_deadline.cancel()

    def on_response_complete(self) -> None:
        # Armed before Uvicorn goes on to a pipelined request, whose headers, already in, disarm it again.
        self._arm_deadline()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self.headers_deadline.cancel()
        super().connection_lost(exc)

    def _arm_deadline(self) -> None:
        if self.headers_deadline is not None:
            self.headers_deadline.cancel()
        self.headers_deadline = self.loop.call_later(self.timeout, self.timeout_keep_alive_handler)


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413, counted as it arrives, and one whose next chunk
    takes over ``timeout`` seconds to come gets 408.

    A Content-Length header can be absent (chunked uploads) or wrong, so the bytes themselves
    are counted, and the request is cut off before more than the limit reaches the app, which
    would otherwise spool the whole upload to a temporary file before looking at it.
    """

    def __init__(self, app, max_bytes: int, timeout: float = CLIENT_TIMEOUT):
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = Headers(scope=scope).get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            message = f"request body of {int(length):,} bytes is over the limit of {self.max_bytes:,} bytes"
            return await _error(413, message)(scope, receive, send)
        received, refusal, answered, body_done = 0, None, False, False

        async def counted_receive():
            nonlocal received, refusal, body_done
            if body_done:  # after the body the app only waits for a disconnect, which may take any time
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except asyncio.TimeoutError:
                refusal = (408, f"request body stalled: no data for {self.timeout:.0f} s")
                raise _BodyTooSlow from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > self.max_bytes:
                    refusal = (413, f"request body is over the limit of {self.max_bytes:,} bytes")
                    raise _BodyTooLarge
            return message

        async def answer_refusal():
            nonlocal answered
            if not answered:
                answered = True
                await _error(*refusal)(scope, receive, send)

        async def guarded_send(message):
            # FastAPI turns an exception while parsing a form into its own 400; send the refusal instead.
            if refusal:
                await answer_refusal()
            else:
                await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except (_BodyTooLarge, _BodyTooSlow):
            pass
        if refusal:
            await answer_refusal()


CLIENT_GONE = 499  # nginx's status for a request whose client left: nobody reads the answer
MAX_BATCH_FILES = 32  # images in one /v1/predict/batch request (the body limit applies to all of them together)
# A grey lung-shaped mark, so that browsers asking for an icon get one instead of a 404 in the log.
FAVICON = (b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" '
           b'fill="#222"/><ellipse cx="5" cy="8" rx="2.5" ry="5" fill="#ccc"/><ellipse cx="11" cy="8" rx="2.5" '
           b'ry="5" fill="#ccc"/></svg>')


class Failure(BaseModel):
    """A refusal: what went wrong, naming the file where there is one."""

    error: str
    disclaimer: str = DISCLAIMER


class ModelRef(BaseModel):
    id: str
    sha256: str


class NoveltyScore(BaseModel):
    score: float
    threshold: float
    flagged: bool


class Answer(BaseModel):
    """One image's answer: its class (null when it is outside the model's scope, with ``not_classified`` saying
    why), probabilities, the reason, input warnings, conformal set when asked for, novelty and DICOM attributes;
    or, inside a batch, ``error`` for a file that could not be read."""

    model_config = ConfigDict(populate_by_name=True)

    file: str
    class_: str | None = Field(None, alias="class")
    probabilities: dict[str, float] | None = None
    p_pneumonia: float | None = None
    reason: str | None = None
    warnings: list[str] | None = None
    not_classified: str | None = None
    class_set: list[str] | None = None
    class_set_text: str | None = None
    novelty: NoveltyScore | None = None
    dicom: dict[str, str] | None = None
    error: str | None = None
    decision_rule: str | None = None
    model: ModelRef | None = None
    disclaimer: str | None = None
    gradcam_png: str | None = None
    gradcam_unavailable: str | None = None


class BatchAnswer(BaseModel):
    answers: list[Answer]
    decision_rule: str
    model: ModelRef
    disclaimer: str


WRONG_KEYS_PER_MINUTE = 10  # per client address; a client past it gets 429 until its oldest failure is a minute old


class RateLimit:
    """At most ``per_minute`` requests in any 60 s from one client address (a sliding window)."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._seen: dict[str, deque] = defaultdict(deque)
        self._purged = 0.0
        self._lock = threading.Lock()

    def wait_time(self, client: str, *, count: bool = True) -> float:
        """0 when the request may go ahead (and, with ``count``, it is counted), else seconds until it may."""
        now = time.monotonic()
        with self._lock:
            if len(self._seen) > 10_000 and now - self._purged > 1:
                # Forget clients idle for a minute, so that the table stays small; at most once a second,
                # so that a flood of new addresses cannot make every request pay for it.
                self._seen = defaultdict(deque, {c: s for c, s in self._seen.items() if s and now - s[-1] < 60})
                self._purged = now
            seen = self._seen[client]
            while seen and now - seen[0] >= 60:
                seen.popleft()
            if len(seen) >= self.per_minute:
                return 60 - (now - seen[0])
            if count:
                seen.append(now)
            return 0.0


class Guard:
    """ASGI middleware that applies the optional guards of ``settings`` in a fixed order: Host, origin (answering an
    allowed origin's preflight), API key (counting wrong ones), rate limit.

    Pure ASGI rather than Starlette's BaseHTTPMiddleware, which hides a client's disconnection from the app.
    """

    def __init__(self, app, settings: ServerSettings):
        self.app, self.settings = app, settings
        self.limiter = RateLimit(settings.rate_limit) if settings.rate_limit else None
        self.failures = RateLimit(WRONG_KEYS_PER_MINUTE)
        self.hosts = {host.lower() for host in settings.allowed_hosts}
        self.origins = set(settings.cors_origins)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal, allowed = self.check(Request(scope))

        async def send_with_cors(message):
            if message["type"] == "http.response.start":  # so that an allowed page can read answers too
                MutableHeaders(scope=message).update(allowed)
            await send(message)

        if refusal is not None:
            refusal.headers.update(allowed)
            return await refusal(scope, receive, send)
        await self.app(scope, receive, send_with_cors)

    def check(self, request: Request) -> tuple[Response | None, dict[str, str]]:
        """(the refusal, or None to go on; the CORS headers every response to this request carries)."""
        settings = self.settings
        host = _host_name(request.headers.get("host", ""))
        if self.hosts and host is None:
            return _error(400, "malformed Host header; send the server's name, optionally with :port"), {}
        if self.hosts and host not in self.hosts:
            return _error(400, f"Host {host!r} is not served here; allowed: {', '.join(sorted(self.hosts))}"), {}
        origin = request.headers.get("origin")
        same_origin = origin is not None and origin.split("://", 1)[-1].lower() == request.headers.get("host", "").lower()
        if origin and not same_origin and origin not in self.origins:
            return _error(403, f"cross-origin requests from {origin} are not allowed (see --cors-origin)"), {}
        allowed = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"} if origin in self.origins else {}
        if request.method == "OPTIONS" and allowed:  # a browser's preflight, before a call with the key header
            return Response(status_code=204, headers={
                "Access-Control-Allow-Methods": "GET, POST", "Access-Control-Max-Age": "600",
                "Access-Control-Allow-Headers": "X-API-Key, Authorization, Content-Type"}), allowed
        if not request.url.path.startswith("/v1/"):
            return None, allowed
        client = request.client.host if request.client else "unknown"
        locked = settings.api_key is not None and self.failures.wait_time(client, count=False)
        if locked:
            # A client that sent too many wrong keys is refused whatever it sends now, the right key included, so
            # that guessing stays slow and no answer tells a guess apart (behind one proxy address, its clients
            # share the lock: name the proxy with --trusted-proxy).
            return _slow_down(locked, f"too many wrong API keys from this client; retry in {locked:.0f} s"), allowed
        if settings.api_key is not None and not _has_key(request, settings.api_key):
            self.failures.wait_time(client)  # counted
            return JSONResponse({"error": "missing or wrong API key; send it as the X-API-Key header",
                                 "disclaimer": DISCLAIMER}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"}), allowed
        wait = self.limiter.wait_time(client) if self.limiter is not None else 0
        if wait:
            return _slow_down(wait, f"rate limit of {settings.rate_limit} requests a minute reached; "
                                    f"retry in {wait:.0f} s"), allowed
        return None, allowed


_HOST = re.compile(r"^(?:\[(?P<ipv6>[0-9a-f:.]+)\]|(?P<name>[a-z0-9._-]+))(?::(?P<port>[0-9]{1,5}))?$")


def _slow_down(wait: float, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "disclaimer": DISCLAIMER}, status_code=429,
                        headers={"Retry-After": str(int(wait) + 1)})


def _host_name(header: str) -> str | None:
    """The host of a Host header, without the port (``example.org:8000``, ``[::1]:8000`` and ``[::1]`` alike); None
    for anything else (``127.0.0.1:80@evil.com``, ``[::1]evil.com``, ``localhost:evil``): RFC 9110's uri-host and
    port, nothing more."""
    match = _HOST.match(header.strip().lower())
    if match is None:
        return None
    return match.group("ipv6") or match.group("name")


def _has_key(request: Request, key: str) -> bool:
    given = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    return hmac.compare_digest(given.encode(), key.encode())  # constant time: the key cannot be guessed byte by byte


def create_app(model: str | Path, *, backend: str = "auto", settings: ServerSettings | None = None,
               conformal: float | None = None, force: bool = False, expected_sha256: str | None = None,
               phi: str = "drop") -> FastAPI:
    """Build the app around one model (loaded once, here).

    Args:
        model: a run folder, bundle, shipped models/ folder or ONNX file.
        backend: ``torch``, ``onnx``, or ``auto`` (ONNX Runtime where the model has an export).
        settings: limits and guards (defaults: ServerSettings()).
        conformal: alpha of conformal class sets in every answer (None: no sets).
        force: answer images outside the model's scope too, instead of "not classified".
        expected_sha256: refuse to start unless the model file has this sha256 (a deployment's pin).
        phi: patient identifiers in answers: drop, hash (keyed by $PNEUMO_PHI_KEY) or keep (``pneumo.privacy``).
    """
    settings = settings or ServerSettings()
    predictor = Predictor(model, backend=backend, conformal=conformal, force=force, expected_sha256=expected_sha256,
                          phi=phi)
    # One model call at a time: it already uses every core, and Grad-CAM hooks are not thread-safe.
    model_lock = threading.Lock()

    def classify(names, images):
        with model_lock:
            return predictor.predict_images(names, images)

    batcher = MicroBatcher(classify, max_batch=settings.max_batch, max_wait=settings.batch_wait_ms / 1000)
    decoding = asyncio.Semaphore(settings.decoders)
    # Grad-CAM keeps a batch's activations and gradients alive: one at a time, so that concurrent requests for it
    # queue instead of each holding its own copy.
    explaining = asyncio.Semaphore(1)
    app = FastAPI(title="pneumo", version=__version__, docs_url=None, redoc_url=None,
                  description=f"Pediatric chest X-ray classification. {DISCLAIMER}")
    app.router.on_shutdown.append(batcher.close)
    app.state.batcher = batcher
    app.state.settings = settings
    page = resources.files("pneumo.serving").joinpath("static/index.html").read_text()
    page = page.replace("{{API_KEY_FIELD}}", "hidden" if settings.api_key is None else "")
    max_bytes = settings.max_bytes
    # The request may exceed the file by its multipart framing; the file itself is checked against max_bytes below.
    max_body = max_bytes + MULTIPART_FRAMING
    app.add_middleware(BodyLimit, max_bytes=max_body, timeout=settings.client_timeout)
    app.add_middleware(Guard, settings=settings)  # outside BodyLimit: a refused request's body is never read
    _serve_docs_offline(app)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        # 404, 405, ...: the app's {"error": ...} schema too.
        return JSONResponse({"error": str(error.detail), "disclaimer": DISCLAIMER}, status_code=error.status_code,
                            headers=getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        # The same {"error": ...} body as every other 4xx of this API, instead of FastAPI's {"detail": ...}.
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in error.errors())
        return _error(422, f"invalid request ({problems}); send one image as the multipart field 'file'")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(FAVICON, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "model": predictor.model_id}

    @app.get("/v1/model")
    def model_card() -> dict:
        metadata = predictor.metadata
        training = metadata.get("training", {})
        return {
            "id": predictor.model_id, "sha256": predictor.sha256, "backend": predictor.backend,
            "model_name": metadata["model_name"], "classes": predictor.classes,
            "preprocessing": metadata["preprocessing"], "temperature": predictor.temperature,
            "operating_point": metadata.get("operating_point"), "decision_rule": predictor.rule,
            "conformal": ({"alpha": predictor.conformal, "kind": metadata["conformal"]["kind"],
                           "fitted_on": metadata["conformal"]["fitted_on"]} if predictor.conformal else None),
            "site_calibration": metadata.get("site_calibration"),
            "novelty_check": {key: value for key, value in (metadata.get("novelty") or {}).items()
                              if key in ("score", "threshold", "false_alarm_rate", "val_flagged", "fitted_on_images")}
                             or None,
            "training": training if settings.model_details else _public_training(training),
            "evaluation": metadata.get("evaluation", {}), "intended_use": DISCLAIMER,
        }

    @app.post("/v1/predict", response_model=Answer, response_model_exclude_unset=True,
              responses={400: {"model": Failure}, 413: {"model": Failure}, 415: {"model": Failure},
                         422: {"model": Failure}})
    async def predict(request: Request,
                      file: UploadFile = File(..., description="An X-ray image: JPEG, PNG, BMP, TIFF or DICOM."),
                      gradcam: bool = Query(False, description="Also return a Grad-CAM overlay as base64 PNG.")):
        parts = (await request.form()).getlist("file")  # parsed once already, for the 'file' argument
        if len(parts) > 1:
            return _error(400, f"{len(parts)} files in one request; send one image per request (field 'file'), "
                               "or several to /v1/predict/batch (field 'files')")
        status, body = await answer(request, file, gradcam)
        return body if status == 200 else _error(status, body["error"])

    @app.post("/v1/predict/batch", response_model=BatchAnswer, response_model_exclude_unset=True,
              responses={400: {"model": Failure}, 413: {"model": Failure}})
    async def predict_batch(request: Request, files: list[UploadFile] = File(..., description=f"Up to {MAX_BATCH_FILES} X-ray images."),
                            gradcam: bool = Query(False, description="Also return Grad-CAM overlays as base64 PNG.")):
        if len(files) > MAX_BATCH_FILES:
            return _error(400, f"{len(files)} files in one request, over the limit of {MAX_BATCH_FILES}; send them "
                               "in smaller batches")
        # One answer per file, in order; a file that cannot be read gets its error and the others go on.
        answers = [body for _, body in await asyncio.gather(*(answer(request, file, gradcam) for file in files))]
        return {"answers": answers, "decision_rule": predictor.rule,
                "model": {"id": predictor.model_id, "sha256": predictor.sha256}, "disclaimer": DISCLAIMER}

    async def answer(request: Request, file: UploadFile, gradcam: bool) -> tuple[int, dict]:
        """(HTTP status, body) for one uploaded file: its prediction, or its error with the status that fits."""
        name = file.filename or "upload"
        async with decoding:
            # A decode cannot be stopped once started, but one whose client left while it queued is never started.
            if await request.is_disconnected():
                return CLIENT_GONE, {"file": name, "error": "the client closed the connection before decoding"}
            decoded = await run_in_threadpool(decode, file, name)
        if isinstance(decoded, ImageReadError):
            return decoded.status, {"file": name, "error": str(decoded)}
        image, info = decoded
        prediction = predictor.describe(await asyncio.wrap_future(batcher.submit(name, image)), info)
        overlay = None
        if gradcam and prediction.classified:
            async with explaining:
                if await request.is_disconnected():
                    return CLIENT_GONE, {"file": name, "error": "the client closed the connection before Grad-CAM"}
                overlay = await run_in_threadpool(explain, prediction)
        if isinstance(overlay, str):  # no PyTorch model to take gradients of: the answer without its picture
            overlay, unavailable = None, overlay
        else:
            unavailable = ""
        body = {
            **prediction.as_dict(), "decision_rule": predictor.rule,
            "model": {"id": predictor.model_id, "sha256": predictor.sha256}, "disclaimer": DISCLAIMER,
        }
        if overlay is not None:
            body["gradcam_png"] = base64.b64encode(png_bytes(overlay)).decode()
        if unavailable:
            body["gradcam_unavailable"] = unavailable
        return 200, body

    def decode(file: UploadFile, name: str):
        """The image and its ImageInfo, or the ImageReadError that says why not."""
        data = file.file.read(max_bytes + 1)
        if len(data) > max_bytes:
            return ImageReadError(name, f"file is over the limit of {max_bytes:,} bytes", status=413)
        try:
            return predictor.load(name, data, max_decoded_bytes=settings.max_decoded_bytes)
        except ImageReadError as error:
            return error

    def explain(prediction):
        """The Grad-CAM overlay, or why there is none (an ONNX file served without its PyTorch bundle)."""
        try:
            with model_lock:
                return predictor.explain([prediction])[0]
        except ModelFileError as error:
            return f"Grad-CAM needs the PyTorch bundle beside the ONNX file ({error})"

    return app


def _serve_docs_offline(app: FastAPI) -> None:
    """/docs with Swagger UI's files served from the swagger-ui-bundle package, not a CDN: works offline."""
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/static/swagger-ui", StaticFiles(directory=swagger_ui_path), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} API",
                                   swagger_js_url="/static/swagger-ui/swagger-ui-bundle.js",
                                   swagger_css_url="/static/swagger-ui/swagger-ui.css",
                                   swagger_favicon_url="/static/swagger-ui/favicon-32x32.png")


def default_hosts(host: str) -> list[str]:
    """Host names to accept by default: the bound address, plus localhost on loopback; none for a wildcard bind."""
    if host in ("0.0.0.0", "::", ""):
        return []
    if host in ("127.0.0.1", "localhost", "::1"):
        return ["127.0.0.1", "localhost", "::1"]
    return [host]


def serve(application: FastAPI, host: str, port: int, *, trusted_proxies: tuple[str, ...] = ()) -> None:
    """Run ``application`` (from ``create_app``) under Uvicorn until interrupted.

    X-Forwarded-For is believed only from ``trusted_proxies`` (Uvicorn believes loopback by default, which lets any
    client behind a local proxy pick the address the rate limit counts), and a client gets the settings'
    ``client_timeout`` to send its headers, and each chunk of its body.
    """
    timeout = application.state.settings.client_timeout
    protocol = type("SlowClientH11", (SlowClientH11,), {"timeout": timeout})
    uvicorn.run(application, host=host, port=port, log_level="warning", http=protocol,
                proxy_headers=bool(trusted_proxies), forwarded_allow_ips=",".join(trusted_proxies) or None,
                timeout_keep_alive=5)
