"""Web client: the JavaScript a doctor's browser downloads before the first page shows.

Builds web/ when dist/ is missing or older than the sources, then reads the Vite manifest:
the first page is the entry (index.html's module script and its modulepreloads) plus the
sign-in route's chunk and its static imports (/ redirects there when signed out). Sizes are
gzip level 6, what a server or CDN typically sends.

Run: ./scripts/bench webclient [--no-build]. Target: initial_js_kb_gzip < 300.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "web"
DIST = WEB / "dist"
MANIFEST = DIST / ".vite" / "manifest.json"
FIRST_ROUTE = "src/views/LoginView.vue"  # where a signed-out visit to / lands
AFTER_SIGN_IN = ("src/layouts/AppLayout.vue", "src/views/empi/PersonSearch.vue")
TARGET_KB = 300
SOURCES = ("src", "public", "index.html", "package.json", "package-lock.json", "vite.config.ts")


def newest_source() -> float:
    newest = 0.0
    for name in SOURCES:
        path = WEB / name
        files = path.rglob("*") if path.is_dir() else [path]
        newest = max([newest, *(f.stat().st_mtime for f in files if f.is_file())])
    return newest


def build_if_needed() -> bool:
    if MANIFEST.is_file() and MANIFEST.stat().st_mtime >= newest_source():
        return False
    npm = shutil.which("npm")
    if npm is None:
        sys.exit("webclient: npm is needed to build web/ (dist/ is missing or stale)")
    if not (WEB / "node_modules").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=WEB, check=True)
    subprocess.run([npm, "run", "build"], cwd=WEB, check=True, stdout=subprocess.DEVNULL)
    return True


def gz_kb(files: set[str]) -> float:
    return sum(len(gzip.compress((DIST / f).read_bytes(), 6)) for f in files) / 1024


def closure(manifest: dict, keys: list[str]) -> tuple[set[str], set[str]]:
    """JS and CSS files of these manifest chunks and their static imports (not dynamic)."""
    js: set[str] = set()
    css: set[str] = set()
    seen: set[str] = set()
    stack = list(keys)
    while stack:
        key = stack.pop()
        if key in seen:
            continue
        seen.add(key)
        chunk = manifest[key]
        js.add(chunk["file"])
        css.update(chunk.get("css", []))
        stack.extend(chunk.get("imports", []))
    return js, css


def html_assets() -> tuple[set[str], set[str]]:
    html = (DIST / "index.html").read_text("utf-8")
    scripts = re.findall(r'<script[^>]+type="module"[^>]+src="/?([^"]+)"', html)
    preloads = re.findall(r'<link[^>]+rel="modulepreload"[^>]+href="/?([^"]+)"', html)
    styles = re.findall(r'<link[^>]+rel="stylesheet"[^>]+href="/?([^"]+)"', html)
    return set(scripts + preloads), set(styles)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-build", action="store_true", help="measure dist/ as it is")
    args = parser.parse_args()
    built = False if args.no_build else build_if_needed()
    manifest = json.loads(MANIFEST.read_text("utf-8"))
    entry = next(k for k, c in manifest.items() if c.get("isEntry"))
    entry_js, entry_css = closure(manifest, [entry])
    html_js, html_css = html_assets()
    entry_js |= html_js
    entry_css |= html_css
    first_js, first_css = closure(manifest, [entry, FIRST_ROUTE])
    first_js |= html_js
    first_css |= html_css
    signed_in_js, _ = closure(manifest, [entry, *AFTER_SIGN_IN])
    all_js = {c["file"] for c in manifest.values() if c["file"].endswith(".js")}
    public = {FIRST_ROUTE, "src/views/StaffOnlyView.vue"}
    routes = {
        k: round(
            gz_kb(closure(manifest, [entry, *({k} if k in public else {AFTER_SIGN_IN[0], k})])[0]),
            1,
        )
        for k, c in manifest.items()
        if c.get("isDynamicEntry") and k.startswith("src/views/")
    }
    result = {
        "bench": "webclient",
        "built": built,
        "initial_js_kb_gzip": round(gz_kb(first_js), 1),
        "initial_js_files": len(first_js),
        "initial_css_kb_gzip": round(gz_kb(first_css), 1),
        "entry_js_kb_gzip": round(gz_kb(entry_js), 1),
        "patient_search_js_kb_gzip": round(gz_kb(signed_in_js), 1),
        "largest_route_js_kb_gzip": max(routes.values()) if routes else None,
        "total_js_kb_gzip": round(gz_kb(all_js), 1),
        "chunks": len(all_js),
        "target_kb": TARGET_KB,
    }
    result["ok"] = result["initial_js_kb_gzip"] < TARGET_KB
    row = "{:44s} {:7.1f} KB gzip{}".format
    print(row("entry (index.html + its static imports)", result["entry_js_kb_gzip"], ""))
    print(row(f"first page: sign-in ({len(first_js)} JS files)", result["initial_js_kb_gzip"],
              f"  target < {TARGET_KB}"))  # fmt: skip
    print(row("first page CSS", result["initial_css_kb_gzip"], ""))
    print(row("after sign-in: layout + patient search", result["patient_search_js_kb_gzip"], ""))
    for route, kb in sorted(routes.items(), key=lambda kv: -kv[1]):
        parts = "entry + route" if route in public else "entry + layout + route"
        print(row(f"  route {route.removeprefix('src/views/')}", kb, f"  ({parts})"))
    print(row(f"all JS ({len(all_js)} chunks)", result["total_js_kb_gzip"], ""))
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
