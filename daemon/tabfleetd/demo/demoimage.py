"""Deterministic placeholder images for the demo site.

``render_png(prompt)`` turns a prompt into a small 128×128 RGB PNG: an 8×8
mosaic of tiles from a four-colour palette, separated by thin grout lines and
crossed by two light stripes. Everything is derived from the SHA-256 of the
prompt, so the same prompt always yields byte-identical output (tests compare
downloaded bytes against a fresh render) and different prompts yield
different images. The encoder is written here with stdlib only, at a fixed
zlib level, so the bytes do not depend on any imaging library's version.
"""

from __future__ import annotations

import hashlib
import struct
import zlib

__all__ = ["SIZE", "render_png"]

SIZE = 128
_TILES = 8
_TILE = SIZE // _TILES
_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Fixed so that the output stays byte-stable; 6 is fast and still small here.
_ZLIB_LEVEL = 6


def _chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC over type and data."""
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _palette(digest: bytes) -> list[bytes]:
    """Four tile colours from the digest, lifted so none is muddy-dark."""
    colours = []
    for i in range(4):
        r, g, b = digest[3 * i : 3 * i + 3]
        colours.append(bytes((64 + r * 3 // 4, 64 + g * 3 // 4, 64 + b * 3 // 4)))
    return colours


def _pixels(digest: bytes) -> list[bytes]:
    """The image rows, each 128 RGB pixels, without PNG filter bytes."""
    palette = _palette(digest)
    grout = bytes((digest[12] // 6, digest[13] // 6, digest[14] // 6))
    stripe = bytes((255 - digest[15] // 5, 255 - digest[16] // 5, 255 - digest[17] // 5))
    # 64 tiles × 2 bits of palette index = the 16 digest bytes 16..31.
    indices = int.from_bytes(digest[16:32], "big")

    rows: list[bytes] = []
    for tile_row in range(_TILES):
        cells = []
        for tile_col in range(_TILES):
            colour = palette[(indices >> (2 * (tile_row * _TILES + tile_col))) & 3]
            cells.append(grout + colour * (_TILE - 1))
        body = b"".join(cells)
        rows.append(grout * SIZE)
        rows.extend([body] * (_TILE - 1))

    # Two horizontal stripes, placed mid-tile so they never sit on grout.
    for byte in (digest[0], digest[1]):
        y = (byte % _TILES) * _TILE + _TILE // 2
        rows[y] = stripe * SIZE
        rows[y + 1] = stripe * SIZE
    return rows


def render_png(prompt: str) -> bytes:
    """A 128×128 RGB PNG that depends only on ``prompt``."""
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    # Filter type 0 (None) per row: the rows repeat a lot, zlib does the rest.
    raw = b"".join(b"\x00" + row for row in _pixels(digest))
    ihdr = struct.pack(">IIBBBBB", SIZE, SIZE, 8, 2, 0, 0, 0)
    # The digest in a text chunk guarantees distinct bytes for distinct prompts
    # even if two digests happened to map to the same mosaic.
    text = b"Comment\x00tabfleet demo " + digest.hex().encode("ascii")
    return b"".join(
        (
            _SIGNATURE,
            _chunk(b"IHDR", ihdr),
            _chunk(b"tEXt", text),
            _chunk(b"IDAT", zlib.compress(raw, _ZLIB_LEVEL)),
            _chunk(b"IEND", b""),
        )
    )
