"""Rasterisation and texture helpers shared by the synthetic scene generators.

Shapes are signed distance functions (SDFs) evaluated in a local window around each object: the
window's pixel centres are rotated into the object's frame (``u`` along its length, ``v`` across),
the SDF gives the distance to the outline in pixels (negative inside), and ``coverage = clip(0.5 -
d, 0, 1)`` is an anti-aliased mask. Everything is vectorised numpy; loops run over objects only.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

F32 = np.float32


def image_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed derived from ``seed`` and integer keys (split, index ...), independent of order of use."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, *[int(k) for k in keys]]).generate_state(1, np.uint64)
    return int(state[0]) >> 1


def rngs(seed: int, kind: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Two independent generators: geometry (same draws at every image size) and pixel texture."""
    ss = np.random.SeedSequence([int(kind), int(seed) & 0xFFFFFFFFFFFFFFFF])
    a, b = ss.spawn(2)
    return np.random.default_rng(a), np.random.default_rng(b)


# ------------------------------------------------------------------------------------------ noise
def resize_f(a: np.ndarray, h: int, w: int, resample: int = Image.BICUBIC) -> np.ndarray:
    """Resize a float array with PIL (mode 'F'); the lattice spans the whole output."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(a, dtype=F32), mode="F").resize((w, h), resample), dtype=F32)


def value_noise(rng: np.random.Generator, h: int, w: int, cells: float, octaves: int = 1,
                persistence: float = 0.5) -> np.ndarray:
    """Smooth random field with about ``cells`` blobs across the image; roughly unit variance.

    The octaves are summed on an intermediate grid (twice the finest lattice) and resized once.
    """
    ns = [max(2, int(round(cells * 2 ** o)) + 1) for o in range(octaves)]
    mid = min(max(h, w), 2 * ns[-1])
    acc = np.zeros((mid, mid), F32)
    amp, total = 1.0, 0.0
    for n in ns:
        g = rng.standard_normal((n, n), dtype=F32)
        acc += amp * (g if n == mid else resize_f(g, mid, mid))
        total += amp * amp
        amp *= persistence
    out = acc if (mid, mid) == (h, w) else resize_f(acc, h, w)
    return out / np.float32(np.sqrt(total) * 0.85)


def _pad_reflect(x: np.ndarray, r: int, axis: int) -> np.ndarray:
    n = x.shape[axis]
    r = min(r, n - 1)
    lo = np.flip(np.take(x, np.arange(1, r + 1), axis=axis), axis=axis)
    hi = np.flip(np.take(x, np.arange(n - r - 1, n - 1), axis=axis), axis=axis)
    return np.concatenate([lo, x, hi], axis=axis), r


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of the first two axes (reflect borders, kernel cut at 2.5 sigma)."""
    if sigma <= 0.05:
        return img
    r = max(1, int(2.5 * sigma + 0.5))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2).astype(F32)
    k /= k.sum()
    h, w = img.shape[:2]
    x, rr = _pad_reflect(img.astype(F32, copy=False), r, 1)
    off = r - rr
    tmp = np.zeros_like(img, dtype=F32)
    for i in range(off, 2 * r + 1 - off):
        tmp += k[i] * x[:, i - off:i - off + w]
    x, rr = _pad_reflect(tmp, r, 0)
    off = r - rr
    out = np.zeros_like(img, dtype=F32)
    for i in range(off, 2 * r + 1 - off):
        out += k[i] * x[i - off:i - off + h]
    return out


def area_downsample(a: np.ndarray, f: int) -> np.ndarray:
    """Mean over ``f x f`` blocks (exact area averaging)."""
    if f == 1:
        return a
    h, w = a.shape[0] // f, a.shape[1] // f
    out = np.zeros((h, w, *a.shape[2:]), F32)
    for i in range(f):
        for j in range(f):
            out += a[i:h * f:f, j:w * f:f]
    out *= np.float32(1.0 / (f * f))
    return out


