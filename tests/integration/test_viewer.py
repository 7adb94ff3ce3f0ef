"""The token surprisal viewer (``GET /``) driven in a real headless Chromium against the
real server: the spans, the header's PPL and the alternatives agree with the API, the
browser logs no error, and screenshots are kept as test artifacts."""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_process import RunningServer, start_server, stop_server

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = Path(os.environ.get("LMSCORE_TEST_ARTIFACTS", "test-artifacts"))
TEXT = "The capital of France is Paris. Colourless green ideas sleep furiously."
# A hand-made reference profile of bits per char on the default model.
PROFILE = {
    "model": "default",
    "metric": "bits_per_char",
    "quantiles": [[0.0, 0.5], [0.5, 1.0], [1.0, 2.0]],
    "threshold": 1.2,
    "count": 3,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    log = tmp_path_factory.mktemp("viewer-log") / "server.log"
    folder = tmp_path_factory.mktemp("viewer")
    models = ["--model", "default=default", "--model", "twin=default"]
    flags = ["--dtype", "float32", "--max-context", "4096", *models]
    first = start_server(flags, folder / "first.log")  # to learn the served revision
    revision = httpx.get(first.url + "/v1/models").json()["data"][0]["revision"]
    stop_server(first)
    profile = folder / "prose.json"
    profile.write_text(json.dumps(PROFILE | {"revision": revision}))
    running = start_server([*flags, "--reference", f"prose={profile}"], log)
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(
            "Chromium is not installed: apt-get install chromium chromium-driver "
            "(`make system-deps`, which `make test` and CI run as root)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    yield driver
    driver.quit()


def screenshot(browser: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"viewer-{name}.png"))


def severe_console_entries(browser: Any) -> list[dict[str, Any]]:
    return [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def wait_rendered(browser: Any, count: int) -> list[Any]:
    try:
        WebDriverWait(browser, 120).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, ".tokens[data-rendered=true]")) >= count
        )
    except TimeoutException:
        state = browser.execute_script(
            "return [document.querySelectorAll('.tok').length,"
            " document.getElementById('error').textContent, document.getElementById('text').value.length]"
        )
        raise AssertionError(f"the results did not render: {state}") from None
    return browser.find_elements(By.CSS_SELECTOR, ".tokens")


def open_page(browser: Any, server: RunningServer) -> None:
    """Load the page and wait for its model picker (both served models)."""
    browser.get(server.url + "/")
    WebDriverWait(browser, 30).until(
        lambda d: len(Select(d.find_element(By.ID, "model")).options) == 2
    )


def test_page_scores_a_text_like_the_api(server: RunningServer, browser: Any) -> None:
    open_page(browser, server)
    box = browser.find_element(By.ID, "text")
    box.clear()
    box.send_keys(TEXT)
    browser.find_element(By.ID, "score").click()
    panel = wait_rendered(browser, 1)[0]

    api = httpx.post(
        server.url + "/v1/score/text",
        json={"model": "default", "texts": [TEXT], "return_tokens": True, "top_k": 5},
    ).json()["results"][0]
    spans = panel.find_elements(By.CSS_SELECTOR, ".tok")
    assert len(spans) == api["num_tokens"]
    ppl = browser.find_element(By.CSS_SELECTOR, "[data-stat=ppl]")
    assert float(ppl.get_attribute("data-value")) == pytest.approx(api["ppl"], rel=1e-9)

    ActionChains(browser).move_to_element(spans[5]).perform()
    tip = browser.find_element(By.ID, "tip")
    WebDriverWait(browser, 10).until(expected_conditions.visibility_of(tip))
    rows = tip.find_elements(By.CSS_SELECTOR, ".alternatives tr")
    assert len(rows) == 1 + 5  # the header and the top 5
    assert api["tokens"][5]["top"][0]["text"] in tip.text
    screenshot(browser, "text")
    assert severe_console_entries(browser) == []


def test_keyboard_focus_shows_details_and_ctrl_enter_scores(
    server: RunningServer, browser: Any
) -> None:
    open_page(browser, server)
    box = browser.find_element(By.ID, "text")
    box.send_keys("Keyboard users score with Ctrl+Enter.")
    box.send_keys(Keys.CONTROL, Keys.ENTER)
    panel = wait_rendered(browser, 1)[0]
    first_scored = panel.find_elements(By.CSS_SELECTOR, ".tok")[2]
    browser.execute_script("arguments[0].focus()", first_scored)
    tip = browser.find_element(By.ID, "tip")
    WebDriverWait(browser, 10).until(expected_conditions.visibility_of(tip))
    assert "rank" in tip.text
    assert severe_console_entries(browser) == []


