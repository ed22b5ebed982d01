"""Unit tests for the demo site's deterministic PNG renderer."""

from __future__ import annotations

import struct
import time
import zlib

from tabfleetd.demo.demoimage import SIZE, render_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """Split a PNG into (type, data) chunks, checking each CRC on the way."""
    assert png[:8] == PNG_SIGNATURE
    chunks = []
    pos = 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind = png[pos + 4 : pos + 8]
        data = png[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", png[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + data) & 0xFFFFFFFF, kind
        chunks.append((kind, data))
        pos += 12 + length
    assert pos == len(png)
    return chunks


def test_same_prompt_gives_identical_bytes() -> None:
    """Rendering a prompt twice yields byte-identical PNGs."""
    assert render_png("a red fox in the snow") == render_png("a red fox in the snow")


def test_distinct_prompts_give_distinct_images() -> None:
    """Different prompts, even near-identical ones, give different PNGs and pixels."""
    prompts = ["a", "b", "a ", "A", "", "ünïcødé ✓", *(f"prompt {i}" for i in range(200))]
    pngs = [render_png(p) for p in prompts]
    assert len(set(pngs)) == len(prompts)
    pixels = {zlib.decompress(b"".join(d for k, d in _chunks(png) if k == b"IDAT")) for png in pngs}
    assert len(pixels) == len(prompts)


def test_png_structure_is_valid() -> None:
    """The PNG has a signature, a 128x128 RGB IHDR, valid CRCs and IDAT of the right size."""
    chunks = _chunks(render_png("structure check"))
    kinds = [kind for kind, _ in chunks]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", chunks[0][1]
    )
    assert (width, height) == (SIZE, SIZE) == (128, 128)
    assert (depth, colour, compression, filtering, interlace) == (8, 2, 0, 0, 0)
    raw = zlib.decompress(b"".join(data for kind, data in chunks if kind == b"IDAT"))
    assert len(raw) == height * (1 + 3 * width)
    # Every scanline starts with a valid filter type byte.
    assert all(raw[y * (1 + 3 * width)] <= 4 for y in range(height))


def test_image_is_not_flat() -> None:
    """The image has several colours, so it looks like something."""
    chunks = _chunks(render_png("colourful"))
    raw = zlib.decompress(b"".join(data for kind, data in chunks if kind == b"IDAT"))
    stride = 1 + 3 * SIZE
    colours = {
        raw[y * stride + 1 + 3 * x : y * stride + 4 + 3 * x] for y in range(SIZE) for x in range(SIZE)
    }
    assert len(colours) >= 3


def test_render_is_small_and_fast() -> None:
    """A render stays under a few KB and well under 5 ms on average."""
    prompts = [f"speed test {i}" for i in range(200)]
    start = time.perf_counter()
    sizes = [len(render_png(p)) for p in prompts]
    elapsed = (time.perf_counter() - start) / len(prompts)
    assert max(sizes) < 4096
    assert elapsed < 0.005
