"""Open the built documentation site in headless Chromium, as a reader would, and check that it renders.

    mkdocs build --strict --site-dir SITE && python .ci/check_site.py SITE [--screenshot PNG]

The site is served on 127.0.0.1 and every page of its navigation is opened with every request off this
machine refused. Each page must answer, carry its title and the navigation, and draw every image it shows;
the home page and the math page must draw their equations (MathML elements with a size on the page), the API
page must list `pyro_vae.train`. Exit 0 when all pass, 1 with one line per failure otherwise.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import shutil
import sys
import threading
from pathlib import Path

from playwright.sync_api import sync_playwright

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
MATH_PAGES = ("", "math/")  # the pages whose equations must be drawn


def serve(site: Path) -> http.server.ThreadingHTTPServer:
    """The site on a free port of 127.0.0.1, served from a background thread."""
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        """No line per request."""


def nav_pages(page) -> list[str]:
    """The site-relative paths of every page the navigation links to."""
    hrefs = page.eval_on_selector_all("nav.md-nav--primary a.md-nav__link[href]", "links => links.map(a => a.href)")
    base = page.url
    return sorted({h.split("#")[0][len(base) :] for h in hrefs if h.startswith(base)})


def page_failures(page, url: str, path: str) -> list[str]:
    """What is wrong with one page, as it renders."""
    response = page.goto(url + path, wait_until="load")
    if response is None or response.status != 200:
        return [f"{path or '/'}: HTTP {response.status if response else 'no response'}"]
    failures = []
    if "pyro-vae" not in page.title():
        failures.append(f"{path or '/'}: title {page.title()!r} does not name the site")
    if page.locator("nav.md-nav--primary a.md-nav__link").count() < 10:
        failures.append(f"{path or '/'}: the navigation is missing")
    broken = page.eval_on_selector_all(
        "article img", "imgs => imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
    )
    failures += [f"{path or '/'}: image not drawn: {src}" for src in broken]
    if path in MATH_PAGES:
        sizes = page.eval_on_selector_all("article math", "ms => ms.map(m => m.getBoundingClientRect().width)")
        if not sizes or min(sizes) <= 0:
            failures.append(f"{path or '/'}: equations not drawn ({len(sizes)} MathML elements, widths {sizes[:3]})")
    if path == "api/" and page.locator("h2#pyro_vae\\.train").count() != 1:
        failures.append("api/: pyro_vae.train is not in the API reference")
    return failures


def check(site: Path, screenshot: Path | None) -> list[str]:
    """Every failure over the whole site."""
    browser_path = next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)
    if browser_path is None:
        return [f"no Chromium found (looked for {', '.join(BROWSERS)}); install it, e.g. apt-get install chromium"]
    server = serve(site)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(url) else route.abort())
            page.goto(url, wait_until="load")
            paths = nav_pages(page)
            failures = [] if len(paths) >= 20 else [f"the navigation lists {len(paths)} pages; expected 20 or more"]
            for path in paths:
                failures += page_failures(page, url, path)
            if screenshot is not None:
                page.goto(url + "math/", wait_until="load")
                page.screenshot(path=str(screenshot))
            browser.close()
            print(f"checked {len(paths)} pages of {site} in {Path(browser_path).name}: {len(failures)} failure(s)")
            return failures
    finally:
        server.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", type=Path, help="the folder mkdocs built")
    parser.add_argument("--screenshot", type=Path, help="also save the math page as this PNG")
    args = parser.parse_args()
    failures = check(args.site, args.screenshot)
    for line in failures:
        print(f"error: {line}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
