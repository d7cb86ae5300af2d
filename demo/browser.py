"""Drive the demo page in headless Chromium with Playwright (the browser test and ``docs/demo.png``).

Command line (needs the ``dev`` extra and the system Chromium, ``apt-get install -y chromium``)::

    python -m demo.browser OUT.png [--image IMAGE]

serves the demo on a free loopback port, uploads IMAGE (default: BSDS500 test image 100007),
presses *Segment*, prints the segment count and the seconds from upload to result, and saves a
screenshot of the page to OUT.png. The browser test also drives the hierarchy slider, clicks a
segment and reads the page's images and downloads with the helpers here.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import gradio as gr
import numpy as np
from PIL import Image
from playwright.sync_api import Page, expect, sync_playwright

from binmap_tf.common.paths import data_root
from demo.app import build_app, launch, make_source

CHROMIUM = "/usr/bin/chromium"
# Playwright's browser download does not work on closed networks, so the system Chromium runs
# instead; without the background-networking flags it stalls on connections it cannot make.
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync")
INSTALL_HINT = "install it as root with: apt-get update && apt-get install -y chromium"
DEFAULT_IMAGE = "bsds500/images/test/100007.jpg"  # under binmap_tf.common.paths.data_root()
SEGMENTS_PATTERN = re.compile(r"(\d+) segments")


def chromium_path() -> str:
    """Path of the system Chromium; ``FileNotFoundError`` saying how to install it when it is missing."""
    if not Path(CHROMIUM).is_file():
        raise FileNotFoundError(f"the browser test drives the system Chromium at {CHROMIUM}, which is missing; "
                                f"{INSTALL_HINT}")
    return CHROMIUM


def free_port() -> int:
    """A TCP port that is free on the loopback interface right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serve(app: gr.Blocks) -> Iterator[str]:
    """Serve ``app`` from this process on a free loopback port; yield its URL and close it afterwards."""
    port = free_port()
    launch(app, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()


@contextlib.contextmanager
def chromium_page(width: int = 1400, height: int = 1000) -> Iterator[Page]:
    """A page of a headless system Chromium with a ``width`` x ``height`` viewport."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=list(CHROMIUM_ARGS))
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


@dataclass
class BrowserRun:
    """What the page showed after one upload and *Segment*."""

    n_segments: int  # read from the summary line
    summary: str
    seconds: float  # from choosing the file to the segment image and count being shown


def upload(page: Page, image: str | Path) -> None:
    """Choose ``image`` in the page's upload field and wait until it has been sent to the server."""
    page.locator("#input-image input[type=file]").set_input_files(str(image))
    page.locator("#input-image img").first.wait_for()


def summary_after(page: Page, pattern: str | re.Pattern, timeout_s: float = 300.0) -> str:
    """The summary text once it matches ``pattern``."""
    summary = page.locator("#summary")
    expect(summary).to_contain_text(pattern, timeout=timeout_s * 1000)
    return summary.inner_text()


def segment_in_page(page: Page, url: str, image: str | Path, timeout_s: float = 300.0) -> BrowserRun:
    """Open ``url``, upload ``image``, press *Segment* and read the result; times upload to result."""
    page.goto(url)
    start = time.perf_counter()
    upload(page, image)
    page.locator("#run").click()
    page.locator("#segments img").first.wait_for(timeout=timeout_s * 1000)
    text = summary_after(page, SEGMENTS_PATTERN, timeout_s)
    seconds = time.perf_counter() - start
    return BrowserRun(n_segments=int(SEGMENTS_PATTERN.search(text).group(1)), summary=text, seconds=seconds)


def set_segment_count(page: Page, count: int, timeout_s: float = 300.0) -> tuple[str, float]:
    """Move the hierarchy slider to ``count`` segments (typed into its box, then released as a drag
    would) and wait for the page to show them; return the summary and the seconds it took."""
    box = page.locator("#segments-count input[type=number]")
    box.fill(str(count))
    start = time.perf_counter()
    box.blur()  # the slider's release: the page re-cuts the stored tree
    text = summary_after(page, re.compile(rf"\b{count} segments merged .* cut at the number of segments asked for"),
                         timeout_s)
    return text, time.perf_counter() - start


def fetch(page: Page, url: str) -> bytes:
    """The bytes behind a URL the page shows (a file the server serves, or a ``data:`` URL)."""
    if url.startswith("data:"):
        return base64.b64decode(url.split(",", 1)[1])
    response = page.request.get(url)
    if not response.ok:
        raise RuntimeError(f"{url}: HTTP {response.status}")
    return response.body()


def shown_image(page: Page, element: str) -> tuple[np.ndarray, str]:
    """The image the page shows in ``element`` (an elem_id, ``#segments``) as uint8 RGB, and its URL."""
    url = page.locator(f"{element} img").first.get_attribute("src")
    return np.asarray(Image.open(io.BytesIO(fetch(page, url))).convert("RGB")), url


def click_pixel(page: Page, element: str, x: int, y: int) -> None:
    """Click image pixel (column ``x``, row ``y``) of the image in ``element``, wherever the page scaled
    and placed it (``object-fit: contain``)."""
    image = page.locator(f"{element} img").first
    natural_width, natural_height, width, height = image.evaluate(
        "e => [e.naturalWidth, e.naturalHeight, e.clientWidth, e.clientHeight]")
    scale = min(width / natural_width, height / natural_height)
    left, top = (width - natural_width * scale) / 2, (height - natural_height * scale) / 2
    image.click(position={"x": left + (x + 0.5) * scale, "y": top + (y + 0.5) * scale})


def selected_row(page: Page, previous: dict[str, str] | None = None, timeout_s: float = 60.0) -> dict[str, str]:
    """The selected segment's row of the region table (column -> text) once the page shows one other
    than ``previous`` (the table fills in after the highlighted image)."""
    # The shown cells of the first row (the table also keeps a hidden copy to size its columns).
    headers, cells = page.locator("#segment-row thead th"), page.locator('#segment-row [data-testid^="cell-0-"]')
    deadline = time.perf_counter() + timeout_s
    while True:
        row = dict(zip(headers.all_inner_texts(), cells.all_inner_texts()))
        if row and all(row.values()) and row != previous:
            return row
        if time.perf_counter() > deadline:
            raise TimeoutError(f"no new row of the selected segment within {timeout_s} s (last: {row})")
        page.wait_for_timeout(100)


def download_links(page: Page) -> dict[str, str]:
    """The files offered for download: file name -> URL."""
    links = page.locator("#downloads a")
    urls = [links.nth(i).get_attribute("href") for i in range(links.count())]
    return {url.rsplit("/", 1)[-1]: url for url in urls}


def main(argv: list[str] | None = None) -> int:
    """Command line: segment one image in the served demo and save a screenshot of the page."""
    parser = argparse.ArgumentParser(prog="python -m demo.browser", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="PNG file for the screenshot")
    parser.add_argument("--image", type=Path, default=None, help=f"image to upload (default: <data>/{DEFAULT_IMAGE})")
    args = parser.parse_args(argv)
    image = args.image or data_root() / DEFAULT_IMAGE
    with serve(build_app(make_source(None))) as url, chromium_page() as page:
        run = segment_in_page(page, url, image)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out), full_page=True)
    print(f"{run.n_segments} segments; {run.seconds:.1f} s from upload to result; screenshot: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
