"""The local server: a real subprocess on a free localhost port, spoken to over real HTTP, and its page in a
real headless browser (Debian's chromium, driven by selenium)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import smollm2_gguf

httpx = pytest.importorskip("httpx")
pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] is not installed")

ROOT = Path(__file__).resolve().parents[1]
CTX = 512


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(model: Path, *args: str, headers: dict | None = None):
    """``gguf-tools serve MODEL`` on a free port; (url, process) once /v1/models answers."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gguf_tools.cli", "serve", str(model), "--port", str(port), "--ctx", str(CTX),
         "--threads", "1", *args],
        env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/v1/models", timeout=2, headers=headers).status_code == 200:
                return url, proc
        except httpx.TransportError:
            time.sleep(0.3)
        assert proc.poll() is None, proc.stdout.read()
    proc.kill()
    pytest.fail("the server did not come up in 120 s")


def _stop(proc) -> None:
    proc.send_signal(signal.SIGINT)   # Ctrl-C: uvicorn shuts down cleanly
    assert proc.wait(timeout=30) == 0, proc.stdout.read()


@pytest.fixture(scope="module")
def server():
    model = smollm2_gguf()
    url, proc = _start(model)
    yield url, model.name, proc
    _stop(proc)


def test_a_packed_file_is_served_under_its_own_name_and_an_api_key_is_required_when_set(server, tmp_path):
    from gguf_tools.cli import main

    packed = tmp_path / "smol.ggpk"
    assert main(["pack", str(smollm2_gguf()), "-o", str(packed), "--threads", "2"]) == 0
    key = {"Authorization": "Bearer s3cret"}
    url, proc = _start(packed, "--api-key", "s3cret", headers=key)
    try:
        assert httpx.get(url + "/v1/models").status_code == 401
        assert [m["id"] for m in httpx.get(url + "/v1/models", headers=key).json()["data"]] == ["smol.ggpk"]
        r = httpx.post(url + "/v1/completions", json={"prompt": "The capital of France is", "max_tokens": 8,
                                                      "temperature": 0}, headers=key, timeout=120)
        assert r.status_code == 200 and "Paris" in r.json()["choices"][0]["text"]
    finally:
        _stop(proc)


def _chat(text: str, **kw) -> dict:
    return {"messages": [{"role": "user", "content": text}], "temperature": 0, "max_tokens": 16, **kw}


def _stream(url: str, body: dict, pieces: list[str], first: threading.Event | None = None) -> None:
    with httpx.stream("POST", url + "/v1/chat/completions", json={**body, "stream": True}, timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                delta = json.loads(line[6:])["choices"][0]["delta"]
                if delta.get("content"):
                    pieces.append(delta["content"])
                    if first is not None:
                        first.set()


def test_models_lists_the_file_and_non_streaming_chat_answers(server):
    url, name, _ = server
    assert [m["id"] for m in httpx.get(url + "/v1/models").json()["data"]] == [name]
    r = httpx.post(url + "/v1/chat/completions", json=_chat("What is 2 + 2? Answer with a number.", model=name),
                   timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    assert "4" in body["choices"][0]["message"]["content"] and body["usage"]["completion_tokens"] <= 16
    r = httpx.post(url + "/v1/completions", json={"prompt": "The capital of France is", "max_tokens": 8,
                                                  "temperature": 0}, timeout=120)
    assert r.status_code == 200 and "Paris" in r.json()["choices"][0]["text"]


def test_a_second_request_waits_for_the_stream_before_it_and_both_complete(server):
    url, _, _ = server
    first, started = [], threading.Event()
    t = threading.Thread(target=_stream, args=(url, _chat("Tell me a story about a cat.", max_tokens=48), first,
                                               started))
    t.start()
    assert started.wait(120)
    second: list[str] = []
    _stream(url, _chat("What is the capital of France?"), second)
    t.join(120)
    assert len(first) > 10 and "".join(second).strip()


@pytest.mark.parametrize("body, status, code", [
    (b"{not json", 400, "invalid_json"),
    (json.dumps(_chat("hi", model="no-such-model")).encode(), 404, "model_not_found"),
    (json.dumps(_chat("hi", max_tokens=-5)).encode(), 400, "invalid_value"),
    (json.dumps(_chat("word " * 2000)).encode(), 400, "context_length_exceeded"),
])
def test_bad_requests_get_a_4xx_json_error_and_the_server_stays_up(server, body, status, code):
    url, _, proc = server
    r = httpx.post(url + "/v1/chat/completions", content=body, headers={"content-type": "application/json"},
                   timeout=120)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert proc.poll() is None and httpx.get(url + "/v1/models").status_code == 200


def test_the_page_is_served_whole_with_no_outside_resources(server):
    url, _, _ = server
    r = httpx.get(url + "/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "/v1/chat/completions" in r.text and "http" not in r.text.replace("http://host:port", "")
    assert httpx.get(url + "/info").json() == {"model": server[1], "n_ctx": CTX}


def _chromium():
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_the_page_in_a_headless_browser_streams_an_answer_and_stops_it(server, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    browser, driver_bin = _chromium(), shutil.which("chromedriver")
    if browser is None or driver_bin is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, name, _ = server
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,700"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_bin))
    try:
        driver.get(url + "/")
        wait = WebDriverWait(driver, 120)
        wait.until(lambda d: d.find_element(By.ID, "model").text == name)
        box = driver.find_element(By.ID, "input")
        box.send_keys("Write a long story about a lighthouse keeper.")
        driver.find_element(By.ID, "send").click()
        wait.until(lambda d: len(d.find_element(By.CSS_SELECTOR, ".msg.assistant").text.split()) >= 5)
        driver.find_element(By.ID, "stop").click()
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".msg.assistant").get_attribute("data-done") == "true")
        wait.until(lambda d: not d.find_element(By.ID, "ctx").text.startswith("context ≈ 0 "))  # counted again
        driver.save_screenshot(str(tmp_path / "page.png"))
        answer = driver.find_element(By.CSS_SELECTOR, ".msg.assistant")
        assert len(answer.text.split()) >= 5 and "error" not in answer.get_attribute("class")
        assert driver.find_element(By.ID, "stop").get_attribute("disabled") == "true"
        assert driver.find_element(By.CSS_SELECTOR, ".msg.user").text.startswith("Write a long story")
        assert f"/ {CTX} tokens" in driver.find_element(By.ID, "ctx").text
        assert (tmp_path / "page.png").stat().st_size > 1000
    finally:
        driver.quit()
