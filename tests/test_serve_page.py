"""``fewshot serve`` live: its page in a real browser (Debian's headless Chromium driven by
Playwright, never a downloaded browser) and ``fewshot client`` against it."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'fewshot[serve]'")

from serve_support import ServerProcess, image_bytes  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("serve") / "db.sqlite")
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server_and_browser(live_server):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install 'fewshot[test]'")
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (apt-get install chromium); the test never downloads a browser")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield live_server, browser
        browser.close()


@pytest.fixture
def browser_page(server_and_browser, tmp_path):
    server, browser = server_and_browser
    page = browser.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.url + "/")
    yield page, server, tmp_path
    page.close()
    assert errors == [], errors


def write_photos(folder, names_bases):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (seed, base) in names_bases.items():
        path = folder / name
        path.write_bytes(image_bytes(seed, base=base, noise=0.05))
        paths.append(str(path))
    return paths


def test_photos_enrol_gallery_recognise_and_unknown(browser_page):
    page, server, tmp = browser_page
    page.fill("#new-name", "shapes")
    page.select_option("#new-kind", "image")
    page.click("#create-btn")
    page.wait_for_selector("#collections li.active[data-name=shapes]")
    for cls, base in (("circle", 1), ("square", 2)):
        page.fill("#class-name", cls)
        page.set_input_files("#enroll-files", write_photos(tmp / cls, {f"{cls}{i}.png": (10 * base + i, base) for i in range(2)}))
        page.wait_for_selector(f'.cls[data-class="{cls}"] img >> nth=1')
    imgs = page.locator("#gallery img")
    assert imgs.count() == 4
    page.wait_for_function("[...document.querySelectorAll('#gallery img')].every(i => i.complete && i.naturalWidth > 0)")
    page.set_input_files("#rec-files", write_photos(tmp / "q", {"query.png": (77, 2)}))
    result = page.wait_for_selector("#results .result")
    assert result.get_attribute("data-decision") == "class"
    assert page.inner_text("#results .decision") == "square"
    assert page.locator("#results ol li").first.inner_text().startswith("square")
    # a strict threshold set through the API: the page then shows "unknown"
    import httpx

    assert httpx.patch(server.url + "/api/collections/shapes", json={"threshold": 0.9999}).status_code == 200
    page.set_input_files("#rec-files", write_photos(tmp / "q2", {"other.png": (5, 9)}))
    page.wait_for_selector("#results .result[data-decision=unknown]")
    assert page.inner_text("#results .decision") == "unknown"
    page.screenshot(path=str(tmp / "page.png"))


def test_sentences_enrol_and_recognise(browser_page):
    page, server, tmp = browser_page
    page.fill("#new-name", "intents")
    page.select_option("#new-kind", "text")
    page.click("#create-btn")
    page.wait_for_selector("#collections li.active[data-name=intents]")
    for cls, texts in (("greet", "hello there friend\nhi there"), ("card", "my card was stolen\nI lost my card")):
        page.fill("#class-name", cls)
        page.fill("#enroll-texts", texts)
        page.click("#enroll-btn")
        page.wait_for_selector(f'.cls[data-class="{cls}"] .text >> nth=1')
    page.fill("#rec-text", "someone stole my card")
    page.click("#rec-btn")
    page.wait_for_selector("#results .result")
    assert page.inner_text("#results .decision") == "card"
    # an error is shown, not swallowed
    page.fill("#class-name", "")
    page.fill("#enroll-texts", "x")
    page.click("#enroll-btn")
    assert "class name" in page.inner_text("#status")


def test_client_enrolls_a_folder_and_recognises(live_server, tmp_path):
    from click.testing import CliRunner

    from fewshot.cli import main

    for cls, base in (("circle", 1), ("square", 2)):
        write_photos(tmp_path / "faces" / cls, {f"{cls}{i}.png": (10 * base + i, base) for i in range(2)})
    query = write_photos(tmp_path / "q", {"query.png": (31, 1)})[0]
    common = ["--url", live_server.url, "-c", "cli-shapes"]
    r = CliRunner().invoke(main, ["client", "enroll", *common, str(tmp_path / "faces")])
    assert r.exit_code == 0, r.output
    assert "enrolled 4 example(s)" in r.output and "2 classes" in r.output
    r = CliRunner().invoke(main, ["client", "recognize", *common, query])
    assert r.exit_code == 0 and r.output.split("\t")[1] == "circle", r.output
    r = CliRunner().invoke(main, ["client", "recognize", *common, "--text", "hello"])
    assert r.exit_code == 1 and "image collection" in r.output  # a clear error, no traceback
    r = CliRunner().invoke(main, ["client", "recognize", "--url", "http://127.0.0.1:9", "-c", "x", query])
    assert r.exit_code == 1 and "cannot reach" in r.output