def test_two_models_side_by_side_with_a_difference_panel(
    server: RunningServer, browser: Any
) -> None:
    open_page(browser, server)
    Select(browser.find_element(By.ID, "model-b")).select_by_value("twin")
    browser.find_element(By.ID, "text").send_keys(TEXT)
    browser.find_element(By.ID, "score").click()
    panels = wait_rendered(browser, 3)  # a, b, and b - a (same tokenizer)
    counts = {len(p.find_elements(By.CSS_SELECTOR, ".tok")) for p in panels}
    assert len(counts) == 1
    assert_no_difference(panels[2])  # the twin is the same model
    # Its header gives differences, not the second model's own figures.
    stats = panels[2].find_element(By.XPATH, "..").find_elements(By.CSS_SELECTOR, ".stat")
    assert [s.get_attribute("data-stat") for s in stats] == ["bits_per_char_difference"]
    assert abs(float(stats[0].get_attribute("data-value"))) < 1e-3
    screenshot(browser, "compare")
    # Whatever the view, the difference panel subtracts like from like.
    browser.find_element(By.ID, "colour-entropy").click()
    assert_no_difference(wait_rendered(browser, 3)[2])
    browser.find_element(By.ID, "unit-word").click()
    panels = wait_rendered(browser, 3)
    assert panels[2].find_elements(By.CSS_SELECTOR, ".tok.word")
    assert_no_difference(panels[2])
    assert severe_console_entries(browser) == []


def assert_no_difference(panel: Any) -> None:
    """Every scored span of a difference panel shows ~0 bits (two copies of one model)."""
    values = browser_values(panel)
    assert values
    assert max(abs(v) for v in values) < 1e-3


def browser_values(panel: Any) -> list[float]:
    raw = panel.parent.execute_script(
        "return [...arguments[0].querySelectorAll('.tok[data-value]')].map(s => s.dataset.value)",
        panel,
    )
    return [float(v) for v in raw]


def test_chat_mode_and_api_errors(server: RunningServer, browser: Any) -> None:
    open_page(browser, server)
    browser.find_element(By.CSS_SELECTOR, "input[name=mode][value=chat]").click()
    browser.find_element(By.ID, "score").click()
    panel = wait_rendered(browser, 1)[0]
    assert panel.find_elements(By.CSS_SELECTOR, ".tok.unscored")  # the user turn
    conversation = [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris."},
    ]
    api = httpx.post(
        server.url + "/v1/score/chat",
        json={"conversations": [conversation], "return_tokens": True},
    ).json()["results"][0]
    assert len(panel.find_elements(By.CSS_SELECTOR, ".tok")) == api["num_tokens"]
    screenshot(browser, "chat")

    browser.find_element(By.CSS_SELECTOR, "input[name=mode][value=text]").click()
    browser.execute_script(  # over the 4096-token context
        "document.getElementById('text').value = arguments[0]", "word " * 5000
    )
    browser.find_element(By.ID, "score").click()
    error = browser.find_element(By.ID, "error")
    WebDriverWait(browser, 30).until(expected_conditions.visibility_of(error))
    assert "context" in error.text
    assert not browser.find_element(By.ID, "results").is_displayed()  # not the last text's
    # The API answered 422 on purpose; the page logs no error of its own.
    own = [e for e in severe_console_entries(browser) if "422" not in e["message"]]
    assert own == []


def test_a_character_split_across_tokens_is_one_span_with_their_summed_surprisal(
    server: RunningServer, browser: Any
) -> None:
    """Byte-level BPE cuts 中 and 🚀 into pieces without text of their own: each character
    is one visible span (none of zero width), coloured by the sum of its pieces' bits."""
    text = "Hello 中文 and 🚀 rockets"
    open_page(browser, server)
    browser.execute_script("document.getElementById('text').value = arguments[0]", text)
    browser.find_element(By.ID, "score").click()
    panel = wait_rendered(browser, 1)[0]
    tokens = httpx.post(
        server.url + "/v1/score/text", json={"texts": [text], "return_tokens": True}
    ).json()["results"][0]["tokens"]
    assert any(t["text"] == "" for t in tokens)  # the embedded tokenizer does split them
    expected, bits = [], 0.0
    for token in tokens:
        bits += -token["logprob"] / math.log(2) if token["logprob"] is not None else math.nan
        if token["text"]:
            expected.append((token["text"], bits))
            bits = 0.0
    spans = browser.execute_script(
        "return [...arguments[0].querySelectorAll('.tok')].map(s =>"
        " [s.textContent, s.dataset.value === undefined ? null : Number(s.dataset.value),"
        "  s.getBoundingClientRect().width])",
        panel,
    )
    assert [s[0] for s in spans] == [text for text, _ in expected]
    assert all(width > 0 for _, _, width in spans)
    for (_, value, _), (_, want) in zip(spans[1:], expected[1:], strict=True):
        assert value == pytest.approx(want, rel=1e-6)
    assert severe_console_entries(browser) == []


def test_one_request_at_a_time(server: RunningServer, browser: Any) -> None:
    """Ctrl+Enter while a request is out sends nothing more: two answers could come back
    in either order and show an older text's scores."""
    open_page(browser, server)
    browser.execute_script(
        "window.scoreCalls = 0; const real = window.fetch;"
        " window.fetch = (path, init) => {"
        "   if (String(path).startsWith('/v1/score')) window.scoreCalls += 1;"
        "   return real(path, init); };"
    )
    box = browser.find_element(By.ID, "text")
    box.send_keys(TEXT)
    browser.find_element(By.ID, "score").click()
    for _ in range(3):
        box.send_keys(Keys.CONTROL, Keys.ENTER)
    wait_rendered(browser, 1)
    assert browser.execute_script("return window.scoreCalls") == 1
    assert severe_console_entries(browser) == []