# ------------------------------------------------------------------------------------- windows/SDF
class Win:
    """A pixel window ``[x0, x1) x [y0, y1)`` with its pixel-centre coordinates (broadcastable)."""

    __slots__ = ("x0", "y0", "x1", "y1", "X", "Y")

    def __init__(self, x0: int, y0: int, x1: int, y1: int, scale: float = 1.0) -> None:
        self.x0, self.y0, self.x1, self.y1 = x0, y0, x1, y1
        self.X = ((np.arange(x0, x1, dtype=F32) + 0.5) * scale)[None, :]
        self.Y = ((np.arange(y0, y1, dtype=F32) + 0.5) * scale)[:, None]

    @property
    def sl(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    def frame(self, cx: float, cy: float, theta: float) -> tuple[np.ndarray, np.ndarray]:
        """Coordinates in an object frame centred at ``(cx, cy)`` rotated by ``theta``."""
        c, s = np.float32(np.cos(theta)), np.float32(np.sin(theta))
        dx, dy = self.X - np.float32(cx), self.Y - np.float32(cy)
        return dx * c + dy * s, -dx * s + dy * c


def window(cx: float, cy: float, r: float, H: int, W: int) -> Win | None:
    """The window of radius ``r`` around ``(cx, cy)`` clipped to an ``H x W`` image (None if empty)."""
    x0, y0 = max(0, int(np.floor(cx - r))), max(0, int(np.floor(cy - r)))
    x1, y1 = min(W, int(np.ceil(cx + r)) + 1), min(H, int(np.ceil(cy + r)) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    return Win(x0, y0, x1, y1)


def sd_box(u: np.ndarray, v: np.ndarray, a: float, b: float, r: float = 0.0) -> np.ndarray:
    """Box of half-sizes ``a`` (along u) and ``b``, corners rounded by ``r``."""
    qu, qv = np.abs(u) - (a - r), np.abs(v) - (b - r)
    outside = np.sqrt(np.maximum(qu, 0) ** 2 + np.maximum(qv, 0) ** 2)
    return outside + np.minimum(np.maximum(qu, qv), 0) - r


def sd_ellipse(u: np.ndarray, v: np.ndarray, a: float, b: float) -> np.ndarray:
    """Approximate distance to an ellipse with semi-axes ``a``, ``b`` (exact for circles)."""
    k = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    return (k - 1.0) * min(a, b)


def sd_convex(u: np.ndarray, v: np.ndarray, verts: Sequence[tuple[float, float]]) -> np.ndarray:
    """Max of half-plane distances of a convex polygon (vertices counter-clockwise in (u, v))."""
    d = None
    n = len(verts)
    for i in range(n):
        (pu, pv), (qu, qv) = verts[i], verts[(i + 1) % n]
        eu, ev = qu - pu, qv - pv
        ln = float(np.hypot(eu, ev)) or 1.0
        # outward normal of a CCW polygon edge is (ev, -eu)
        di = ((u - pu) * ev - (v - pv) * eu) / ln
        d = di if d is None else np.maximum(d, di)
    return d


def sd_segment(X: np.ndarray, Y: np.ndarray, p: tuple[float, float], q: tuple[float, float], r: float) -> np.ndarray:
    """Capsule of radius ``r`` around the segment ``p -> q``."""
    px, py = p
    dx, dy = q[0] - px, q[1] - py
    L2 = dx * dx + dy * dy or 1e-12
    t = np.clip(((X - px) * dx + (Y - py) * dy) / L2, 0.0, 1.0)
    return np.sqrt((X - px - t * dx) ** 2 + (Y - py - t * dy) ** 2) - r


def coverage(d: np.ndarray, aa: float = 1.0) -> np.ndarray:
    """Anti-aliased inside-fraction from a signed distance in pixels (``aa`` = edge width)."""
    return np.clip(0.5 - d / aa, 0.0, 1.0).astype(F32)


def paint(img: np.ndarray, win: Win, cov: np.ndarray, color, alpha: float = 1.0) -> None:
    """Alpha-blend ``color`` (scalar, per-channel, or per-pixel) into ``img`` under ``cov``."""
    color = np.asarray(color, dtype=F32)
    hw = (win.y1 - win.y0, win.x1 - win.x0)
    if cov.shape != hw:
        cov = np.broadcast_to(cov, hw)
    rows, cols = np.flatnonzero(cov.any(axis=1)), np.flatnonzero(cov.any(axis=0))
    if rows.size == 0:
        return
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1   # crop to the covered part
    cov = cov[r0:r1, c0:c1]
    if color.ndim >= 2:
        color = color[r0:r1, c0:c1]
    sub = img[win.y0 + r0:win.y0 + r1, win.x0 + c0:win.x0 + c1]
    a = cov * np.float32(alpha) if alpha != 1.0 else cov
    if sub.ndim == 3:
        a = a[..., None]
    sub += a * (color - sub)


def bbox_of(win: Win, cov: np.ndarray, thr: float = 0.5) -> tuple[float, float, float, float] | None:
    """Axis-aligned box (xyxy, pixel edges) of the pixels with coverage >= ``thr``."""
    m = cov >= thr
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    if rows.size == 0:
        return None
    return (float(win.x0 + cols[0]), float(win.y0 + rows[0]), float(win.x0 + cols[-1] + 1), float(win.y0 + rows[-1] + 1))


def free(occ: np.ndarray, win: Win, cov: np.ndarray, thr: float = 0.05) -> bool:
    """True when no pixel of the shape (``cov > thr``) is already occupied."""
    return not bool((occ[win.sl] & (cov > thr)).any())


def to_uint8(img: np.ndarray) -> np.ndarray:
    """``[0, 1]`` floats to uint8 with rounding (clipped)."""
    out = np.multiply(img, np.float32(255.0), dtype=F32)
    out += np.float32(0.5)
    np.clip(out, 0, 255.0, out=out)
    return out.astype(np.uint8)


def boxes_array(boxes: list, labels: list) -> tuple[np.ndarray, np.ndarray]:
    b = np.asarray(boxes, dtype=F32).reshape(-1, 4)
    lab = np.asarray(labels, dtype=np.int64).reshape(-1)
    return b, lab
