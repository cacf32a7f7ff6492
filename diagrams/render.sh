#!/usr/bin/env bash
# Render every diagrams/*.mmd to a .svg next to it, with Mermaid CLI.
#
# Mermaid CLI is pinned at 11.17.0 in package-lock.json (12.x needs a newer
# Node than Debian's); it drives Debian's chromium (puppeteer-config.json),
# never a browser downloaded by puppeteer.  mermaid-config.json turns
# htmlLabels off, so labels are SVG <text> rather than HTML in
# <foreignObject>, and fixes the id seed: rendering the same .mmd twice gives
# the same bytes.  Its sequence settings: mirrorActors is on because Mermaid
# 11 draws every lifeline to a placeholder y=2000 and corrects it only from
# the footer actors (with them off, a tall diagram's messages ran on below
# its lifelines); actorMargin/width/diagramMarginX are tightened because a
# diagram's width, not its font, decides how small its labels get in the
# page (tools/mkdocs_hooks.py, tests/test_docs_site.py).  Labels are not
# wrapped: Mermaid would break Python names mid-identifier.
#
# Each SVG starts with the sha256 of the .mmd it was drawn from; an SVG whose
# hash is current is skipped (--force renders all).  tests/test_diagrams.py
# compares the hashes, so a stale SVG fails the suite without rendering.
#
# Needs: node + npm, and chromium (apt-get install chromium).
set -euo pipefail
cd "$(dirname "$0")"
force=${1:-}

if [ ! -x node_modules/.bin/mmdc ]; then
    # The browser comes from Debian: puppeteer must not try to fetch its own.
    PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for mmd in *.mmd; do
    svg="${mmd%.mmd}.svg"
    hash=$(sha256sum "$mmd" | cut -d' ' -f1)
    if [ "$force" != --force ] && [ -f "$svg" ] && head -n 1 "$svg" | grep -q "$hash"; then
        continue
    fi
    ./node_modules/.bin/mmdc --quiet -p puppeteer-config.json -c mermaid-config.json \
        -i "$mmd" -o "$tmp/out.svg"
    { echo "<!-- source-sha256: $hash -->"; cat "$tmp/out.svg"; echo; } > "$svg"
    echo "rendered $svg"
done
