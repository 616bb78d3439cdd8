"""PNG of one section of an HTML report, with the system Chromium (docs/images/report-revenue.png).

python scripts/report_screenshot.py out/reports/revenue.html movements docs/images/report-revenue.png
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from publishers.site.screenshot import chromium  # noqa: E402


def main(argv: list[str]) -> int:
    html, section, png = Path(argv[0]).resolve(), argv[1], Path(argv[2])
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1100, "height": 900}, device_scale_factor=2)
        page.goto(html.as_uri())
        page.locator(f"section#{section}").screenshot(path=str(png))
    print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
