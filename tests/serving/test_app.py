"""The API through FastAPI's test client, a real uvicorn server under load, and the page in Chromium.

An untrained model and synthetic images are enough for all of it (nothing here judges an answer's accuracy), so these
tests run without the shared data.
"""

import base64
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pneumo.serving.app import ServerSettings, create_app
from tests.conftest import dicom_bytes, jpeg_bytes, png_with_size, xray_like

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client(untrained):
    return TestClient(create_app(untrained, settings=ServerSettings(max_bytes=2_000_000)))


def test_predict_with_gradcam(client, synthetic_images):
    response = client.post("/v1/predict?gradcam=true", files={"file": ("x.jpeg", synthetic_images[0].read_bytes())})
    assert response.status_code == 200
    body = response.json()
    assert body["class"] in ("NORMAL", "Bacterial Pneumonia", "Viral Pneumonia")
    assert sum(body["probabilities"].values()) == pytest.approx(1, abs=1e-5)
    assert len(body["model"]["sha256"]) == 64 and "not a diagnostic device" in body["disclaimer"]
    assert base64.b64decode(body["gradcam_png"])[:4] == b"\x89PNG"


def test_dicom_upload(client):
    import numpy as np

    response = client.post("/v1/predict", files={"file": ("scan.dcm", dicom_bytes(np.arange(64 * 64).reshape(64, 64)))})
    assert response.status_code == 200 and "gradcam_png" not in response.json()


@pytest.mark.parametrize("name, payload, status, message", [
    ("notes.txt", b"hello", 415, "notes.txt: not a recognised image"),
    ("cut.jpeg", jpeg_bytes(xray_like(0, 128))[:600], 422, "cut.jpeg: truncated JPEG"),
    ("bomb.png", png_with_size(40_000, 40_000), 413, "over the limit"),
    ("empty.png", b"", 422, "file is empty"),
])
def test_bad_uploads_get_clear_errors(client, name, payload, status, message):
    response = client.post("/v1/predict", files={"file": (name, payload)})
    assert response.status_code == status
    assert message in response.json()["error"]


def test_body_over_the_limit_is_413_and_server_keeps_serving(client, synthetic_images):
    response = client.post("/v1/predict", files={"file": ("big.jpeg", b"\x00" * 2_100_000)})
    assert response.status_code == 413 and "over the limit" in response.json()["error"]
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.post("/v1/predict", files={"file": ("x.jpeg", synthetic_images[0].read_bytes())}).status_code == 200


def test_model_card_page_and_docs(client):
    card = client.get("/v1/model").json()
    assert card["classes"] == ["NORMAL", "Bacterial Pneumonia", "Viral Pneumonia"] and "diagnostic" in card["intended_use"]
    assert "Research software, not a diagnostic device" in client.get("/").text
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/static/swagger-ui/swagger-ui-bundle.js" in docs.text and "cdn" not in docs.text
    assert client.get("/static/swagger-ui/swagger-ui-bundle.js").status_code == 200
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]


def test_a_chunked_body_over_the_limit_is_cut_off_by_bytes_received(client, synthetic_images):
    """No Content-Length to trust: the body's bytes are counted as they arrive."""

    def chunks():
        boundary = b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jpeg\"\r\n\r\n"
        yield boundary
        for _ in range(100):  # 10 MB in all, against a 2 MB limit
            yield b"\x00" * 100_000
        yield b"\r\n--xyz--\r\n"

    response = client.post("/v1/predict", content=chunks(),
                           headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert response.status_code == 413 and "request body is over the limit" in response.json()["error"]
    assert client.post("/v1/predict", files={"file": ("x.jpeg", synthetic_images[0].read_bytes())}).status_code == 200


def test_model_endpoint_keeps_the_training_machine_private():
    shipped = REPO / "models" / "pneumo-cnn"  # its bundle records where it was trained
    card = TestClient(create_app(shipped)).get("/v1/model").json()
    assert "environment" not in card["training"] and "data" not in card["training"]["config"]
    assert set(card["novelty_check"]) == {"score", "threshold", "false_alarm_rate", "val_flagged", "fitted_on_images"}
    detailed = TestClient(create_app(shipped, settings=ServerSettings(model_details=True))).get("/v1/model").json()
    assert "git_commit" in detailed["training"]["environment"]


def test_several_files_or_none_get_the_apps_error_schema(client, synthetic_images):
    image = synthetic_images[0].read_bytes()
    response = client.post("/v1/predict", files=[("file", ("a.jpeg", image)), ("file", ("b.jpeg", image))])
    assert response.status_code == 400 and "2 files in one request" in response.json()["error"]
    missing = client.post("/v1/predict", files={"image": ("a.jpeg", image)})
    assert missing.status_code == 422 and "send one image as the multipart field 'file'" in missing.json()["error"]
    assert "detail" not in missing.json()
    answer = client.post("/v1/predict", files={"file": ("a.jpeg", image)})
    assert answer.status_code == 200 and answer.json()["reason"] and "p_pneumonia" in answer.json()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: Path, *flags: str):
    """A real ``pneumo serve`` on a free port: (its URL, its process)."""
    import httpx

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "pneumo.cli", "serve", "--model", str(model), "--port", str(port),
                                *flags], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return url, process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    pytest.fail(f"server did not start: {process.stderr.read().decode()[-2000:]}")


