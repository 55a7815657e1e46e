"""Rehearsal proofs: the images a sandbox serves for an image job are PNGs at the aspect ratio the
job asked for, showing its job id and the start of its prompt, so a rehearsal's gallery looks like
the real campaign's (issue 16). Drawn here with a 5×7 bitmap font and zlib: no imaging library.

They are drawn small (the long side `LONG_SIDE` pixels) whatever resolution was asked for: a proof
shows the layout, and a rehearsal of thousands of images must stay quick.
"""

from __future__ import annotations

import functools
import hashlib
import struct
import zlib
from importlib import resources

LONG_SIDE = 384
RATIOS = {"1:1": (1, 1), "4:5": (4, 5), "9:16": (9, 16), "16:9": (16, 9), "3:4": (3, 4), "4:3": (4, 3)}
SCALE = 2  # font pixels per glyph pixel
# A 5×7 font: each glyph is seven rows of five bits (the top bit is the left pixel).
_FONT = {
    "A": (14, 17, 17, 31, 17, 17, 17),
    "B": (30, 17, 17, 30, 17, 17, 30),
    "C": (14, 17, 16, 16, 16, 17, 14),
    "D": (30, 17, 17, 17, 17, 17, 30),
    "E": (31, 16, 16, 30, 16, 16, 31),
    "F": (31, 16, 16, 30, 16, 16, 16),
    "G": (14, 17, 16, 23, 17, 17, 15),
    "H": (17, 17, 17, 31, 17, 17, 17),
    "I": (14, 4, 4, 4, 4, 4, 14),
    "J": (7, 2, 2, 2, 2, 18, 12),
    "K": (17, 18, 20, 24, 20, 18, 17),
    "L": (16, 16, 16, 16, 16, 16, 31),
    "M": (17, 27, 21, 21, 17, 17, 17),
    "N": (17, 17, 25, 21, 19, 17, 17),
    "O": (14, 17, 17, 17, 17, 17, 14),
    "P": (30, 17, 17, 30, 16, 16, 16),
    "Q": (14, 17, 17, 17, 21, 18, 13),
    "R": (30, 17, 17, 30, 20, 18, 17),
    "S": (15, 16, 16, 14, 1, 1, 30),
    "T": (31, 4, 4, 4, 4, 4, 4),
    "U": (17, 17, 17, 17, 17, 17, 14),
    "V": (17, 17, 17, 17, 17, 10, 4),
    "W": (17, 17, 17, 21, 21, 21, 10),
    "X": (17, 17, 10, 4, 10, 17, 17),
    "Y": (17, 17, 10, 4, 4, 4, 4),
    "Z": (31, 1, 2, 4, 8, 16, 31),
    "0": (14, 17, 19, 21, 25, 17, 14),
    "1": (4, 12, 4, 4, 4, 4, 14),
    "2": (14, 17, 1, 2, 4, 8, 31),
    "3": (31, 2, 4, 2, 1, 17, 14),
    "4": (2, 6, 10, 18, 31, 2, 2),
    "5": (31, 16, 30, 1, 1, 17, 14),
    "6": (6, 8, 16, 30, 17, 17, 14),
    "7": (31, 1, 2, 4, 8, 8, 8),
    "8": (14, 17, 17, 14, 17, 17, 14),
    "9": (14, 17, 17, 15, 1, 2, 12),
    "-": (0, 0, 0, 31, 0, 0, 0),
    "_": (0, 0, 0, 0, 0, 0, 31),
    ".": (0, 0, 0, 0, 0, 12, 12),
    ":": (0, 12, 12, 0, 12, 12, 0),
    ",": (0, 0, 0, 0, 12, 4, 8),
    " ": (0,) * 7,
}


VIDEO_RATIOS = {"1:1": "1x1", "9:16": "9x16", "16:9": "16x9", "4:5": "4x5"}  # the shipped proof videos


@functools.cache
def proof_video(aspect_ratio: object) -> bytes | None:
    """A one-second H.264/AAC test pattern at the job's aspect ratio (made with ffmpeg, shipped in
    `sandbox/data`), or None for a ratio none is shipped for."""
    name = VIDEO_RATIOS.get(str(aspect_ratio))
    if name is None:
        return None
    return resources.files("sume_batch.sandbox").joinpath(f"data/proof-{name}.mp4").read_bytes()


def size_for(aspect_ratio: object) -> tuple[int, int]:
    """Width and height of a proof at this aspect ratio (an unknown ratio is square)."""
    across, down = RATIOS.get(str(aspect_ratio), (1, 1))
    if across >= down:
        return LONG_SIDE, LONG_SIDE * down // across
    return LONG_SIDE * across // down, LONG_SIDE


def proof_png(job_id: str, prompt: str, aspect_ratio: object) -> bytes:
    """A PNG at the job's aspect ratio: its colour from the job id, its id and prompt written on it."""
    width, height = size_for(aspect_ratio)
    red, green, blue = hashlib.sha256(job_id.encode()).digest()[:3]
    background = bytes((red // 2 + 64, green // 2 + 64, blue // 2 + 64))
    rows = [bytearray(background * width) for _ in range(height)]
    line = (5 + 1) * SCALE
    fits = max(1, (width - 2 * 8) // line)
    texts = [job_id.upper()[:fits], *_wrap(prompt.upper(), fits)][: max(1, (height - 16) // (9 * SCALE))]
    for number, text in enumerate(texts):
        _write(rows, text, x=8, y=8 + number * 9 * SCALE)
    _write(rows, f"SANDBOX PROOF {aspect_ratio}"[:fits], x=8, y=height - 8 - 7 * SCALE)
    data = b"".join(b"\x00" + bytes(row) for row in rows)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(data, 6))
        + _chunk(b"IEND", b"")
    )


def _wrap(text: str, width: int, lines: int = 6) -> list[str]:
    words, found, current = text.split(), [], ""
    for word in words:
        if len(current) + len(word) + 1 > width and current:
            found.append(current)
            current = ""
        current = (current + " " + word).strip()[:width]
        if len(found) == lines:
            break
    return [*found, current][:lines] if current else found[:lines]


def _write(rows: list[bytearray], text: str, *, x: int, y: int) -> None:
    white = b"\xff\xff\xff"
    for n, char in enumerate(text):
        glyph = _FONT.get(char, _FONT["-"] if not char.isspace() else _FONT[" "])
        for row, bits in enumerate(glyph):
            for column in range(5):
                if bits & (16 >> column):
                    left = x + (n * 6 + column) * SCALE
                    for dy in range(SCALE):
                        target = rows[y + row * SCALE + dy] if y + row * SCALE + dy < len(rows) else None
                        if target is not None and left + SCALE <= len(target) // 3:
                            target[left * 3 : (left + SCALE) * 3] = white * SCALE


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
