#!/usr/bin/env python3
"""Writes examples/sample.pgm: a 256x256 8-bit grayscale P5 test image with shapes.

Deterministic (no randomness beyond a fixed LCG), plain Python, no dependencies:
    python3 examples/make_sample.py [OUT.pgm]
"""
import math
import os
import sys

W, H = 256, 256


def pixel(x, y, noise):
    # soft diagonal gradient background
    v = 40 + (x + y) * 60 // (W + H - 2)
    # filled rectangle
    if 24 <= x < 104 and 32 <= y < 96:
        v = 200
    # filled circle
    if (x - 180) ** 2 + (y - 70) ** 2 <= 42 ** 2:
        v = 235
    # ring
    d = math.hypot(x - 70, y - 185)
    if 30 <= d <= 40:
        v = 15
    # triangle
    if 140 <= y < 236 and abs(x - 190) <= (y - 140) * 0.55:
        v = 120 + (y - 140)
    # a thin line
    if abs((x - 10) - (y - 120) * 0.5) < 1.0 and 120 <= y < 250:
        v = 255
    return max(0, min(255, v + noise))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "sample.pgm")
    seed = 12345
    raster = bytearray()
    for y in range(H):
        for x in range(W):
            seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
            raster.append(pixel(x, y, (seed >> 16) % 7 - 3))
    header = b"P5\n# zfleet sample image, made by examples/make_sample.py\n%d %d\n255\n" % (W, H)
    with open(out, "wb") as f:
        f.write(header + bytes(raster))


if __name__ == "__main__":
    main()
