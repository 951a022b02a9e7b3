#!/usr/bin/env python3
"""Independent reference for the `sobel` function (plain Python, no numpy).

    python3 tests/data/make_sobel_ref.py

Writes, next to this script:
  odd.pgm            a 37x23 test image with comments and odd whitespace in its header,
                     random pixels and saturated blocks (exercises parsing, borders and
                     the 255 clamp)
  odd_sobel.pgm      its Sobel edge image
  sample_sobel.pgm   the Sobel edge image of examples/sample.pgm

The rule (see worker/handlers/zf_image.h): borders replicate the nearest pixel; Gx, Gy are the
3x3 Sobel sums; out = min(255, floor(sqrt(Gx^2 + Gy^2) + 1/2)), computed here exactly
with math.isqrt: r = isqrt(s); round up when s - r*r > r (i.e. sqrt(s) > r + 1/2).
"""
import math
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def read_pgm(path):
    data = open(path, "rb").read()
    # tokens: magic, width, height, maxval; comments run from '#' to the end of the line
    pos, tokens = 0, []
    while len(tokens) < 4:
        m = re.compile(rb"(?:\s|#[^\r\n]*)*([^\s#]+)").match(data, pos)
        tokens.append(m.group(1))
        pos = m.end()
    assert tokens[0] == b"P5" and tokens[3] == b"255", tokens
    w, h = int(tokens[1]), int(tokens[2])
    pos += 1  # the single whitespace character after maxval
    return w, h, data[pos:pos + w * h]


def sobel(w, h, px):
    def p(x, y):
        x = min(max(x, 0), w - 1)
        y = min(max(y, 0), h - 1)
        return px[y * w + x]

    out = bytearray()
    for y in range(h):
        for x in range(w):
            gx = (p(x + 1, y - 1) + 2 * p(x + 1, y) + p(x + 1, y + 1)
                  - p(x - 1, y - 1) - 2 * p(x - 1, y) - p(x - 1, y + 1))
            gy = (p(x - 1, y + 1) + 2 * p(x, y + 1) + p(x + 1, y + 1)
                  - p(x - 1, y - 1) - 2 * p(x, y - 1) - p(x + 1, y - 1))
            s = gx * gx + gy * gy
            r = math.isqrt(s)
            if s - r * r > r:
                r += 1
            out.append(min(255, r))
    return bytes(out)


def write_pgm(path, w, h, px):
    with open(path, "wb") as f:
        f.write(b"P5\n%d %d\n255\n" % (w, h) + px)


def make_odd(path):
    w, h, seed, px = 37, 23, 99, bytearray()
    for y in range(h):
        for x in range(w):
            seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
            v = (seed >> 16) & 0xFF
            if 5 <= x < 12 and 3 <= y < 10:
                v = 255
            if 20 <= x < 30 and 12 <= y < 20:
                v = 0
            px.append(v)
    header = b"P5 # binary graymap\n#  a comment line\n37\t23 # width, height\r\n255\n"
    with open(path, "wb") as f:
        f.write(header + bytes(px))


def main():
    odd = os.path.join(HERE, "odd.pgm")
    make_odd(odd)
    for src, dst in ((odd, "odd_sobel.pgm"),
                     (os.path.join(ROOT, "examples", "sample.pgm"), "sample_sobel.pgm")):
        w, h, px = read_pgm(src)
        write_pgm(os.path.join(HERE, dst), w, h, sobel(w, h, px))


if __name__ == "__main__":
    main()
