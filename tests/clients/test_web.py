"""The web page in headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by selenium; nothing is
downloaded), against the real gateway, Triton and Milvus. Each test saves a screenshot (into reports/web/ with
VSEARCH_WEB_SHOTS=1)."""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from clients.web.app import MAX_UPLOAD_BYTES
from clients.web.serve import WebServer
from extractors.datasets import load_fashion_mnist, load_photos
from launchers.gateway import GatewayProcess
from launchers.ports import free_port
from tests.fixtures.gateway import png_bytes
from tests.fixtures.models import CNN_MODEL, VIT_MODEL
from visualsearch.v1 import search_pb2 as pb

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)),
                                reason="needs Debian's chromium and chromium-driver (make install)")
# The committed screenshots are refreshed only on request (VSEARCH_WEB_SHOTS=1): a plain test run must not rewrite
# tracked files. Otherwise they go to a temporary folder, still written, so the capture itself is exercised.
SHOTS = (Path(__file__).resolve().parents[2] / "reports" / "web" if os.environ.get("VSEARCH_WEB_SHOTS") == "1"
         else Path(tempfile.mkdtemp(prefix="vsearch-web-shots-")))
OFFSET, N = 4000, 60  # Fashion-MNIST test images no other module indexes
XSS_ID = '<img src=x onerror="window.__xss=1">'
TOKEN = "web-page-secret"
WAIT_S = 60


@pytest.fixture(scope="module")
def indexed(gateway):
    ds = load_fashion_mnist("test").subset(range(OFFSET, OFFSET + N))
    ids = ["web/" + i for i in ds.ids]
    items = [pb.UpsertRequest(model=VIT_MODEL, id=ids[i], image=png_bytes(ds.pil(i)),
                              metadata={"class_name": pb.Value(string_value=ds.classes[ds.labels[i]])})
             for i in range(N - 1)]
    # The last image is stored under an id that is HTML, with HTML in its metadata: both must stay text.
    items.append(pb.UpsertRequest(model=VIT_MODEL, id=XSS_ID, image=png_bytes(ds.pil(N - 1)),
                                  metadata={"class_name": pb.Value(string_value="<b onmouseover=alert(1)>x</b>")}))
    photos = load_photos()
    items += [pb.UpsertRequest(model=CNN_MODEL, id="web/" + photos.ids[i], image=png_bytes(photos.pil(i)))
              for i in range(12)]
    reply = gateway.stub().Upsert(iter(items), timeout=300)
    assert not reply.errors, reply.errors
    return ds, ids, photos


@pytest.fixture(scope="module")
def web(gateway):
    with WebServer(gateway.address, port=free_port()) as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1180,1000",
                "--disable-gpu"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.2).until(lambda d: condition(d), message=what)


def _open(driver, web, token: str = "") -> None:
    driver.get(web.url)
    driver.execute_script("localStorage.setItem('vsearch-token', arguments[0]);", token)
    driver.get(web.url)


def _hits(driver) -> list[dict]:
    """The result cards as the page shows them, read in one script (the grid is re-rendered by each search)."""
    return driver.execute_script("""
        return [...document.querySelectorAll('#results .hit')].map((h) => ({
            id: h.querySelector('.hit-id').textContent, score: h.querySelector('.score').textContent,
            thumb: h.querySelector('.thumb').getAttribute('src') || '',
            meta: h.querySelector('.meta').textContent,
            html_in_id: h.querySelector('.hit-id').children.length + h.querySelector('.meta').children.length}));""")


def _first_id(driver) -> str | None:
    hits = _hits(driver)
    return hits[0]["id"] if hits else None


def _click(driver, index: int, selector: str) -> None:
    driver.execute_script("document.querySelectorAll('#results .hit')[arguments[0]].querySelector(arguments[1])"
                          ".click();", index, selector)


def _upload(driver, path: Path, model: str | None = None) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"), "the model list")
    if model:
        Select(driver.find_element(By.ID, "model")).select_by_value(model)
    driver.find_element(By.ID, "file").send_keys(str(path))


