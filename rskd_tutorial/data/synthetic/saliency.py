"""Salient-object scenes (ORSSD-like) defined once, rasterised at any resolution.

What it imitates. Optical remote-sensing salient object detection (ORSSD, EORSSD, ORSI-4199): one
to three objects that stand out from their surroundings (a building with a distinct roof, ships on
water, airplanes on an apron, an island, a road through fields) with pixel-accurate binary masks, on
backgrounds full of clutter that is *not* salient (trees, small low-contrast roofs, field boundaries,
rocks, texture). Hard cases are included: thin objects (roads a few pixels wide at 112 px), small
objects, and low-contrast objects whose colour is close to the background's.

Resolution independence (the SCRKD cascade needs it: a teacher at 448 px, an assistant at 224 and a
student at 112 must see the same scene). A scene is a list of analytic primitives (signed distance
functions) in normalised coordinates ``[0, 1]^2``, plus texture lattices that are interpolated
continuously. ``saliency_scene(seed, resolution)`` rasterises it with anti-aliasing: render at
``supersample x resolution`` pixels (pixel-centre sampling, one-pixel soft edges) and average
``supersample x supersample`` blocks (area downsampling). The mask is the union of the salient
primitives' coverage, area-downsampled the same way and thresholded at 0.5. Hence the mask at 112
equals the 4x4 area-downsampled mask at 448 up to pixels on the object border, at every seed.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ._common import F32, area_downsample, resize_f, rngs, to_uint8

__all__ = ["saliency_scene"]

_KIND = 404
SDF = Callable[[np.ndarray, np.ndarray], np.ndarray]


# ------------------------------------------------------------------------- analytic primitives
def _frame(X, Y, cx, cy, th):
    c, s = np.float32(np.cos(th)), np.float32(np.sin(th))
    dx, dy = X - np.float32(cx), Y - np.float32(cy)
    return dx * c + dy * s, -dx * s + dy * c


def _box(u, v, a, b):
    qu, qv = np.abs(u) - a, np.abs(v) - b
    return np.sqrt(np.maximum(qu, 0) ** 2 + np.maximum(qv, 0) ** 2) + np.minimum(np.maximum(qu, qv), 0)


def _convex(u, v, verts):
    d = None
    for i in range(len(verts)):
        (pu, pv), (qu, qv) = verts[i], verts[(i + 1) % len(verts)]
        eu, ev = qu - pu, qv - pv
        ln = float(np.hypot(eu, ev)) or 1.0
        di = ((u - pu) * ev - (v - pv) * eu) / ln
        d = di if d is None else np.maximum(d, di)
    return d


def _seg(X, Y, p, q, r):
    dx, dy = q[0] - p[0], q[1] - p[1]
    L2 = dx * dx + dy * dy or 1e-12
    t = np.clip(((X - p[0]) * dx + (Y - p[1]) * dy) / L2, 0, 1)
    return np.sqrt((X - p[0] - t * dx) ** 2 + (Y - p[1] - t * dy) ** 2) - r


class _Prim:
    """A primitive: normalised bbox, SDF, colour (RGB), texture amplitude, salient flag, alpha."""

    def __init__(self, bbox, sdf: SDF, color, tex: float = 0.05, salient: bool = False, alpha: float = 1.0,
                 segments: list | None = None) -> None:
        self.bbox = bbox
        self.sdf = sdf
        self.color = np.asarray(color, F32)
        self.tex = tex
        self.salient = salient
        self.alpha = alpha
        self.segments = segments   # roads: evaluated segment by segment in small windows


def _building(g, cx, cy, size, color, salient=True, lshape=None):
    th = g.uniform(0, np.pi)
    a, b = size, size * g.uniform(0.45, 1.0)
    lshape = g.random() < 0.35 if lshape is None else lshape
    ou, ov = a * 0.55, b * 1.1

    def sdf(X, Y):
        u, v = _frame(X, Y, cx, cy, th)
        d = _box(u, v, a, b)
        if lshape:
            d = np.minimum(d, _box(u - ou, v - ov, a * 0.45, b * 0.9))
        return d

    r = (a + b) * (2.0 if lshape else 1.2)
    return _Prim((cx - r, cy - r, cx + r, cy + r), sdf, color, 0.04, salient)


def _shadow_of(prim: _Prim, dx, dy):
    sdf0 = prim.sdf
    x0, y0, x1, y1 = prim.bbox
    return _Prim((x0 + min(dx, 0), y0 + min(dy, 0), x1 + max(dx, 0), y1 + max(dy, 0)),
                 lambda X, Y: sdf0(X - dx, Y - dy), (0.03, 0.03, 0.04), 0.0, False, 0.55)


def _ship(g, cx, cy, L, color):
    th = g.uniform(0, 2 * np.pi)
    a, b = L / 2, L / 2 * g.uniform(0.16, 0.28)
    bow = min(2.2 * b, 0.35 * L)

    def sdf(X, Y):
        u, v = _frame(X, Y, cx, cy, th)
        return np.minimum(_box(u + bow / 2, v, a - bow / 2, b), _convex(u, v, [(a - bow, -b), (a, 0.0), (a - bow, b)]))

    return _Prim((cx - a - 0.01, cy - a - 0.01, cx + a + 0.01, cy + a + 0.01), sdf, color, 0.05, True)


def _airplane(g, cx, cy, span, color):
    th = g.uniform(0, 2 * np.pi)
    Lf = span * g.uniform(0.85, 1.1)
    fw, sw, tc, r = 0.055 * Lf, g.uniform(0.1, 0.22) * Lf, 0.07 * Lf, span / 2
    h = span * g.uniform(0.3, 0.4) / 2
    wing = [(0.12 * Lf, 0.0), (0.12 * Lf - sw, r), (0.12 * Lf - sw - tc, r), (-0.1 * Lf, 0.0)]
    tail = [(-0.33 * Lf, 0.0), (-0.33 * Lf - 0.6 * sw, h), (-0.33 * Lf - 0.6 * sw - 0.6 * tc, h), (-0.47 * Lf, 0.0)]

    def sdf(X, Y):
        u, v = _frame(X, Y, cx, cy, th)
        d = _box(u, v, Lf / 2, fw)
        for poly in (wing, tail):
            d = np.minimum(d, _convex(u, v, poly))
            d = np.minimum(d, _convex(u, v, [(p, -q) for p, q in reversed(poly)]))
        return d

    R = max(Lf, span) / 2 + 0.01
    return _Prim((cx - R, cy - R, cx + R, cy + R), sdf, color, 0.03, True)


def _island(g, cx, cy, r0, color):
    ks = np.arange(2, 6)
    amp = g.uniform(0, 0.12, ks.size)
    ph = g.uniform(0, 2 * np.pi, ks.size)

    def sdf(X, Y):
        dx, dy = X - cx, Y - cy
        phi = np.arctan2(dy, dx)
        rr = r0 * (1 + sum(a * np.cos(k * phi + p) for k, a, p in zip(ks, amp, ph)))
        return np.sqrt(dx * dx + dy * dy) - rr

    R = r0 * (1 + amp.sum()) + 0.01
    return _Prim((cx - R, cy - R, cx + R, cy + R), sdf, color, 0.12, True)


def _road(g, width, color, salient=True):
    side = g.integers(4)
    t0, t1 = g.uniform(0.1, 0.9, 2)
    ends = [(t0, 0.0), (1.0, t0), (t0, 1.0), (0.0, t0)]
    p0 = np.array(ends[side])
    p2 = np.array([(t1, 1.0), (0.0, t1), (t1, 0.0), (1.0, t1)][side])
    p1 = np.array([0.5, 0.5]) + g.uniform(-0.3, 0.3, 2)
    ts = np.linspace(0, 1, 24)[:, None]
    pts = (1 - ts) ** 2 * p0 + 2 * (1 - ts) * ts * p1 + ts ** 2 * p2
    segs = [(tuple(pts[i]), tuple(pts[i + 1])) for i in range(len(pts) - 1)]

    def sdf(X, Y):
        d = None
        for p, q in segs:
            di = _seg(X, Y, p, q, width / 2)
            d = di if d is None else np.minimum(d, di)
        return d

    return _Prim((0, 0, 1, 1), sdf, color, 0.05, salient, segments=[(p, q, width / 2) for p, q in segs])


# ----------------------------------------------------------------------------------- the scene
_WATER = [(0.08, 0.2, 0.28), (0.12, 0.26, 0.3), (0.1, 0.17, 0.22)]
_GROUND = [(0.35, 0.42, 0.25), (0.5, 0.47, 0.36), (0.45, 0.44, 0.42), (0.3, 0.36, 0.22), (0.55, 0.5, 0.4)]


def _mix(g, c, bg, low):
    c, bg = np.asarray(c, F32), np.asarray(bg, F32)
    if low:  # low-contrast object: close to the background colour
        return bg + (c - bg) * g.uniform(0.35, 0.55)
    return c


class SaliencySceneSpec:
    """The resolution-free description of one scene (built from the seed only)."""

    def __init__(self, seed: int) -> None:
        g, _ = rngs(seed, _KIND)
        self.seed = seed
        self.theme = str(g.choice(["land", "water", "urban", "airport"], p=[0.3, 0.3, 0.2, 0.2]))
        self.lattices = [g.standard_normal((n, n)).astype(F32) for n in (5, 17, 65)]
        self.region_seeds = g.random((int(g.integers(2, 6)), 2)).astype(F32)
        self.region_cols = [np.asarray(_GROUND[i], F32) + g.normal(0, 0.03, 3).astype(F32)
                            for i in g.integers(0, len(_GROUND), len(self.region_seeds))]
        self.warp = [g.standard_normal((4, 4)).astype(F32) for _ in range(2)]
        self.water_col = np.asarray(_WATER[g.integers(len(_WATER))], F32)
        self.ground_amp = g.uniform(0.08, 0.2)
        self.coast = (g.uniform(0, 2 * np.pi), g.uniform(0.15, 0.35)) if self.theme == "water" and g.random() < 0.5 else None
        self.sun = (g.uniform(-1, 1), g.uniform(-1, 1))
        self.prims: list[_Prim] = []
        self.noise = g.uniform(0.006, 0.02)
        self._build(g)

    def _bg_colour(self, x, y):
        if self.theme == "water":
            return self.water_col
        if self.theme == "airport":
            return np.array([0.58, 0.58, 0.55], F32)
        d = ((self.region_seeds - [x, y]) ** 2).sum(1)
        return self.region_cols[int(d.argmin())]

    def _place(self, g, margin, water: bool = False):
        for _ in range(20):
            x, y = g.uniform(margin, 1 - margin), g.uniform(margin, 1 - margin)
            if not water or self.coast is None:
                break
            a, off = self.coast
            if (x - 0.5) * np.cos(a) + (y - 0.5) * np.sin(a) - (0.5 - off) < -0.08:  # on the sea side
                break
        return x, y

    def _build(self, g) -> None:
        P = self.prims
        sdx, sdy = self.sun[0] * 0.012, self.sun[1] * 0.012
        # --- clutter (never salient): trees, small low-contrast roofs, rocks, lines
        for _ in range(int(g.integers(0, 4))):
            cx, cy = g.random(2)
            for _k in range(int(g.integers(3, 25))):
                x, y, r = cx + g.normal(0, 0.08), cy + g.normal(0, 0.08), g.uniform(0.008, 0.025)
                if self.theme == "water":
                    continue
                P.append(_Prim((x - r, y - r, x + r, y + r),
                               (lambda X, Y, x=x, y=y, r=r: np.sqrt((X - x) ** 2 + (Y - y) ** 2) - r),
                               (0.12, 0.22, 0.1), 0.2, False))
        n_small = int(g.integers(3, 14)) if self.theme in ("urban", "land") else int(g.integers(0, 4)) * (self.theme == "airport")
        for _ in range(n_small):
            x, y = self._place(g, 0.03)
            bg = self._bg_colour(x, y)
            col = bg * g.uniform(0.75, 1.3) + g.normal(0, 0.04, 3)
            b = _building(g, x, y, g.uniform(0.01, 0.03), np.clip(col, 0, 1), salient=False, lshape=False)
            P.append(_shadow_of(b, sdx * 0.5, sdy * 0.5))
            P.append(b)
        for _ in range(int(g.integers(0, 3))):  # field boundaries / tracks: thin non-salient lines
            if self.theme in ("land", "urban"):
                P.append(_road(g, g.uniform(0.003, 0.006), (0.6, 0.58, 0.5), salient=False))
        if self.theme == "water":  # rocks, buoys, whitecaps: small, low contrast, not salient
            for _ in range(int(g.integers(2, 12))):
                x, y, r = g.uniform(0, 1), g.uniform(0, 1), g.uniform(0.004, 0.014)
                col = self.water_col * g.uniform(1.2, 1.8)
                P.append(_Prim((x - r, y - r, x + r, y + r),
                               (lambda X, Y, x=x, y=y, r=r: np.sqrt((X - x) ** 2 + 2 * (Y - y) ** 2) - r),
                               np.clip(col, 0, 1), 0.1, False, g.uniform(0.5, 0.9)))
        if self.theme == "airport":
            for _ in range(int(g.integers(1, 3))):
                P.append(_road(g, g.uniform(0.004, 0.008), (0.85, 0.75, 0.2), salient=False))
        # --- salient objects (1-3), drawn last so clutter never hides them
        n = int(g.choice([1, 1, 2, 2, 3]))
        for _ in range(n):
            low = g.random() < 0.2
            small = g.random() < 0.25
            if self.theme == "water":
                if g.random() < 0.3 and not small:
                    x, y = self._place(g, 0.25, water=True)
                    P.append(_island(g, x, y, g.uniform(0.08, 0.2), _mix(g, (0.35, 0.45, 0.25), self.water_col, low)))
                else:
                    x, y = self._place(g, 0.12, water=True)
                    L = g.uniform(0.04, 0.07) if small else g.uniform(0.1, 0.3)
                    col = g.choice([(0.85, 0.85, 0.85), (0.7, 0.3, 0.2), (0.6, 0.6, 0.62)])
                    P.append(_ship(g, x, y, L, _mix(g, col, self.water_col, low)))
            elif self.theme == "airport":
                x, y = self._place(g, 0.15)
                span = g.uniform(0.06, 0.1) if small else g.uniform(0.15, 0.35)
                plane = _airplane(g, x, y, span, _mix(g, (0.92, 0.92, 0.94), (0.58, 0.58, 0.55), low))
                P.append(_shadow_of(plane, sdx, sdy))
                P.append(plane)
            elif self.theme == "land" and g.random() < 0.35:
                w = g.uniform(0.012, 0.02) if small else g.uniform(0.02, 0.035)
                P.append(_road(g, w, _mix(g, (0.72, 0.7, 0.66), (0.35, 0.42, 0.25), low)))
            else:
                x, y = self._place(g, 0.15)
                size = g.uniform(0.03, 0.05) if small else g.uniform(0.07, 0.17)
                col = g.choice([(0.8, 0.25, 0.2), (0.2, 0.4, 0.75), (0.92, 0.92, 0.9), (0.85, 0.6, 0.2)])
                b = _building(g, x, y, size, _mix(g, col, self._bg_colour(x, y), low))
                P.append(_shadow_of(b, sdx * 1.5, sdy * 1.5))
                P.append(b)

    # ------------------------------------------------------------------------------ render
    def render(self, resolution: int, supersample: int = 2) -> tuple[np.ndarray, np.ndarray]:
        N = int(resolution) * int(supersample)
        X = ((np.arange(N, dtype=F32) + 0.5) / N)[None, :]
        Y = ((np.arange(N, dtype=F32) + 0.5) / N)[:, None]
        tex = sum(a * resize_f(lat, N, N) for a, lat in zip((1.0, 0.5, 0.25), self.lattices)) / F32(1.0)
        # background
        if self.theme == "water":
            img = np.broadcast_to(self.water_col, (N, N, 3)) * (1 + 0.05 * tex)[..., None]
            if self.coast is not None:
                a, off = self.coast
                s = (X - 0.5) * np.cos(a) + (Y - 0.5) * np.sin(a) - (0.5 - off) + 0.03 * resize_f(self.warp[0], N, N)
                land = np.clip(0.5 + s * N, 0, 1)[..., None]
                ground = self.region_cols[0] * (1 + self.ground_amp * tex)[..., None]
                img = img + land * (ground - img)
        elif self.theme == "airport":
            img = np.broadcast_to(np.array([0.58, 0.58, 0.55], F32), (N, N, 3)) * (1 + 0.06 * tex)[..., None]
        else:
            Xw = X + 0.05 * resize_f(self.warp[0], N, N)
            Yw = Y + 0.05 * resize_f(self.warp[1], N, N)
            d = np.stack([(Xw - sx) ** 2 + (Yw - sy) ** 2 for sx, sy in self.region_seeds])
            lab = d.argmin(0)
            img = np.take(np.stack(self.region_cols), lab, axis=0) * (1 + self.ground_amp * tex)[..., None]
        img = np.ascontiguousarray(img, dtype=F32)
        mask = np.zeros((N, N), F32)
        for p in self.prims:
            x0, y0 = max(0, int(np.floor(p.bbox[0] * N))), max(0, int(np.floor(p.bbox[1] * N)))
            x1, y1 = min(N, int(np.ceil(p.bbox[2] * N)) + 1), min(N, int(np.ceil(p.bbox[3] * N)) + 1)
            if x1 <= x0 or y1 <= y0:
                continue
            Xs, Ys = X[:, x0:x1], Y[y0:y1]
            if p.segments is not None:  # thin curves: evaluate each segment in its own window
                d = np.full((y1 - y0, x1 - x0), np.inf, F32)
                for a, b, r in p.segments:
                    sx0 = max(x0, int((min(a[0], b[0]) - r) * N) - 2)
                    sx1 = min(x1, int((max(a[0], b[0]) + r) * N) + 3)
                    sy0 = max(y0, int((min(a[1], b[1]) - r) * N) - 2)
                    sy1 = min(y1, int((max(a[1], b[1]) + r) * N) + 3)
                    if sx1 <= sx0 or sy1 <= sy0:
                        continue
                    sub = d[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0]
                    np.minimum(sub, _seg(X[:, sx0:sx1], Y[sy0:sy1], a, b, r), out=sub)
            else:
                d = p.sdf(Xs, Ys)
            cov = np.clip(0.5 - d * N, 0, 1).astype(F32)
            if not cov.any():
                continue
            sub = img[y0:y1, x0:x1]
            col = p.color * (1 + p.tex * tex[y0:y1, x0:x1])[..., None]
            sub += (cov * p.alpha)[..., None] * (col - sub)
            if p.salient:
                np.maximum(mask[y0:y1, x0:x1], cov, out=mask[y0:y1, x0:x1])
            elif p.alpha >= 0.99:  # opaque clutter drawn over a salient object would hide it
                mask[y0:y1, x0:x1] *= 1 - cov
        img = area_downsample(img, supersample)
        soft = area_downsample(mask, supersample)
        _, t = rngs(self.seed * 7919 + resolution, _KIND)
        img = img + t.standard_normal(img.shape[:2], dtype=F32)[..., None] * F32(self.noise)
        return to_uint8(img), np.where(soft >= 0.5, 255, 0).astype(np.uint8)


def saliency_scene(seed: int, resolution: int, *, supersample: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Render scene ``seed`` at ``resolution`` px: ``(image uint8 [R, R, 3], mask uint8 [R, R] 0/255)``.

    The same seed gives the same content at every resolution (448, 224, 112, 56 ...): the scene is
    built from the seed alone and only rasterised at ``resolution`` (anti-aliased by
    ``supersample``-fold supersampling and area downsampling).
    """
    return SaliencySceneSpec(int(seed)).render(int(resolution), supersample)
