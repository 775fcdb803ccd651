"""The demo page at ``/`` in a real browser, against a real ``jpipe serve`` process.

Playwright for Python drives Debian's ``chromium`` package (``make install`` apt-installs it
with fonts-noto-cjk; ``playwright install`` cannot download a browser here). The server runs
as a subprocess on a free loopback port, on a tiny trained project (both classifiers, the
generator and word2vec vectors: well under a minute on CPU), and is stopped by its PID at teardown.

Each panel is used as a user would (typing, Enter / Ctrl+Enter, clicks) and what the page
shows is checked against the server's own JSON answer for the same input:

- classify: the label bars (label and probabilities per task) and the attention heatmap
  (tokens, weights, the most attended token shaded darkest);
- the model notes: the report's mean ± std over seeds (the figure alone for one seed);
- similarity: the neighbour list and a pair score (source "auto" by default), and an unknown word's error shown inline;
- generate: the streamed text equals the non-streamed text for the same seed, and it arrived
  token by token (the page rendered as many tokens as the server streamed).

Screenshots land in the test's tmp_path. The test skips (never fails) only when chromium is
not installed.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import TINY_GENERATOR_SETTINGS, fast_overrides, run_stage, write_tiny_project

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
STARTUP_SECONDS = 120
TIMEOUT_MS = 30_000
REVIEW = "京都の紅葉は最高です。また寺に行きたい"


# ------------------------------------------------------------------ fixtures: project, server, browser
@pytest.fixture(scope="module")
def chromium_path() -> str:
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (`make install` apt-installs it with fonts-noto-cjk when run as root)")
    return CHROMIUM


@pytest.fixture(scope="module")
def project(tmp_path_factory, chromium_path) -> Path:
    import torch

    torch.set_num_threads(1)
    project = write_tiny_project(tmp_path_factory.mktemp("serve_browser") / "proj", vectors=False)
    run_stage(project, "word2vec", ["word2vec.vector_size=8", "word2vec.epochs=5"])  # a real vector dir (meta.json, words.txt)
    run_stage(project, "train_topic", fast_overrides("topic"))
    run_stage(project, "train_sentiment", fast_overrides("sentiment"))
    run_stage(project, "train_generator", TINY_GENERATOR_SETTINGS)
    write_report(project)
    return project


# The report's figures as the report stage writes them: topic and the generator trained on several
# seeds (the page shows mean ± std and the number of seeds), sentiment on one (the page shows its figure).
REPORT = {
    "topic": {"bilstm_attention": {"macro_f1": 0.5, "seeds": 3, "macro_f1_mean": 0.55, "macro_f1_std": 0.02}},
    "sentiment": {"bilstm_attention": {"macro_f1": 0.4, "seeds": 1, "macro_f1_mean": 0.4, "macro_f1_std": 0.0}},
    "generator": {"lstm": {"perplexity": 90.0, "seeds": 2, "perplexity_mean": 95.5, "perplexity_std": 4.5}},
}


def write_report(project: Path) -> None:
    from pipeline.paths import METRICS

    (project / METRICS).parent.mkdir(parents=True, exist_ok=True)
    (project / METRICS).write_text(json.dumps(REPORT), encoding="utf-8")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(base: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"jpipe serve exited with {process.returncode}:\n{log.read_text(encoding='utf-8')[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    pytest.fail(f"jpipe serve not ready after {STARTUP_SECONDS} s:\n{log.read_text(encoding='utf-8')[-3000:]}")


@pytest.fixture(scope="module")
def server(project, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("serve_log") / "serve.log"
    command = [sys.executable, "-m", "pipeline", "serve", "--models", str(project), "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "w", encoding="utf-8") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=project)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, process, log)
        yield base
    finally:
        process.terminate()  # this PID only: the server we started
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture()
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="ja-JP")
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server + "/")
    page.wait_for_selector("body[data-ready=true]")
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


# ------------------------------------------------------------------ the server's own answers
def api(base: str, path: str, payload: dict | None = None) -> tuple[int, dict]:
    data = None if payload is None else json.dumps(payload).encode("utf-8")
    request = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def streamed_events(base: str, payload: dict) -> list[dict]:
    request = urllib.request.Request(
        base + "/v1/generate", data=json.dumps(payload).encode("utf-8"), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        body = response.read().decode("utf-8")
    return [json.loads(line[5:].strip()) for line in body.splitlines() if line.startswith("data:")]


# ------------------------------------------------------------------ (1) classify
READ_CARDS = """cards => Object.fromEntries(cards.map(card => [card.dataset.task, {
    label: card.dataset.label,
    probabilities: Object.fromEntries([...card.querySelectorAll('.bar-row')].map(r => [r.dataset.label, Number(r.dataset.prob)])),
    tokens: [...card.querySelectorAll('.tok')].map(t => t.textContent),
    weights: [...card.querySelectorAll('.tok')].map(t => Number(t.dataset.weight)),
    shades: [...card.querySelectorAll('.tok')].map(t => Number(getComputedStyle(t).getPropertyValue('--w'))),
}]))"""


def test_classify_panel_shows_the_servers_labels_and_attention(page, server, tmp_path):
    box = page.locator("#classify-text")
    box.fill("")
    box.press_sequentially(REVIEW)
    box.press("Control+Enter")  # the keyboard path: Ctrl+Enter submits the review
    page.wait_for_selector(".task-card[data-task=sentiment] .heatmap .tok")
    page.wait_for_selector(".task-card[data-task=topic] .heatmap .tok")
    shown = page.eval_on_selector_all(".task-card", READ_CARDS)
    page.locator(".task-card[data-task=topic] .tok").first.hover()  # the weight tooltip, in the screenshot
    page.screenshot(path=str(tmp_path / "classify.png"), full_page=True)

    status, answer = api(server, "/v1/classify", {"texts": [REVIEW], "tasks": ["topic", "sentiment"], "explain": True})
    assert status == 200 and answer["results"][0]["error"] is None
    expected = answer["results"][0]["tasks"]
    assert set(shown) == set(expected) == {"topic", "sentiment"}
    for task, result in expected.items():
        on_page = shown[task]
        assert on_page["label"] == result["label"]
        assert on_page["probabilities"] == pytest.approx(result["probabilities"], abs=1e-5)
        assert on_page["tokens"] == result["tokens"] and len(result["tokens"]) >= 3
        assert on_page["weights"] == pytest.approx(result["weights"], abs=1e-5)
        # The heatmap shades by weight: the most attended token is the darkest, the least the lightest.
        weights, shades = result["weights"], on_page["shades"]
        assert shades[weights.index(max(weights))] == max(shades) and shades[weights.index(min(weights))] == min(shades)
        top = page.locator(f".task-card[data-task={task}] .bar-row.top")
        assert top.get_attribute("data-label") == result["label"]
        assert top.locator(".pct").inner_text() == f"{100 * result['probabilities'][result['label']]:.1f}%"


def test_a_text_that_is_not_japanese_keeps_its_label_with_a_yellow_warning(page, server, tmp_path):
    english = "This is an English sentence about Kyoto temples."
    box, results = page.locator("#classify-text"), page.locator("#classify-results")
    box.fill(english)
    page.locator("#classify-submit").click()
    page.wait_for_selector(".task-card[data-task=sentiment] h3 .lang-warning")
    page.screenshot(path=str(tmp_path / "not-japanese.png"), full_page=True)
    status, answer = api(server, "/v1/classify", {"texts": [english], "tasks": ["topic", "sentiment"], "explain": True})
    row = answer["results"][0]
    assert status == 200 and row["error"] is None and row["language"] == "other" and row["warning"].startswith("not Japanese")
    for task in ("topic", "sentiment"):
        card = page.locator(f".task-card[data-task={task}]")
        assert card.get_attribute("data-label") == row["tasks"][task]["label"]  # the label stays
        note = card.locator("h3 .lang-warning")
        assert row["warning"] in note.inner_text() and note.get_attribute("role") == "note"
        assert note.evaluate("n => getComputedStyle(n).backgroundColor") == "rgb(255, 244, 194)"  # the yellow note

    box.fill(REVIEW)  # Japanese: the cards come back without a note
    page.locator("#classify-submit").click()
    page.wait_for_function("text => document.getElementById('classify-results').dataset.text === text", arg=REVIEW)
    assert results.locator(".task-card").count() == 2 and results.locator(".lang-warning").count() == 0


def test_keyboard_focus_order_and_visible_focus(page, server):
    # The task boxes come in the order the server lists its tasks.
    status, models = api(server, "/v1/models")
    expected = [*(f"task-{task}" for task in models["tasks"]), "classify-submit", "similar-word"]
    assert status == 200 and len(expected) == 4
    page.locator("#classify-text").focus()
    order = []
    for _ in range(len(expected)):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.id"))
    assert order == expected
    page.keyboard.press("Shift+Tab")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none"), "the focused button shows no focus ring"


def test_model_notes_show_the_mean_over_seeds_and_similar_defaults_to_auto(page, server):
    classify_note = page.locator("#classify-note").inner_text()
    assert "0.550 ± 0.020 (3 seeds)" in classify_note and "0.500" not in classify_note  # the mean, not the saved seed's 0.500
    assert "0.400" in classify_note and "0.400 ±" not in classify_note  # one seed: the figure alone
    generate_note = page.locator("#generate-note").inner_text()
    assert "95.5 ± 4.5 (2 seeds)" in generate_note and "90.0" not in generate_note
    # The similar-words panel asks for "auto" (ginza, else word2vec) unless the user picks a source.
    options = page.eval_on_selector_all("#similar-source option", "options => options.map(o => o.value)")
    assert page.locator("#similar-source").input_value() == "auto" and options == ["auto", "word2vec"]
    page.locator("#similar-word").fill("京都")
    page.locator("#similar-submit").click()
    page.wait_for_selector(".neighbours li")
    status, answer = api(server, "/v1/similar?" + urllib.parse.urlencode({"word": "京都", "source": "auto"}))
    assert status == 200 and answer["source"] == "word2vec" and "word2vec" in page.locator(".sim-head").inner_text()


# ------------------------------------------------------------------ (2) similarity
def test_similarity_panel_lists_the_servers_neighbours_and_pair_score(page, server, tmp_path):
    source = page.locator("#similar-source").input_value()
    page.locator("#similar-word").fill("京都")
    page.locator("#similar-topn").fill("6")
    page.locator("#similar-word").press("Enter")
    page.wait_for_selector(".neighbours li")
    shown = page.eval_on_selector_all(".neighbours li", "items => items.map(li => [li.dataset.word, Number(li.dataset.score)])")

    query = urllib.parse.urlencode({"word": "京都", "topn": 6, "source": source})
    status, answer = api(server, f"/v1/similar?{query}")
    assert status == 200 and len(answer["neighbours"]) == 6
    assert [word for word, _ in shown] == [n["word"] for n in answer["neighbours"]]
    assert [score for _, score in shown] == pytest.approx([n["score"] for n in answer["neighbours"]], abs=1e-6)

    page.locator("#pair-a").fill("ラーメン")
    page.locator("#pair-b").fill("寺")
    page.locator("#pair-b").press("Enter")
    page.wait_for_selector("#pair-result[data-score]")
    status, pair = api(server, "/v1/similarity", {"pairs": [["ラーメン", "寺"]], "source": source})
    assert status == 200
    assert float(page.locator("#pair-result").get_attribute("data-score")) == pytest.approx(pair["scores"][0], abs=1e-6)
    page.screenshot(path=str(tmp_path / "similar.png"), full_page=True)


def test_errors_are_shown_inline(page, server):
    source = page.locator("#similar-source").input_value()
    page.locator("#similar-word").fill("宇宙船")  # not in the tiny vectors
    page.locator("#similar-submit").click()
    error = page.locator("#similar-error")
    error.wait_for(state="visible")
    status, answer = api(server, "/v1/similar?" + urllib.parse.urlencode({"word": "宇宙船", "topn": 10, "source": source}))
    assert 400 <= status < 500
    assert answer["error"]["code"] in error.inner_text() and answer["error"]["message"] in error.inner_text()
    assert page.locator(".neighbours li").count() == 0

    page.locator("#pair-a").fill("ラーメン")
    page.locator("#pair-b").fill("宇宙船")
    page.locator("#pair-submit").click()
    page.locator("#pair-error").wait_for(state="visible")
    status, pair = api(server, "/v1/similarity", {"pairs": [["ラーメン", "宇宙船"]], "source": source})
    assert status == 200 and pair["scores"] == [None]
    assert pair["errors"][0]["message"] in page.locator("#pair-error").inner_text()

    page.locator("#classify-text").fill("   ")  # a row error: the server answers 200 with an error for that text
    page.locator("#classify-submit").click()
    page.locator("#classify-error").wait_for(state="visible")
    status, answer = api(server, "/v1/classify", {"texts": ["   "], "tasks": ["topic", "sentiment"], "explain": True})
    assert status == 200 and answer["results"][0]["error"]["message"] in page.locator("#classify-error").inner_text()
    assert page.locator(".task-card").count() == 0


# ------------------------------------------------------------------ (3) generate
# Records every text the output shows while streaming, to see the tokens arrive one by one.
# Every render of the output box, from the mutation records themselves: when several tokens arrive in one
# network chunk the page renders each of them within one task, and an observer that read the box's text
# once per callback would see only the last render.
WATCH_OUTPUT = """() => {
    window.__renders = [];
    const out = document.getElementById('gen-output');
    new MutationObserver((records) => {
        for (const record of records) {
            if (record.target === out && record.addedNodes.length) {
                window.__renders.push(Array.from(record.addedNodes, (node) => node.textContent).join(''));
            }
        }
    }).observe(out, {childList: true});
}"""


def test_generator_streams_the_servers_text(page, server, tmp_path):
    settings = {"prompt": "京都の", "temperature": 0.9, "top_k": 20, "top_p": 0.95, "max_tokens": 24, "seed": 11}
    themes = page.eval_on_selector_all("#gen-theme option", "options => options.map(o => o.value).filter(Boolean)")
    theme = "Kyoto" if "Kyoto" in themes else None
    page.locator("#gen-prompt").fill(settings["prompt"])
    for name in ("temperature", "top_k", "top_p", "max_tokens", "seed"):
        page.locator(f"#gen-{name.replace('_', '-')}").fill(str(settings[name]))
    if theme:
        page.locator("#gen-theme").select_option(theme)
    page.evaluate(WATCH_OUTPUT)
    page.locator("#gen-submit").click()  # the mouse path
    page.wait_for_selector("#gen-output[data-state=done]")
    shown = page.locator("#gen-output").inner_text()
    renders = page.evaluate("window.__renders")
    page.screenshot(path=str(tmp_path / "generate.png"), full_page=True)

    payload = {**settings, "theme": theme, "num": 1}
    status, answer = api(server, "/v1/generate", {**payload, "stream": False})
    assert status == 200
    text = answer["text"]
    assert shown == text and text.startswith(settings["prompt"])
    events = streamed_events(server, {**payload, "stream": True})
    tokens = [event["token"] for event in events if "token" in event]
    assert events[-1].get("done") and events[-1]["text"] == text
    # Token by token: the page counted the server's tokens and showed the text growing as they came.
    assert int(page.locator("#gen-output").get_attribute("data-tokens")) == len(tokens) >= 1
    grown = [r for r in dict.fromkeys(renders) if r.startswith(settings["prompt"])]
    assert len(grown) >= min(len(tokens), 3), renders


def test_whole_page_screenshot(page, tmp_path):
    page.locator("#classify-submit").click()
    page.locator("#similar-submit").click()
    page.locator("#gen-submit").click()
    page.wait_for_selector(".task-card .tok")
    page.wait_for_selector(".neighbours li")
    page.wait_for_selector("#gen-output[data-state=done]")
    path = tmp_path / "page.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