@pytest.fixture(scope="module")
def server(untrained):
    url, process = start_server(untrained)
    yield url
    process.terminate()
    process.wait(timeout=10)


def test_slow_clients_are_cut_off_and_others_still_served(untrained, synthetic_images):
    """A connection that sends nothing, or stalls in its headers or its body, is closed after --client-timeout."""
    import httpx

    url, process = start_server(untrained, "--client-timeout", "1")
    port = int(url.rsplit(":", 1)[1])
    try:
        silent, slow_headers, slow_body = (socket.create_connection(("127.0.0.1", port)) for _ in range(3))
        slow_headers.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line
        slow_body.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
                          b"Content-Type: multipart/form-data; boundary=x\r\n\r\n--x\r\n")
        for connection in (silent, slow_headers, slow_body):
            connection.settimeout(10)
        assert silent.recv(1024) == b"" and slow_headers.recv(1024) == b""  # closed, after about a second
        stalled = b"".join(iter(lambda: slow_body.recv(4096), b""))  # the answer, then the close
        assert stalled.startswith(b"HTTP/1.1 408") and b"request body stalled: no data for 1 s" in stalled
        pipelined = socket.create_connection(("127.0.0.1", port))
        pipelined.settimeout(10)
        pipelined.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 3)  # three at once, then idle
        answers = b"".join(iter(lambda: pipelined.recv(4096), b""))  # all three, then closed when idle
        assert answers.count(b"HTTP/1.1 200 OK") == 3
        image = {"file": ("a.jpeg", synthetic_images[0].read_bytes())}
        assert httpx.post(f"{url}/v1/predict", files=image, timeout=30).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_an_upload_whose_client_left_is_never_decoded(untrained, synthetic_images, monkeypatch):
    """The client is gone by the time a decoder is free: the file is not decoded and nobody gets an answer."""
    import asyncio

    from pneumo.predict import Predictor

    decoded = []
    monkeypatch.setattr(Predictor, "load", lambda self, *args, **kwargs: decoded.append(args))
    app = create_app(untrained)
    boundary = "xyz"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpeg\"\r\n\r\n".encode()
            + synthetic_images[0].read_bytes() + f"\r\n--{boundary}--\r\n".encode())
    messages = [{"type": "http.request", "body": body, "more_body": False}, {"type": "http.disconnect"}]
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/predict", "raw_path": b"/v1/predict", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
                         (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}
    asyncio.run(app(scope, receive, send))
    assert decoded == [] and sent[0]["status"] == 499


def test_load_on_a_real_server(server, synthetic_images):
    sys.path.insert(0, str(REPO / "benchmarks"))
    from serve_load import run_load

    result = run_load(server, [p.read_bytes() for p in synthetic_images], requests=40, concurrency=4)
    assert result["errors"] == 0 and result["requests"] == 40


