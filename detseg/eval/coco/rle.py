"""Segmentations as compressed RLE (as ``COCO.annToRLE``), and checks that an RLE is valid.

An RLE ``{"size": [h, w], "counts": ...}`` lists run lengths of alternating 0s and 1s in
column-major order; they must be non-negative and add up to ``h * w``. pycocotools does not
check this: a bad ``counts`` string gives a nonsense area and IoU (AP 0 with no word), a list
with a negative number an ``OverflowError``. ``compressed_counts_check`` decodes many counts
strings at once with numpy (the format: 5 bits a character from ``'0'``, bit 0x20 = more
characters follow, bit 0x10 of the last one = negative, from the fourth number on each is a
difference to the number two places before).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from detseg.eval.coco.json_input import short

_CHUNK_CHARS = 1 << 18   # counts characters decoded at once (keeps the arrays in cache)
_MAX_CHARS = 6           # characters of one number pycocotools decodes right (30 bits, 2**29 px)


def segmentation_to_rle(seg: Any, height: int, width: int) -> dict:
    """One annotation's segmentation as a compressed RLE, exactly as ``COCO.annToRLE`` does.

    Polygons (a list of ``[x1, y1, x2, y2, ...]`` parts) are rasterized at ``height x width``
    and merged; an uncompressed RLE (``counts`` a list) is compressed; an RLE is returned as is.
    """
    if isinstance(seg, list):
        return mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        if isinstance(seg["counts"], list):
            return mask_utils.frPyObjects(seg, height, width)
        return seg
    raise ValueError("segmentation must be a polygon list or an RLE dict with size and counts")


def rles_for_image(segs: list, height: int, width: int) -> list[dict]:
    """``segmentation_to_rle`` for many annotations of one image, batching plain polygons."""
    out: list[Any] = [None] * len(segs)
    parts: list[list] = []
    owners: list[tuple[int, int, int]] = []
    for j, seg in enumerate(segs):
        # Batched frPyObjects dispatches on the first part only; keep the per-annotation call
        # for anything but lists of polygons whose first part has more than 4 numbers.
        if isinstance(seg, list) and seg and isinstance(seg[0], list) and len(seg[0]) > 4:
            owners.append((j, len(parts), len(seg)))
            parts.extend(seg)
        else:
            out[j] = segmentation_to_rle(seg, height, width)
    if parts:
        rles = mask_utils.frPyObjects(parts, height, width)
        for j, start, count in owners:  # merging a single part returns it unchanged
            out[j] = rles[start] if count == 1 else mask_utils.merge(rles[start:start + count])
    return out


def is_compressed(seg: Any) -> bool:
    """True for an RLE dict whose ``counts`` is a string (checked by the batch check)."""
    return type(seg) is dict and type(seg.get("counts")) in (str, bytes) and "size" in seg


def size_problem(seg: Any, height: int, width: int) -> str | None:
    """Why the RLE ``seg``'s ``size`` is not ``[height, width]``, or None."""
    size = seg.get("size")
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)):
        return f"RLE size {short(size)} is not [height, width]"
    if list(size) != [height, width]:
        return f"mask size {list(size)} differs from the image size {[height, width]}"
    return None


def counts_problem(counts: Any, height: int, width: int) -> str:
    """The message for a counts string that ``compressed_counts_check`` found invalid."""
    return (f"RLE counts {short(counts, 60)} are malformed or do not add up to {height}x{width} "
            f"= {height * width} pixels")


