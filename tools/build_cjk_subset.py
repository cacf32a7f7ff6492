"""Build the CJK font subset the docs site ships (docs/assets/fonts/).

Why: chapters 1 and 2 print 好 (and 你好) in code and prose.  A reader
whose system has no CJK font saw empty boxes, so the site carries a font
for exactly the CJK characters the docs use: a few kilobytes, not the
16 MB of a full CJK font.

Source: Noto Sans CJK SC Regular, from Debian's ``fonts-noto-cjk`` (SIL
Open Font License 1.1, which allows redistributing a modified font under
the same licence; the licence travels next to the subset as
``cjk-subset-LICENSE.txt``).  The OFL forbids a modified font to keep a
Reserved Font Name, so the subset is renamed "Minisocketserver CJK".
Nothing is downloaded by this script: get the package first, e.g.

    apt-get download fonts-noto-cjk && dpkg-deb -x fonts-noto-cjk_*.deb /tmp/noto
    python tools/build_cjk_subset.py \
        --source /tmp/noto/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc \
        --licence /tmp/noto/usr/share/doc/fonts-noto-cjk/copyright

(or ``apt-get install fonts-noto-cjk`` and run it with no options).  It writes
the subset (WOFF, zlib-compressed: no brotli needed) and
docs/stylesheets/cjk.css, whose ``unicode-range`` lists the same characters,
so the browser uses the face for those characters only.
tests/test_docs_site.py fails when a page uses a CJK character the
committed subset lacks, naming this script.

Needs fontTools (``pip install -e '.[docs]'``).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FONT = ROOT / "docs" / "assets" / "fonts" / "cjk-subset.woff"
LICENCE = FONT.with_name("cjk-subset-LICENSE.txt")
CSS = ROOT / "docs" / "stylesheets" / "cjk.css"
FAMILY = "Minisocketserver CJK"
DEBIAN_FONT = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
DEBIAN_COPYRIGHT = Path("/usr/share/doc/fonts-noto-cjk/copyright")
#: The face inside the collection: Simplified Chinese, the docs' language for 好.
FACE = "Noto Sans CJK SC"

#: Scripts a Latin system font lacks: CJK punctuation, kana, ideographs
#: (with extension A and compatibility forms), Hangul, full-width forms.
_CJK = re.compile(
    "[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")


def sources(root: Path = ROOT) -> list[Path]:
    """Every file whose text reaches the site: pages and diagram sources."""
    return sorted([*root.joinpath("docs").rglob("*.md"), *root.joinpath("diagrams").glob("*.mmd")])


def cjk_characters(paths: Iterable[Path]) -> list[str]:
    """The CJK characters used in ``paths``, sorted by code point."""
    found: set[str] = set()
    for path in paths:
        found.update(_CJK.findall(path.read_text(encoding="utf-8")))
    return sorted(found)


def unicode_range(chars: Iterable[str]) -> str:
    return ", ".join(f"U+{ord(c):04X}" for c in chars)


def _ofl_text(debian_copyright: Path) -> str:
    """The OFL 1.1 text out of Debian's machine-readable copyright file."""
    lines = debian_copyright.read_text(encoding="utf-8").splitlines()
    start = lines.index("License: SIL-1.1", lines.index("License: SIL-1.1") + 1)
    body = []
    for line in lines[start + 1:]:
        if not line.startswith(" "):
            break
        body.append("" if line == " ." else line[1:])
    return "\n".join(body).strip() + "\n"


def build(source: Path, debian_copyright: Path) -> list[str]:
    from fontTools import subset
    from fontTools.ttLib import TTCollection

    chars = cjk_characters(sources())
    collection = TTCollection(str(source))
    font = next(f for f in collection.fonts if f["name"].getDebugName(1) == FACE)
    copyright_line = font["name"].getDebugName(0)
    options = subset.Options()
    options.flavor = "woff"
    options.layout_features = []          # no shaping needed for isolated ideographs
    options.name_IDs = [0, 1, 2, 3, 4, 5, 6, 13, 14]   # keep copyright and licence
    options.hinting = False
    subsetter = subset.Subsetter(options)
    subsetter.populate(text="".join(chars))
    subsetter.subset(font)
    # The OFL forbids a Modified Version to carry a Reserved Font Name.
    postscript = FAMILY.replace(" ", "") + "-Regular"
    for record in font["name"].names:
        if record.nameID in (1, 4, 16):
            record.string = FAMILY
        elif record.nameID in (3, 6):
            record.string = postscript
    if "CFF " in font:
        cff = font["CFF "].cff
        cff.fontNames = [postscript]
        cff.topDictIndex[0].FullName = FAMILY
        cff.topDictIndex[0].FamilyName = FAMILY
    FONT.parent.mkdir(parents=True, exist_ok=True)
    font.flavor = "woff"
    # Keep the source's head.modified: a rebuild from the same package gives
    # the same bytes, so the committed font changes only when its input does.
    font.recalcTimestamp = False
    font.save(str(FONT))
    LICENCE.write_text(
        f"{FONT.name}: a subset of {FACE} Regular (Debian package fonts-noto-cjk),\n"
        f"renamed {FAMILY!r} as the licence asks of a modified font,\n"
        f"built by tools/build_cjk_subset.py.\n\n{copyright_line}\n\n"
        + _ofl_text(debian_copyright), encoding="utf-8")
    CSS.parent.mkdir(parents=True, exist_ok=True)
    CSS.write_text(
        "/* Generated by tools/build_cjk_subset.py: do not edit.\n"
        "   The CJK characters the docs use, for readers without a CJK font.\n"
        "   unicode-range keeps every other character on the theme's fonts. */\n"
        "@font-face {\n"
        f'  font-family: "{FAMILY}";\n'
        f'  src: url("../assets/fonts/{FONT.name}") format("woff");\n'
        "  font-display: block;\n"
        f"  unicode-range: {unicode_range(chars)};\n"
        "}\n"
        ":root {\n"
        f'  --md-text-font: "{FAMILY}";\n'
        f'  --md-code-font: "{FAMILY}";\n'
        "}\n", encoding="utf-8")
    return chars


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DEBIAN_FONT,
                        help=f"the Noto Sans CJK collection (default {DEBIAN_FONT})")
    parser.add_argument("--licence", type=Path, default=DEBIAN_COPYRIGHT,
                        help=f"Debian's copyright file with the OFL (default {DEBIAN_COPYRIGHT})")
    args = parser.parse_args()
    chars = build(args.source, args.licence)
    print(f"{FONT.relative_to(ROOT)}: {''.join(chars)} "
          f"({len(chars)} characters, {FONT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
