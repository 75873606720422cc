#!/usr/bin/env python
"""The README's pictures, from a real ``interp-toolkit analyze`` run.

    interp-toolkit analyze "PROMPT" --out reports/analyze.html --json reports/analyze.json
    python scripts/readme_images.py reports/analyze.json reports/analyze.html   # -> docs/img/*.png

Writes one figure per section (the toolkit's own plots) and a headless-Chromium screenshot of
the HTML report (top part, with the circuitsvis widgets drawn), each a small palette PNG.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from interp_toolkit.analyze import attention  # noqa: F401  (registers the result kinds)
from interp_toolkit.core import load_result
from interp_toolkit.core.figures import figure_bytes

OUT = Path(__file__).resolve().parents[1] / "docs" / "img"


def save_png(img: Image.Image, path: Path, width: int, colours: int = 128) -> Path:
    """Downscale to ``width`` and store as an optimised palette PNG."""
    if img.width > width:
        img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
    img.convert("RGB").quantize(colours, method=Image.MEDIANCUT).save(path, optimize=True)
    print(f"{path}: {path.stat().st_size // 1024} KB")
    return path


def figure_png(fig, path: Path, width: int = 700) -> Path:
    return save_png(Image.open(io.BytesIO(figure_bytes(fig, "png", dpi=100))), path, width)


def screenshot(html_path: Path, path: Path, height: int, width: int = 1150, keep: int = 0) -> Path:
    """Chromium's rendering of the page (after its scripts ran), cropped to the drawn area."""
    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if browser is None:
        raise SystemExit("chromium is not installed (make setup-browser)")
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "shot.png"
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={tmp}/profile", "--virtual-time-budget=20000",
                        f"--window-size={width},{height}", f"--screenshot={png}", html_path.resolve().as_uri()],
                       check=True, capture_output=True, timeout=300)
        img = Image.open(png).convert("RGB")
    rows = np.nonzero((np.asarray(img).astype(int) - 255).any(-1).any(1))[0]
    img = img.crop((0, 0, img.width, min(img.height, int(rows[-1]) + 12)))
    return save_png(img, path, keep or 760)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report_json")
    ap.add_argument("report_html")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rep = load_result(args.report_json)
    figure_png(rep["strace"].plot("subgraph"), args.out / "strace_subgraph.png")
    figure_png(rep["interactions"].plot("strength"), args.out / "interactions_order.png")
    figure_png(rep["attention"].plot("last_token"), args.out / "attention_last_token.png")
    screenshot(Path(args.report_html), args.out / "analyze_report.png", height=2600)
    with tempfile.TemporaryDirectory() as tmp:  # the attention section alone: the widgets drawn
        page = rep["attention"].write_html(Path(tmp) / "attention.html")
        screenshot(page, args.out / "attention_widgets.png", height=1300)


if __name__ == "__main__":
    main()