def _shot(driver, name: str) -> None:
    """The page as it is, saved small (a 128-colour palette) for the README."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(SHOTS / name, optimize=True)


def test_fashion_mnist_upload_heatmap_and_click_a_hit(browser, web, indexed, tmp_path):
    from selenium.webdriver.common.by import By

    ds, ids, _ = indexed
    query = tmp_path / "query.png"
    query.write_bytes(png_bytes(ds.pil(3)))
    _open(browser, web)
    _upload(browser, query, VIT_MODEL)
    _wait(browser, lambda d: len(_hits(d)) == 12 and _first_id(d) == ids[3], "12 hits, the image itself first")
    hits = _hits(browser)
    assert all(h["thumb"].startswith("data:image/png;base64,") for h in hits)
    assert float(hits[0]["score"].split()[-1]) > 0.999
    assert "total" in browser.find_element(By.ID, "timings").text
    assert browser.find_element(By.ID, "results").get_attribute("data-renders") == "1"  # one upload, one search
    _shot(browser, "fmnist_upload.png")

    # "why similar?": overlays over the query and over the hit
    _click(browser, 0, ".why")
    overlays = "document.querySelectorAll('#results .hit')[0].querySelectorAll('.overlays:not([hidden]) img')"
    _wait(browser, lambda d: d.execute_script(f"return [...{overlays}].map((i) => i.complete && i.naturalWidth)")
          == [160, 160], "both heatmap overlays")
    _shot(browser, "heatmap.png")

    # a click on a hit searches by its id: the hit comes first among its neighbours
    second_id = hits[1]["id"]
    _click(browser, 1, ".thumb")
    _wait(browser, lambda d: _first_id(d) == second_id and len(_hits(d)) == 12, "the clicked hit's neighbours")
    _shot(browser, "click_hit.png")


def test_a_box_drawn_on_a_mosaic_searches_that_quadrant(browser, web, indexed, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    ds, ids, _ = indexed
    mosaic = Image.new("L", (56, 56))
    for k, (x, y) in enumerate([(0, 0), (28, 0), (0, 28), (28, 28)]):
        mosaic.paste(ds.pil(10 + k).convert("L"), (x, y))
    query = tmp_path / "mosaic.png"
    mosaic.save(query)
    _open(browser, web)
    _upload(browser, query, VIT_MODEL)
    _wait(browser, lambda d: len(_hits(d)) == 12, "the whole mosaic's hits")
    canvas = browser.find_element(By.ID, "box-canvas")
    side = canvas.size["width"]
    # From the image's centre to its bottom-right corner: the bottom-right quadrant.
    ActionChains(browser).move_to_element_with_offset(canvas, 0, 0).click_and_hold() \
        .move_by_offset(side // 2 - 1, side // 2 - 1).release().perform()
    _wait(browser, lambda d: _first_id(d) == ids[13], "the bottom-right image first")
    assert float(_hits(browser)[0]["score"].split()[-1]) > 0.99
    _shot(browser, "region_box.png")


def test_photo_upload(browser, web, indexed, tmp_path):
    _, _, photos = indexed
    i = photos.ids.index("skimage/chelsea.png")
    query = tmp_path / "chelsea.jpg"
    photos.pil(i).convert("RGB").save(query, "JPEG", quality=90)
    _open(browser, web)
    _upload(browser, query, CNN_MODEL)
    # The photo first (other modules of the session may have stored it under their own prefix too).
    _wait(browser, lambda d: len(_hits(d)) == 12 and (_first_id(d) or "").endswith("skimage/chelsea.png"),
          "the photo first")
    assert float(_hits(browser)[0]["score"].split()[-1]) > 0.99
    _shot(browser, "photo_upload.png")


def test_a_photo_dropped_on_the_garment_model_is_searched_with_a_photo_model(browser, web, indexed, tmp_path):
    """A new user's first try: the default (a 28 px garment ViT) chosen, a portrait-sized photo dropped."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _, _, photos = indexed
    query = tmp_path / "astronaut.jpg"
    photos.pil(photos.ids.index("skimage/astronaut.png")).convert("RGB").save(query, "JPEG", quality=90)
    _open(browser, web)
    _upload(browser, query, VIT_MODEL)
    _wait(browser, lambda d: len(_hits(d)) == 12 and (_first_id(d) or "").endswith("skimage/astronaut.png"),
          "the photo first, searched with the photo model")
    assert Select(browser.find_element(By.ID, "model")).first_selected_option.get_attribute("value") == CNN_MODEL
    note = browser.find_element(By.ID, "model-note").text
    assert CNN_MODEL in note and "28 px" in note, note
    options = browser.execute_script("return [...document.querySelectorAll('#model option')].map(o => o.title)")
    assert any("Fashion-MNIST" in t for t in options), options  # what each model was trained on, on hover


