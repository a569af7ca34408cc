#!/usr/bin/env python3
"""Checks an HTML report as headless Chromium drew it: its DOM and its screenshot.

usage: check-html-report.py DOM.html SCREENSHOT.png EXPECT

DOM.html is Chromium's --dump-dom of the page, SCREENSHOT.png its --screenshot, and
EXPECT "pass" or "fail". Checks that the browser parsed one verdict banner saying
EXPECT; nothing that runs or fetches (no script, no on* handler, no element that loads
something, no link leaving the page) and one style sheet; the sections of every stream;
a timeline of calls with bars of nonzero height (verified calls among them on a PASS
page); and that the screenshot's top rows are the banner's colour and the page below it
is not blank. Standard library only. Exits 1 naming what is wrong.
"""

import struct
import sys
import zlib
from html.parser import HTMLParser

GREEN = (0x1A, 0x7F, 0x37)  # the PASS banner
RED = (0xCF, 0x22, 0x2E)  # the FAIL banner
VERIFIED = (0x2D, 0xA4, 0x4E)  # verified calls in the charts


class Dom(HTMLParser):
    """Counts what the checks need from the parsed page."""

    def __init__(self):
        super().__init__()
        self.verdicts = []  # (class, text) of each id="verdict"
        self.in_verdict = False
        self.scripts = 0
        self.streams = []  # data-verdict of each stream section
        self.svgs = {}  # class -> count
        self.failure_rows = 0
        self.rects = 0
        self.styles = 0
        self.active = []  # what could run or fetch: (tag, attribute)
        self.in_timeline = False
        self.timeline_fills = []  # fills of the timeline's bars of nonzero height

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "style":
            self.styles += 1
        if tag in ("iframe", "object", "embed", "img", "link", "base", "form", "meta", "frame", "audio", "video", "source"):
            if not (tag == "meta" and set(a) <= {"charset", "name", "content"} and a.get("name") in (None, "viewport")):
                self.active.append((tag, ""))
        for name, value in attrs:
            if name.startswith("on"):
                self.active.append((tag, name))
            if name in ("src", "href", "xlink:href", "action", "formaction") and not (value or "").startswith("#"):
                self.active.append((tag, f"{name}={value}"))
        if tag == "svg" and a.get("class") == "timeline calls":
            self.in_timeline = True
        if tag == "rect" and self.in_timeline:
            try:
                if float(a.get("height", "0")) > 0:
                    self.timeline_fills.append(a.get("fill", "").lower())
            except ValueError:
                pass
        if a.get("id") == "verdict":
            self.verdicts.append([a.get("class", ""), ""])
            self.in_verdict = True
        if tag == "script":
            self.scripts += 1
        if tag == "section" and "stream" in a.get("class", "").split():
            self.streams.append(a.get("data-verdict"))
        if tag == "svg":
            cls = a.get("class", "")
            self.svgs[cls] = self.svgs.get(cls, 0) + 1
        if tag == "tr" and a.get("class") == "failure":
            self.failure_rows += 1
        if tag == "rect":
            self.rects += 1

    def handle_endtag(self, tag):
        if tag == "h1":
            self.in_verdict = False
        if tag == "svg":
            self.in_timeline = False

    def handle_data(self, data):
        if self.in_verdict and self.verdicts:
            self.verdicts[-1][1] += data


def png_rgb(path):
    """The pixels of an 8-bit RGB or RGBA, non-interlaced PNG: (width, height, rows)."""
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG")
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in (2, 6) or interlace:
        raise ValueError(f"{path}: PNG depth {depth} colour type {colour} interlace {interlace} not handled")
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        if f == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif f == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, prev))
        elif f == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
        elif f == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 255
        elif f != 0:
            raise ValueError(f"{path}: unknown PNG filter {f} in row {y}")
        rows.append(bytes(line))
        prev = line
    return width, height, [[tuple(r[x * bpp : x * bpp + 3]) for x in range(width)] for r in rows]


def main():
    if len(sys.argv) != 4 or sys.argv[3] not in ("pass", "fail"):
        sys.exit(__doc__)
    dom_path, png_path, expect = sys.argv[1:]
    problems = []
    dom = Dom()
    dom.feed(open(dom_path, encoding="utf-8").read())
    if len(dom.verdicts) != 1:
        problems.append(f"{len(dom.verdicts)} verdict banners, not 1")
    elif dom.verdicts[0][0] != expect or not dom.verdicts[0][1].startswith(expect.upper()):
        problems.append(f"the banner says {dom.verdicts[0]}, expected {expect}")
    if dom.scripts:
        problems.append(f"{dom.scripts} script elements")
    if dom.active:
        problems.append(f"elements or attributes that run or fetch: {dom.active[:5]}")
    if dom.styles != 1:
        problems.append(f"{dom.styles} style elements, not the page's one")
    if not dom.timeline_fills:
        problems.append("no bar of nonzero height in the timeline of calls")
    elif expect == "pass" and "#2da44e" not in dom.timeline_fills:
        problems.append("a PASS page whose timeline shows no verified call")
    if not dom.streams:
        problems.append("no stream section")
    if expect == "pass" and any(v != "pass" for v in dom.streams):
        problems.append(f"a PASS page with streams {dom.streams}")
    if expect == "fail" and dom.failure_rows == 0 and "fail" not in dom.streams:
        problems.append("a FAIL page without a failure row or a failed stream")
    for cls in ("coverage",):
        if not dom.svgs.get(cls):
            problems.append(f"no <svg class={cls!r}>")
    if dom.rects < 3:
        problems.append(f"{dom.rects} rectangles drawn")

    width, height, px = png_rgb(png_path)
    banner = GREEN if expect == "pass" else RED
    top = [px[y][x] for y in range(2, 30) for x in range(0, width, 7)]
    share = sum(p == banner for p in top) / len(top)
    if share < 0.6:
        problems.append(f"the top of the screenshot is {share:.0%} the {expect} banner's colour")
    below = [px[y][x] for y in range(80, height, 2) for x in range(0, width, 2)]
    colours = len(set(below))
    if colours < 20:
        problems.append(f"the page below the banner has {colours} colours: blank or unstyled")
    if expect == "pass" and sum(p == VERIFIED for p in below) < 200:
        problems.append("the colour of verified calls is (almost) absent below the banner")
    name = dom_path.rsplit("/", 1)[-1]
    if problems:
        for p in problems:
            print(f"{name}: {p}", file=sys.stderr)
        sys.exit(1)
    print(
        f"{name}: {expect.upper()} banner, {len(dom.streams)} stream(s), {dom.failure_rows} failure rows, "
        f"{sum(dom.svgs.values())} charts, {dom.rects} bars; screenshot {width}x{height}, "
        f"{share:.0%} banner colour on top, {colours} colours below"
    )


if __name__ == "__main__":
    main()