@pytest.mark.browser
def test_page_in_chromium(server, synthetic_images, tmp_path):
    """Several files at once (one of them not an image): each gets its card, and /docs renders with no network."""
    from playwright.sync_api import sync_playwright

    from tests.conftest import CHROMIUM_ARGS, chromium_or_skip

    executable = chromium_or_skip()
    bad = tmp_path / "notes.jpeg"
    bad.write_text("not an image")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = browser.new_page()
        external = []
        page.on("request", lambda request: external.append(request.url) if not request.url.startswith(
            (server, "data:")) else None)
        page.goto(server)
        assert "not a diagnostic device" in page.inner_text(".note")
        assert not page.is_visible("#keyline")  # no API key on this server
        page.set_input_files("#file", [str(synthetic_images[-1]), str(bad), str(synthetic_images[0])])
        page.wait_for_function("document.getElementById('status').textContent.startsWith('Done: 3')", timeout=60_000)
        cards = page.query_selector_all(".result")
        assert [c.query_selector(".file").inner_text() for c in cards] == [synthetic_images[-1].name, "notes.jpeg",
                                                                          synthetic_images[0].name]
        first = cards[0]
        predicted = first.query_selector(".class").inner_text()
        assert predicted in ("NORMAL", "Bacterial Pneumonia", "Viral Pneumonia")
        assert len(first.query_selector_all(".bar")) == 3
        assert first.query_selector(".reason").inner_text().startswith("Why: ")
        # The Grad-CAM picture carries its caption and colour scale itself: the page adds no second copy.
        assert not first.query_selector(".caption").is_visible() and first.query_selector(".scale") is None
        page.wait_for_function("document.querySelector('.result .overlay').naturalWidth > 0", timeout=10_000)
        assert "not a recognised image" in cards[1].query_selector(".error").inner_text()
        assert not cards[1].query_selector(".answer").is_visible()
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)

        page.goto(f"{server}/docs")
        page.wait_for_selector(".opblock-summary-path", timeout=30_000)  # Swagger UI rendered from local files
        assert "/v1/predict" in page.inner_text(".swagger-ui")
        assert external == []
        browser.close()


KEY = "k" * 24


@pytest.fixture(scope="module")
def guarded(untrained):
    """A server with every optional guard on."""
    settings = ServerSettings(api_key=KEY, allowed_hosts=("testserver",), cors_origins=("https://viewer.example",),
                              rate_limit=5)
    return TestClient(create_app(untrained, settings=settings))