def test_a_non_image_upload_shows_the_gateways_message(browser, web, indexed, tmp_path):
    from selenium.webdriver.common.by import By

    text = tmp_path / "notes.txt"
    text.write_text("this is not an image\n")
    _open(browser, web)
    _upload(browser, text, VIT_MODEL)
    error = browser.find_element(By.ID, "error")
    _wait(browser, lambda d: error.is_displayed() and error.text, "an error message")
    assert error.text.startswith("INVALID_ARGUMENT: bytes are not an image")
    _shot(browser, "not_an_image.png")


def test_an_html_id_and_metadata_stay_text(browser, web, indexed, tmp_path):
    ds, _, _ = indexed
    query = tmp_path / "xss.png"
    query.write_bytes(png_bytes(ds.pil(N - 1)))
    _open(browser, web)
    _upload(browser, query, VIT_MODEL)
    _wait(browser, lambda d: _first_id(d) == XSS_ID, "the HTML id, shown as text")
    first = _hits(browser)[0]
    assert first["html_in_id"] == 0  # no element was made from the id or the metadata
    assert "<b onmouseover=alert(1)>x</b>" in first["meta"]
    assert browser.execute_script("return window.__xss === undefined")
    _shot(browser, "html_id_as_text.png")


def _post(url: str, fields: dict[str, str], image: bytes | None = None) -> tuple[int, dict]:
    boundary = "vsearch-test-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    if image is not None:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n".encode() + image + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_openapi_and_grpc_statuses_as_http_statuses(web, indexed):
    with urllib.request.urlopen(web.url + "openapi.json", timeout=10) as reply:
        spec = json.loads(reply.read())
    assert {"/api/search", "/api/models", "/api/examples"} <= set(spec["paths"])
    search = web.url + "api/search"
    assert _post(search, {"model": VIT_MODEL}, b"not an image")[0] == 400
    status, body = _post(search, {"model": VIT_MODEL}, b"not an image")
    assert body["code"] == "INVALID_ARGUMENT" and "not an image" in body["message"]
    status, body = _post(search, {"model": VIT_MODEL, "id": "web/no-such-item"})
    assert (status, body["code"]) == (404, "NOT_FOUND")
    status, body = _post(search, {"model": "no_such_model", "id": "x"})
    assert (status, body["code"]) == (400, "INVALID_ARGUMENT") and "unknown model" in body["message"]
    for bad in ({"filters": '{"label": ["~", 3]}'}, {"filters": "[1]"}, {"region": '["a", 0, 1, 1]'},
                {"region": "[0, 0, 1]"}):  # each a 400 that says what to fix, never a 500
        status, body = _post(search, {"model": VIT_MODEL, "id": "x", **bad})
        assert (status, body["code"]) == (400, "INVALID_ARGUMENT"), (bad, body)
    status, body = _post(search, {"model": VIT_MODEL}, b"\0" * (MAX_UPLOAD_BYTES + 1))
    assert (status, body["code"]) == (413, "RESOURCE_EXHAUSTED") and str(MAX_UPLOAD_BYTES) in body["message"]
    status, body = _post(search, {"model": VIT_MODEL, "id": "web/" + load_fashion_mnist("test").ids[OFFSET],
                                  "explain": "true", "top_k": "3"})
    assert status == 200 and len(body["hits"]) == 3 and body["hits"][0]["explanation"]["grid"] == [4, 4]


def test_a_token_protected_gateway_needs_the_token_once(browser, triton, milvus_server):
    from selenium.webdriver.common.by import By

    env = {"VSEARCH_AUTH_TOKEN": TOKEN, "VSEARCH_AUTH_READS": "true"}
    with GatewayProcess([triton.grpc_url], milvus_server.uri, env=env) as gateway, \
            WebServer(gateway.address, port=free_port()) as web:
        _open(browser, web)
        error = browser.find_element(By.ID, "error")
        _wait(browser, lambda d: error.is_displayed() and error.text, "the missing-token message")
        assert error.text.startswith("UNAUTHENTICATED")
        _shot(browser, "token_missing.png")
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.ID, "token-save").click()
        _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#model option") and not error.is_displayed(),
              "the models, once the token is entered")
        assert browser.execute_script("return localStorage.getItem('vsearch-token')") == TOKEN