def segmentation_problem(seg: Any, height: int, width: int) -> str | None:
    """Why ``seg`` (a polygon list or an RLE with list ``counts``) is unusable, or None.

    A compressed RLE's ``counts`` string is checked by ``compressed_counts_check`` instead.
    """
    if isinstance(seg, list):
        try:
            finite = bool(seg) and all(isinstance(part, list) and bool(part)
                                       and all(map(math.isfinite, part)) for part in seg)
        except TypeError:  # a coordinate that is not a number
            finite = False
        return None if finite else (f"segmentation {short(seg)} is not a list of polygons of "
                                    f"finite numbers")
    if not isinstance(seg, dict) or "counts" not in seg or "size" not in seg:
        return f"segmentation {short(seg)} is neither polygons nor an RLE with size and counts"
    problem = size_problem(seg, height, width)
    if problem:
        return problem
    counts = seg["counts"]
    if isinstance(counts, (str, bytes)):
        return None
    if not isinstance(counts, list) or not all(
            isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
        return (f"RLE counts {short(counts)} is neither a string nor a list of non-negative "
                f"integers")
    if sum(counts) != height * width:
        return (f"RLE counts add up to {sum(counts)} pixels, not height * width = "
                f"{height * width}")
    return None


def _running_at(run: list[np.ndarray], index: np.ndarray) -> np.ndarray:
    """``run[i % 2][i // 2]`` for each global number index ``i`` in ``index``."""
    out = np.zeros(len(index), np.int64)
    for parity in (0, 1):
        sel = (index & 1) == parity
        out[sel] = run[parity][index[sel] >> 1]
    return out


def _decode_chunk(buf: np.ndarray, lens: np.ndarray, totals: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Validity ``[S]`` and foreground area ``[S]`` of ``S`` counts strings joined in ``buf``."""
    s_n = len(lens)
    str_end = np.cumsum(lens)
    ok = lens > 0
    d = buf - np.uint8(48)
    if (d >= 64).any():                                   # outside the alphabet '0'..'o'
        ok[np.searchsorted(str_end, np.flatnonzero(d >= 64), side="right")] = False
    last = str_end[lens > 0] - 1
    open_end = d[last] >= 32                              # the last number is cut off
    if open_end.any():
        ok[np.flatnonzero(lens > 0)[open_end]] = False
        d[last[open_end]] = 0
    is_end = d < 32                                       # no 0x20 bit: a number's last char
    val = (d[is_end] ^ np.uint8(16)).astype(np.int32) - 16    # as one-character numbers
    cont = np.flatnonzero(~is_end)      # the (few) characters of longer numbers but their last
    m_s = lens - np.diff(np.searchsorted(cont, str_end), prepend=0)      # numbers a string
    if len(cont):
        new = np.empty(len(cont), dtype=bool)
        new[0] = True
        np.greater(cont[1:], cont[:-1] + 1, out=new[1:])
        first = cont[new]                                 # first character of each longer one
        n_chars = np.bincount(np.cumsum(new) - 1) + 1
        last_char = first + n_chars - 1
        multi = last_char - np.cumsum(n_chars - 1)        # its index among the numbers
        too_long = n_chars > _MAX_CHARS
        if too_long.any():
            ok[np.searchsorted(str_end, last_char[too_long], side="right")] = False
            n_chars = np.minimum(n_chars, _MAX_CHARS)
        value = np.zeros(len(multi), np.int32)
        for k in range(int(n_chars.max())):
            sel = n_chars > k
            value[sel] |= (d[first[sel] + k] & 31).astype(np.int32) << (5 * k)
        negative = (d[last_char] & 16) != 0
        value[negative] -= (np.int64(1) << (5 * n_chars[negative])).astype(np.int32)
        val[multi] = value
    f = np.cumsum(m_s) - m_s                              # index of each string's first number
    # Counts: c[j] = v[j] + c[j - 2] from j = 3 on: running sums over the numbers of one
    # parity (within a string the parity of j is that of the global index), from j = 1 for
    # odd j and from j = 2 for even j; c[0] = v[0].
    run = [np.cumsum(val[parity::2], dtype=np.int64) for parity in (0, 1)]   # [N/2] each
    has = m_s > 0
    f_par = f & 1
    base_even = np.zeros(s_n, np.int64)                   # run value before j = 2
    base_odd = np.zeros(s_n, np.int64)                    # run value before j = 1
    v0 = np.zeros(s_n, np.int64)
    fh = f[has]
    base_even[has] = _running_at(run, fh)
    base_odd[has] = np.where(fh > 0, _running_at(run, np.maximum(fh - 1, 0)), 0)
    v0[has] = val[fh]
    ok &= v0 >= 0
    chain_sums = []
    for parity in (0, 1):
        lo = (f - parity + 1) // 2                        # a string's range in run[parity]
        hi = (f + m_s - parity + 1) // 2
        base = np.where(f_par == parity, base_even, base_odd)
        nonempty = np.flatnonzero(hi > lo)
        if len(nonempty):                                 # consecutive, so segments tile run
            mins = np.minimum.reduceat(run[parity], lo[nonempty])
            ok[nonempty] &= mins >= base[nonempty]
        prefix = np.zeros(len(run[parity]) + 1, np.int64)
        np.cumsum(run[parity], out=prefix[1:])
        chain_sums.append(prefix[hi] - prefix[lo] - base * (hi - lo))
    area = np.where(f_par == 0, chain_sums[1], chain_sums[0])     # odd j: the other parity
    ok &= chain_sums[0] + chain_sums[1] + v0 == totals
    return ok, area.astype(np.float64)


def _ascii(counts: Any) -> bytes:
    """A counts string as bytes of the same length; one with non-ASCII characters as '~'s
    (outside the alphabet, so found invalid)."""
    if isinstance(counts, bytes):
        return counts
    return counts.encode() if counts.isascii() else b"~" * len(counts)


def compressed_counts_check(counts: Sequence[Any], totals: np.ndarray
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Check ``S`` RLE counts strings (str or bytes) at once.

    Returns ``ok [S]`` (every count non-negative, well formed, adding up to ``totals [S]``,
    the images' ``h * w``) and ``area [S]`` float64 foreground pixels (only meaningful where
    ``ok``; equal to ``pycocotools.mask.area`` there).
    """
    s_n = len(counts)
    ok = np.zeros(s_n, dtype=bool)
    area = np.zeros(s_n)
    lens = np.fromiter(map(len, counts), dtype=np.int64, count=s_n)
    cum = np.cumsum(lens)
    totals = np.asarray(totals, dtype=np.int64)
    start = 0
    while start < s_n:
        before = cum[start - 1] if start else 0
        stop = max(int(np.searchsorted(cum, before + _CHUNK_CHARS, side="right")), start + 1)
        part = counts[start:stop]
        try:
            joined = "".join(part).encode("ascii")
        except (TypeError, UnicodeEncodeError):  # bytes among them, or non-ASCII characters
            joined = b"".join(map(_ascii, part))
        buf = np.frombuffer(joined, dtype=np.uint8)
        ok[start:stop], area[start:stop] = _decode_chunk(buf, lens[start:stop],
                                                         totals[start:stop])
        start = stop
    return ok, area