def test_api_key_is_required_on_the_api_only(guarded, synthetic_images):
    image = {"file": ("a.jpeg", synthetic_images[0].read_bytes())}
    refused = guarded.post("/v1/predict", files=image)
    assert refused.status_code == 401 and refused.json()["error"].startswith("missing or wrong API key")
    assert guarded.post("/v1/predict", files=image, headers={"X-API-Key": KEY[:-1] + "x"}).status_code == 401
    assert guarded.post("/v1/predict", files=image, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert guarded.get("/healthz").status_code == 200
    assert 'id="keyline" >' in guarded.get("/").text  # the page shows its key field


def test_wrong_keys_are_counted_and_slowed_down(untrained):
    from pneumo.serving.app import WRONG_KEYS_PER_MINUTE

    client = TestClient(create_app(untrained, settings=ServerSettings(api_key=KEY)))
    codes = [client.get("/v1/model", headers={"X-API-Key": f"guess-{n:020d}"}).status_code
             for n in range(WRONG_KEYS_PER_MINUTE + 1)]
    assert codes == [401] * WRONG_KEYS_PER_MINUTE + [429]
    assert "too many wrong API keys" in client.get("/v1/model", headers={"X-API-Key": "x" * 24}).json()["error"]
    # Locked out: the right key gets the same refusal, so a guess that hits cannot be told apart.
    assert client.get("/v1/model", headers={"X-API-Key": KEY}).status_code == 429


def test_a_malformed_host_is_refused(guarded):
    refused = guarded.get("/healthz", headers={"Host": "testserver:80@evil.com"})
    assert refused.status_code == 400 and "malformed Host header" in refused.json()["error"]


def test_a_preflight_from_an_allowed_origin_is_answered_before_the_key_check(guarded):
    preflight = guarded.options("/v1/predict", headers={"Origin": "https://viewer.example",
                                                         "Access-Control-Request-Method": "POST",
                                                         "Access-Control-Request-Headers": "x-api-key"})
    assert preflight.status_code == 204 and "X-API-Key" in preflight.headers["access-control-allow-headers"]
    refused = guarded.get("/v1/model", headers={"Origin": "https://viewer.example"})  # no key
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "https://viewer.example"


@pytest.mark.parametrize("host, expected", [("example.org:8000", "example.org"), ("[::1]:8000", "::1"), ("[::1]", "::1"),
                                            ("EXAMPLE.org", "example.org"), ("127.0.0.1:8000", "127.0.0.1"),
                                            # Not a host and port: refused, not guessed at.
                                            ("::1", None), ("127.0.0.1:80@evil.com", None), ("[::1]evil.com", None),
                                            ("localhost:evil", None), ("a b", None), ("", None)])
def test_host_names_are_parsed_with_and_without_ports(host, expected):
    from pneumo.serving.app import _host_name

    assert _host_name(host) == expected


def test_gradcam_without_a_pytorch_bundle_is_a_note_not_an_error(untrained, tmp_path, synthetic_images):
    """An ONNX file served alone answers; its Grad-CAM is said to be unavailable instead of failing the request."""
    import shutil

    from pneumo.export.onnx import export_onnx
    from pneumo.models.bundle import load_bundle

    export_onnx(load_bundle(untrained), tmp_path / "alone" / "model.onnx")
    client = TestClient(create_app(tmp_path / "alone" / "model.onnx"))
    response = client.post("/v1/predict?gradcam=true", files={"file": ("a.jpeg", synthetic_images[0].read_bytes())})
    assert response.status_code == 200 and "gradcam_png" not in response.json()
    assert "Grad-CAM needs the PyTorch bundle" in response.json()["gradcam_unavailable"]
    shutil.rmtree(tmp_path / "alone")


def test_unknown_hosts_and_foreign_origins_are_refused(guarded):
    wrong_host = guarded.get("/healthz", headers={"Host": "evil.example"})
    assert wrong_host.status_code == 400 and "Host 'evil.example' is not served here" in wrong_host.json()["error"]
    foreign = guarded.get("/v1/model", headers={"Origin": "https://evil.example", "X-API-Key": KEY})
    assert foreign.status_code == 403 and "cross-origin requests from https://evil.example" in foreign.json()["error"]
    allowed = guarded.get("/v1/model", headers={"Origin": "https://viewer.example", "X-API-Key": KEY})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://viewer.example"


def test_the_rate_limit_answers_429_with_retry_after(untrained):
    client = TestClient(create_app(untrained, settings=ServerSettings(rate_limit=3)))
    codes = [client.get("/v1/model").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    limited = client.get("/v1/model")
    assert "rate limit of 3 requests a minute" in limited.json()["error"] and int(limited.headers["retry-after"]) >= 1
    assert client.get("/healthz").status_code == 200  # the page and health checks stay open


def test_settings_are_validated():
    with pytest.raises(ValueError, match="at least 16 characters"):
        ServerSettings(api_key="short")
    with pytest.raises(ValueError, match=r"The 'decoders' server setting \(--decoders\) must be >= 1. Got 0 instead."):
        ServerSettings(decoders=0)


def test_concurrent_requests_are_classified_in_batches(untrained, synthetic_images):
    """Eight clients at once: every answer equals the one-by-one answer, and some model calls held several images."""
    from concurrent.futures import ThreadPoolExecutor

    app = create_app(untrained, settings=ServerSettings(batch_wait_ms=50))
    images = [p.read_bytes() for p in synthetic_images]
    with TestClient(app) as client:
        alone = [client.post("/v1/predict", files={"file": (f"{i}.jpeg", data)}).json() for i, data in enumerate(images)]
        with ThreadPoolExecutor(8) as pool:
            together = list(pool.map(lambda item: client.post("/v1/predict", files={"file": (f"{item[0]}.jpeg", item[1])}).json(),
                                     enumerate(images)))
    for one, other in zip(alone, together):
        assert one["class"] == other["class"] and one["probabilities"] == pytest.approx(other["probabilities"], abs=1e-5)
    sizes = app.state.batcher.batch_sizes
    assert max(sizes) > 1 and sum(sizes) == 2 * len(images)
