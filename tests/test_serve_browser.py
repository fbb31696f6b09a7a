"""The chat UI in a real browser: served on 127.0.0.1 with the tiny model, driven by headless Chromium (Debian's
`chromium` + `chromium-driver`). Skipped, with a message, where they are not installed."""

import shutil
import socket

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
WAIT_S = 90  # upper bound for each wait: the page, the upload, one answer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_llava_dir):
    from llavamed_lite.paths import DATA_SAMPLES
    from llavamed_lite.serve.app import build_app, launch

    app = build_app(tiny_llava_dir, examples=[str(DATA_SAMPLES / "xray" / "00000001_000.png")])
    port = free_port()
    launch(app, host="127.0.0.1", port=port, block=False)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("browser test skipped: Chromium and chromedriver are not installed "
                    "(Debian: apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


def _status(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, "status").text


def _wait_status(driver, *words):
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT_S).until(lambda d: any(w in _status(d) for w in words),
                                        message=f"status never showed {words}")
    return _status(driver)


def _upload(driver, path):
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(path))


def _ask(driver, text):
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.CSS_SELECTOR, "#question textarea, #question input")
    box.clear()
    box.send_keys(text)
    driver.find_element(By.ID, "send").click()


def _open(driver, url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, WAIT_S).until(ec.text_to_be_present_in_element((By.ID, "notice"), "not for clinical use"))
    WebDriverWait(driver, WAIT_S).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#upload input[type=file]")))


def test_upload_ask_and_answer_appears(browser, server, tmp_path):
    from selenium.webdriver.common.by import By

    from llavamed_lite.paths import DATA_SAMPLES

    _open(browser, server)
    browser.find_element(By.CSS_SELECTOR, "#examples .thumbnail-item").click()  # the example gallery
    assert "00000001_000.png" in _wait_status(browser, "loaded", "⚠️")
    _upload(browser, DATA_SAMPLES / "xray" / "00027426_000.png")
    assert "00027426_000.png" in _wait_status(browser, "00027426_000.png", "⚠️")
    _ask(browser, "Is there a nodule?")
    assert "Done" in _wait_status(browser, "Done", "⚠️")
    chat_text = browser.find_element(By.ID, "chatbot").text
    browser.save_screenshot(str(tmp_path / "chat.png"))
    assert "Is there a nodule?" in chat_text
    # The answer (random tiny model: any text) sits below the question in the conversation.
    assert chat_text.split("Is there a nodule?", 1)[1].strip()
    assert (tmp_path / "chat.png").stat().st_size > 0


def test_bad_inputs_get_a_message(browser, server, tmp_path, png_header_only):
    _open(browser, server)
    _ask(browser, "What does the image show?")
    assert "No image" in _wait_status(browser, "No image")

    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("this is text, not a PNG")
    _upload(browser, not_an_image)
    assert "not a readable image" in _wait_status(browser, "not a readable image", "Invalid file")

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(20000, 20000))
    _open(browser, server)  # a fresh page: the file input accepts one new file per page
    _upload(browser, bomb)
    assert "decompression bomb" in _wait_status(browser, "decompression bomb", "⚠️")
    browser.save_screenshot(str(tmp_path / "bad_input.png"))