def test_a_long_document_renders_every_token(server: RunningServer, browser: Any) -> None:
    text = ("The committee met on Tuesday and agreed to postpone the vote. " * 200).strip()
    open_page(browser, server)
    browser.execute_script("document.getElementById('text').value = arguments[0]", text)
    browser.find_element(By.ID, "score").click()
    panel = wait_rendered(browser, 1)[0]
    api = httpx.post(server.url + "/v1/score/text", json={"texts": [text]}, timeout=300).json()[
        "results"
    ][0]
    count = browser.execute_script("return arguments[0].querySelectorAll('.tok').length", panel)
    assert count == api["num_tokens"] > 2000


def test_profile_adds_percentile_and_outlier_flag(server: RunningServer, browser: Any) -> None:
    open_page(browser, server)
    WebDriverWait(browser, 10).until(
        lambda d: len(Select(d.find_element(By.ID, "profile")).options) == 2
    )
    Select(browser.find_element(By.ID, "profile")).select_by_value("prose")
    browser.find_element(By.ID, "text").send_keys(TEXT)
    browser.find_element(By.ID, "score").click()
    wait_rendered(browser, 1)
    # The page's own options (tokens, top 5): the same computation, so the same floats.
    # Without top-k the head is reduced by vocabulary slices, another rounding.
    api = httpx.post(
        server.url + "/v1/score/text",
        json={"texts": [TEXT], "reference": "prose", "return_tokens": True, "top_k": 5},
        timeout=300,
    ).json()["results"][0]
    shown = browser.find_element(By.CSS_SELECTOR, "[data-stat=percentile]")
    assert float(shown.get_attribute("data-value")) == pytest.approx(api["percentile"])
    assert bool(browser.find_elements(By.CSS_SELECTOR, ".outlier")) == api["is_outlier"]
    assert severe_console_entries(browser) == []


def test_word_view_and_entropy_colouring(server: RunningServer, browser: Any) -> None:
    open_page(browser, server)
    browser.find_element(By.ID, "text").send_keys(TEXT)
    browser.find_element(By.ID, "score").click()
    panel = wait_rendered(browser, 1)[0]
    surprisal_colours = [
        s.value_of_css_property("background-color")
        for s in panel.find_elements(By.CSS_SELECTOR, ".tok")
    ]
    browser.find_element(By.ID, "colour-entropy").click()
    panel = wait_rendered(browser, 1)[0]
    entropy_colours = [
        s.value_of_css_property("background-color")
        for s in panel.find_elements(By.CSS_SELECTOR, ".tok")
    ]
    assert len(entropy_colours) == len(surprisal_colours)
    assert entropy_colours != surprisal_colours
    browser.find_element(By.ID, "unit-word").click()
    panel = wait_rendered(browser, 1)[0]
    api = httpx.post(
        server.url + "/v1/score/text", json={"texts": [TEXT], "words": True}, timeout=300
    ).json()["results"][0]
    assert len(panel.find_elements(By.CSS_SELECTOR, ".tok.word")) == len(api["words"])
    screenshot(browser, "words")
    assert severe_console_entries(browser) == []


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("viewer-keyed")
    keys = folder / "keys.txt"
    keys.write_text("viewer-key\n")
    flags = ["--dtype", "float32", "--max-context", "512", "--api-keys-file", str(keys)]
    running = start_server(flags, folder / "server.log")
    yield running
    stop_server(running)


def test_with_auth_on_the_key_typed_in_the_page_is_used(
    keyed_server: RunningServer, browser: Any
) -> None:
    # The model list needs the key too, so the picker starts empty: the Score button must
    # still submit (an empty picker once blocked the form) and list the models with the key.
    browser.get(keyed_server.url + "/")
    error = browser.find_element(By.ID, "error")
    WebDriverWait(browser, 30).until(expected_conditions.visibility_of(error))
    assert "API key" in error.text
    browser.find_element(By.ID, "text").send_keys(TEXT)
    browser.find_element(By.ID, "api-key").send_keys("wrong-key")
    browser.find_element(By.ID, "score").click()
    WebDriverWait(browser, 30).until(lambda d: "401" in error.text or "key" in error.text)
    assert not browser.find_element(By.ID, "results").is_displayed()

    key_box = browser.find_element(By.ID, "api-key")
    key_box.clear()
    key_box.send_keys("viewer-key")
    browser.find_element(By.ID, "score").click()
    panel = wait_rendered(browser, 1)[0]
    api = httpx.post(
        keyed_server.url + "/v1/score/text",
        json={"texts": [TEXT]},
        headers={"Authorization": "Bearer viewer-key"},
    ).json()["results"][0]
    assert len(panel.find_elements(By.CSS_SELECTOR, ".tok")) == api["num_tokens"]
    assert (
        Select(browser.find_element(By.ID, "model")).first_selected_option.get_attribute("value")
        == "default"
    )
