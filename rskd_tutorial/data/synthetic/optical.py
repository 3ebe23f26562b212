"""Optical remote-sensing scenes (DIOR-like): dense small objects of five classes on cluttered ground.

What it imitates. A nadir-looking optical satellite/aerial image: the radiance of each pixel is the
ground's reflectance (colour) times the sun illumination, with cast shadows on the side away from
the sun, blurred a little by the optics and corrupted by sensor noise. The optics' blur is applied
analytically rather than by convolving the image: every edge is drawn as a ramp about one point
spread function wide (Gaussian sigma ~0.45 px at 192 px), and the sensor noise (mostly luminance)
is added afterwards, unblurred, as on a real sensor. DIOR/DOTA are hard because

* objects are small and densely packed (parking-lot rows of vehicles, harbour rows of ships, tank
  farms), with arbitrary orientation while the boxes stay horizontal;
* the background is textured (fields with crop rows, grass, forest, asphalt, concrete, water) and
  holds object-like distractors (trees, roof fixtures, road markings, roundabouts, containment walls);
* contrast varies: some objects nearly match the ground they sit on (grey cars on asphalt, white
  planes on concrete).

Classes (``OPTICAL_CLASSES``, category ids 1..5): ``vehicle`` (small elongated, windshield, 2:1),
``ship`` (elongated hull with a pointed bow, superstructure at the stern, wake when moving, only on
water), ``airplane`` (cross-shaped: fuselage, swept wings, tail plane, engines), ``storage-tank``
(round, bright top with a darker rim and a cast shadow), ``building`` (large rectangles, roof colour,
roof details, long shadow).

Every length is expressed in units of ``size / 192`` pixels, so a scene rendered at 96, 192 or 512 px
is the same task at a different resolution (at 192 px vehicles are about 6-10 px long). Geometry
is drawn from one random generator and pixel texture from another, so one seed gives a similar
layout at every size (not an identical one: overlap rejection is decided on the pixel grid).
A fraction ``empty_prob`` of scenes hold no objects (only clutter).

Boxes are the axis-aligned extent of the rendered (rotated) object body: the pixels with coverage
>= 0.5, so a box always matches what is drawn and never includes shadows or wakes.
"""

from __future__ import annotations

import numpy as np

from ._common import (
    F32, Win, bbox_of, boxes_array, coverage, free, paint, rngs, sd_box, sd_convex,
    sd_ellipse, to_uint8, value_noise, window,
)

__all__ = ["OPTICAL_CLASSES", "optical_scene"]

OPTICAL_CLASSES: tuple[str, ...] = ("vehicle", "ship", "airplane", "storage-tank", "building")
VEHICLE, SHIP, AIRPLANE, TANK, BUILDING = 1, 2, 3, 4, 5
_KIND = 101

# land cover: base colour, texture amplitude, texture scale (blobs across the image)
_LAND = {
    "grass": ((0.32, 0.42, 0.22), 0.10),
    "field": ((0.50, 0.50, 0.30), 0.06),
    "soil": ((0.52, 0.43, 0.33), 0.08),
    "forest": ((0.17, 0.26, 0.14), 0.22),
    "urban": ((0.44, 0.43, 0.42), 0.12),
    "concrete": ((0.60, 0.59, 0.56), 0.06),
}
_WATER = (0.10, 0.19, 0.25)
_CAR_COLOURS = np.array([
    (0.88, 0.88, 0.86), (0.86, 0.86, 0.84), (0.10, 0.10, 0.11), (0.12, 0.12, 0.14), (0.62, 0.62, 0.64),
    (0.45, 0.45, 0.47), (0.62, 0.12, 0.10), (0.15, 0.22, 0.48), (0.20, 0.30, 0.22), (0.70, 0.64, 0.50),
], dtype=F32)
_ROOF_COLOURS = np.array([
    (0.62, 0.60, 0.58), (0.70, 0.70, 0.72), (0.55, 0.30, 0.24), (0.40, 0.45, 0.55), (0.82, 0.82, 0.80),
    (0.35, 0.36, 0.38), (0.55, 0.55, 0.45),
], dtype=F32)


class _Scene:
    def __init__(self, size: int, seed: int, empty_prob: float, density: float) -> None:
        self.S = size
        self.u = size / 192.0
        self.g, self.t = rngs(seed, _KIND)
        self.img = np.zeros((size, size, 3), F32)
        self.occ = np.zeros((size, size), bool)
        self.boxes: list[tuple[float, float, float, float]] = []
        self.labels: list[int] = []
        self.density = density
        self.empty = bool(self.g.random() < empty_prob)
        self.theta0 = float(self.g.uniform(0, np.pi))           # street-grid orientation
        self.sun = float(self.g.uniform(0, 2 * np.pi))          # shadows point away from the sun
        self.water = np.zeros((size, size), bool)
        self.aa = max(1.0, 1.1 * self.u)   # edges are ramps about one optics PSF wide (sigma ~ 0.45 u)

    def cov(self, d: np.ndarray, soft: float = 1.0) -> np.ndarray:
        return coverage(d, self.aa * soft)

    # -------------------------------------------------------------------------------- helpers
    def rand_pt(self, margin: float = 0.0) -> tuple[float, float]:
        m = margin * self.u
        return float(self.g.uniform(m, self.S - m)), float(self.g.uniform(m, self.S - m))

    def shadow_uv(self, theta: float, length: float) -> tuple[float, float]:
        dx, dy = -np.cos(self.sun) * length, -np.sin(self.sun) * length
        c, s = np.cos(theta), np.sin(theta)
        return dx * c + dy * s, -dx * s + dy * c

    def contrast(self, win: Win, color: np.ndarray) -> np.ndarray:
        """Sometimes pull the colour towards the local ground (low-contrast objects)."""
        if self.g.random() < 0.2:
            bg = self.img[win.sl].reshape(-1, 3).mean(0)
            return (bg + (color - bg) * self.g.uniform(0.3, 0.6)).astype(F32)
        return color

    def fits(self, cx: float, cy: float, r: float) -> bool:
        """At most a small part of an object of half-length ``r`` may leave the image."""
        m = 0.6 * r
        return m <= cx <= self.S - m and m <= cy <= self.S - m

    def add(self, win: Win, cov: np.ndarray, label: int) -> None:
        box = bbox_of(win, cov)
        if box is None:
            return
        self.occ[win.sl] |= cov > 0.05
        self.boxes.append(box)
        self.labels.append(label)

    # ----------------------------------------------------------------------------- background
    def background(self) -> None:
        S, g, t = self.S, self.g, self.t
        f = 2 if S >= 256 else 1          # the region map is smooth: build it at half resolution
        s2 = S // f
        X = (np.arange(s2, dtype=F32) + 0.5)[None, :] / s2
        Y = (np.arange(s2, dtype=F32) + 0.5)[:, None] / s2
        Xw = X + 0.06 * value_noise(g, s2, s2, 3)
        Yw = Y + 0.06 * value_noise(g, s2, s2, 3)
        k = int(g.integers(3, 7))
        names = list(_LAND)
        kinds = g.choice(len(names), size=k, p=[0.22, 0.16, 0.14, 0.12, 0.24, 0.12])
        seeds = g.random((k, 2)).astype(F32)
        d = np.stack([(Xw - sx) ** 2 + (Yw - sy) ** 2 for sx, sy in seeds])
        label = d.argmin(0)               # nearest seed of a warped Voronoi diagram
        if f > 1:
            label = np.repeat(np.repeat(label, f, 0), f, 1)
            if label.shape[0] < S:
                label = np.pad(label, ((0, S - label.shape[0]), (0, S - label.shape[1])), mode="edge")
        cols = np.array([_LAND[names[i]][0] for i in kinds], F32) + g.normal(0, 0.03, (k, 3)).astype(F32)
        amps = np.array([_LAND[names[i]][1] for i in kinds], F32)
        tex = value_noise(t, S, S, 24, octaves=3)
        img = np.take(cols, label, axis=0)
        img *= (1.0 + np.take(amps, label) * tex)[..., None]
        Xs = (np.arange(S, dtype=F32) + 0.5)[None, :]
        Ys = (np.arange(S, dtype=F32) + 0.5)[:, None]
        for j in range(k):  # crop rows on fields
            if names[kinds[j]] == "field":
                phi, period = g.uniform(0, np.pi), g.uniform(3, 6) * self.u
                m = label == j
                ph = (Xs * np.float32(np.cos(phi)) + Ys * np.float32(np.sin(phi)))[m]
                img[m] += (0.05 * np.sin(ph * np.float32(2 * np.pi / period)))[:, None]
        self.img = img

    def add_water(self) -> None:
        S, g = self.S, self.g
        X = (np.arange(S, dtype=F32) + 0.5)[None, :] / S
        Y = (np.arange(S, dtype=F32) + 0.5)[:, None] / S
        a = g.uniform(0, 2 * np.pi)
        off = g.uniform(-0.25, 0.15)
        s = (X - 0.5) * np.cos(a) + (Y - 0.5) * np.sin(a) + off + 0.05 * value_noise(g, S, S, 2, octaves=2)
        if g.random() < 0.3:  # a river: a band instead of a half plane
            s = 0.12 + g.uniform(0, 0.08) - np.abs(s - off)
        mix = np.clip(s * S / (1.5 * self.u) + 0.5, 0, 1).astype(F32)
        col = np.array(_WATER, F32) + g.normal(0, 0.02, 3).astype(F32)
        wat = col * (1 + 0.05 * value_noise(self.t, S, S, 6))[..., None]
        self.img += mix[..., None] * (wat - self.img)
        self.water = mix > 0.5
        self.coast_dir = a

    def roads(self) -> None:
        S, g, u = self.S, self.g, self.u
        self.road_lines = []
        Xs = np.arange(S, dtype=F32)[None, :] + 0.5
        Ys = np.arange(S, dtype=F32)[:, None] + 0.5
        for _ in range(int(g.choice([0, 1, 1, 2, 2, 3]))):
            cx, cy = self.rand_pt()
            th = self.theta0 + (np.pi / 2) * int(g.integers(0, 2)) if g.random() < 0.7 else g.uniform(0, np.pi)
            w = g.uniform(2.5, 6) * u
            grey = np.float32(g.uniform(0.28, 0.42))
            dashed = g.random() < 0.6
            n = (Xs - np.float32(cx)) * np.float32(-np.sin(th)) + (Ys - np.float32(cy)) * np.float32(np.cos(th))
            m = np.abs(n) < w + 1          # evaluate only the road band
            nb = n[m]
            cov = self.cov(np.abs(nb) - w)[:, None]
            px = self.img[m]
            px += cov * (np.array((grey, grey, grey * 1.02), F32) - px)
            if dashed:  # dashed centre line: a thin bright distractor
                along = ((Xs - np.float32(cx)) * np.float32(np.cos(th)) + (Ys - np.float32(cy)) * np.float32(np.sin(th)))[m]
                dash = (np.sin(along * np.float32(2 * np.pi / (6 * u))) > 0.2).astype(F32)
                cl = (self.cov(np.abs(nb) - 0.35 * u) * dash * 0.7)[:, None]
                px += cl * (np.array((0.85, 0.85, 0.8), F32) - px)
            self.img[m] = px
            self.road_lines.append((cx, cy, th, w))

    # -------------------------------------------------------------------------------- objects
    def vehicle(self, cx: float, cy: float, th: float, L: float | None = None, color=None) -> bool:
        g, u = self.g, self.u
        L = L if L is not None else g.uniform(6.0, 10.0) * u
        a, b = L / 2, L / 2 * g.uniform(0.42, 0.55)
        win = window(cx, cy, a + 2 * u + 1, self.S, self.S)
        if win is None or not self.fits(cx, cy, a):
            return False
        U, V = win.frame(cx, cy, th)
        cov = self.cov(sd_box(U, V, a, b, 0.35 * b))
        if not free(self.occ, win, cov):
            return False
        su, sv = self.shadow_uv(th, 1.0 * u)
        paint(self.img, win, self.cov(sd_box(U - su, V - sv, a, b, 0.35 * b)), (0.05, 0.05, 0.06), 0.35)
        col = _CAR_COLOURS[g.integers(len(_CAR_COLOURS))] if color is None else np.asarray(color, F32)
        col = self.contrast(win, col * F32(g.uniform(0.9, 1.1)))
        paint(self.img, win, cov, col)
        glass = self.cov(sd_box(U - 0.3 * a, V, 0.14 * a, 0.8 * b)) * cov
        paint(self.img, win, glass, col * 0.35 + 0.03)
        if g.random() < 0.5:
            paint(self.img, win, self.cov(sd_box(U + 0.62 * a, V, 0.08 * a, 0.75 * b)) * cov, col * 0.45 + 0.03)
        self.add(win, cov, VEHICLE)
        return True

    def ship(self, cx: float, cy: float, th: float, L: float, wake: bool = False) -> bool:
        g, u = self.g, self.u
        ix, iy = int(cx), int(cy)
        if not (0 <= ix < self.S and 0 <= iy < self.S and self.water[iy, ix]):
            return False
        a, b = L / 2, L / 2 * g.uniform(0.18, 0.3)
        bow = min(2.2 * b, 0.35 * L)
        win = window(cx, cy, a * (3.2 if wake else 1.0) + 2, self.S, self.S)
        if win is None or not self.fits(cx, cy, a):
            return False
        U, V = win.frame(cx, cy, th)
        d = np.minimum(sd_box(U + bow / 2, V, a - bow / 2, b, 0.4 * b),
                       sd_convex(U, V, [(a - bow - 0.5, -b), (a, 0.0), (a - bow - 0.5, b)]))
        cov = self.cov(d)
        if not free(self.occ, win, cov):
            return False
        if wake:
            tt = np.maximum(-U - a, 0)
            dw = np.where(U < -a + 1, np.abs(V) - b * (0.7 + 0.25 * tt / b), 1e3)
            paint(self.img, win, self.cov(dw, 1.5) * np.exp(-tt / (1.2 * L)).astype(F32), (0.7, 0.76, 0.78), 0.55)
        su, sv = self.shadow_uv(th, 0.8 * u)
        paint(self.img, win, self.cov(np.minimum(sd_box(U + bow / 2 - su, V - sv, a - bow / 2, b), 1e3)), (0.03, 0.05, 0.06), 0.3)
        hull = np.array(g.choice([(0.55, 0.55, 0.57), (0.35, 0.35, 0.38), (0.62, 0.25, 0.2), (0.8, 0.8, 0.8),
                                  (0.25, 0.3, 0.42)]), F32) * F32(g.uniform(0.85, 1.1))
        hull = self.contrast(win, hull)
        paint(self.img, win, cov, hull)
        paint(self.img, win, self.cov(sd_box(U + 0.6 * a, V, 0.16 * a, 0.7 * b)) * cov, (0.9, 0.9, 0.88))
        if g.random() < 0.45:  # deck cargo: coloured containers
            for k in range(int(g.integers(2, 6))):
                cu = -0.35 * a + k * 0.22 * a
                cc = np.array(g.choice([(0.7, 0.2, 0.15), (0.2, 0.4, 0.6), (0.8, 0.6, 0.2), (0.3, 0.5, 0.3)]), F32)
                paint(self.img, win, self.cov(sd_box(U - cu, V, 0.09 * a, 0.6 * b)) * cov, cc)
        self.add(win, cov, SHIP)
        return True

    def airplane(self, cx: float, cy: float, th: float, span: float) -> bool:
        g, u = self.g, self.u
        Lf = span * g.uniform(0.85, 1.1)
        fw = 0.055 * Lf
        sw, tc = g.uniform(0.1, 0.22) * Lf, 0.07 * Lf
        ts = span * g.uniform(0.3, 0.4)
        win = window(cx, cy, max(Lf, span) / 2 + 3 * u + 2, self.S, self.S)
        if win is None or not self.fits(cx, cy, max(Lf, span) / 2):
            return False
        U, V = win.frame(cx, cy, th)
        r, h = span / 2, ts / 2
        wing_r = [(0.12 * Lf, 0.0), (0.12 * Lf - sw, r), (0.12 * Lf - sw - tc, r), (-0.1 * Lf, 0.0)]
        tail_r = [(-0.33 * Lf, 0.0), (-0.33 * Lf - 0.6 * sw, h), (-0.33 * Lf - 0.6 * sw - 0.6 * tc, h), (-0.47 * Lf, 0.0)]

        def shape(U, V):
            d = sd_box(U, V, Lf / 2, fw, fw)
            for poly in (wing_r, tail_r):
                d = np.minimum(d, sd_convex(U, V, poly))
                d = np.minimum(d, sd_convex(U, V, [(p, -q) for p, q in reversed(poly)]))
            return d

        cov = self.cov(shape(U, V))
        if not free(self.occ, win, cov):
            return False
        su, sv = self.shadow_uv(th, 1.5 * u)
        paint(self.img, win, self.cov(shape(U - su, V - sv)), (0.04, 0.04, 0.05), 0.4)
        col = self.contrast(win, np.array([0.9, 0.9, 0.92], F32) * F32(g.uniform(0.8, 1.05)))
        paint(self.img, win, cov, col)
        for sgn in (-1, 1):
            ev = sgn * 0.3 * r
            eu = 0.12 * Lf - sw * 0.3 + 0.02 * Lf
            paint(self.img, win, self.cov(sd_ellipse(U - eu, V - ev, 0.06 * Lf, 0.02 * Lf + 0.3)), col * 0.55)
        self.add(win, cov, AIRPLANE)
        return True

    def tank(self, cx: float, cy: float, r: float) -> bool:
        g = self.g
        win = window(cx, cy, 1.8 * r + 2, self.S, self.S)
        if win is None or not self.fits(cx, cy, r):
            return False
        U, V = win.frame(cx, cy, 0.0)
        d = np.sqrt(U * U + V * V) - r
        cov = self.cov(d)
        if not free(self.occ, win, cov):
            return False
        sx, sy = -np.cos(self.sun) * 0.5 * r, -np.sin(self.sun) * 0.5 * r
        paint(self.img, win, self.cov(np.sqrt((U - sx) ** 2 + (V - sy) ** 2) - r), (0.04, 0.04, 0.05), 0.45)
        base = np.array(g.choice([(0.85, 0.85, 0.83), (0.75, 0.75, 0.72), (0.7, 0.72, 0.62), (0.92, 0.9, 0.86)]), F32)
        base = self.contrast(win, base)
        shade = (1 + 0.12 * (U * np.cos(self.sun) + V * np.sin(self.sun)) / r).astype(F32)
        paint(self.img, win, cov, base * shade[..., None])
        paint(self.img, win, self.cov(np.abs(d + 0.1 * r) - 0.06 * r) * cov, base * 0.7)
        if g.random() < 0.5:  # floating roof
            paint(self.img, win, self.cov(d + 0.22 * r), base * 0.85)
        self.add(win, cov, TANK)
        return True

    def building(self, cx: float, cy: float, th: float, a: float, b: float) -> bool:
        g, u = self.g, self.u
        height = g.uniform(0.25, 0.6) * min(a, b) + 1.5 * u
        win = window(cx, cy, np.hypot(a, b) + height + 2, self.S, self.S)
        if win is None or not self.fits(cx, cy, max(a, b)):
            return False
        U, V = win.frame(cx, cy, th)
        d = sd_box(U, V, a, b)
        cov = self.cov(d)
        if not free(self.occ, win, cov) or (self.water[win.sl] & (cov > 0.5)).any():
            return False
        su, sv = self.shadow_uv(th, height)
        # the shadow sweeps from the footprint to its displaced copy (a prism seen from above)
        sh = np.minimum(self.cov(sd_box(U - su, V - sv, a, b)) + self.cov(sd_box(U - su / 2, V - sv / 2, a, b)), 1)
        paint(self.img, win, sh, (0.05, 0.05, 0.06), 0.55)
        col = _ROOF_COLOURS[g.integers(len(_ROOF_COLOURS))] * F32(g.uniform(0.85, 1.12))
        col = self.contrast(win, col)
        paint(self.img, win, cov, col)
        paint(self.img, win, self.cov(np.abs(d + 0.6 * u) - 0.5 * u) * cov, col * 0.75)
        if g.random() < 0.5:  # ridge line
            paint(self.img, win, self.cov(np.abs(V) - 0.35 * u) * self.cov(np.abs(U) - a + 0.8 * u), col * 0.7)
        for _ in range(int(g.integers(0, 4))):  # roof fixtures
            fu, fv = g.uniform(-0.7, 0.7) * a, g.uniform(-0.7, 0.7) * b
            s = g.uniform(1.2, 2.5) * u
            paint(self.img, win, self.cov(sd_box(U - fu, V - fv, s, s * g.uniform(0.7, 1.0))), (0.8, 0.8, 0.8))
        self.add(win, cov, BUILDING)
        return True

    # ---------------------------------------------------------------------------- structures
    def pad(self, cx: float, cy: float, th: float, a: float, b: float, color, on_land: bool = True) -> Win | None:
        """A flat paved rectangle (parking lot, apron, tank-farm pad): background, not an object."""
        win = window(cx, cy, np.hypot(a, b) + 2, self.S, self.S)
        if win is None:
            return None
        U, V = win.frame(cx, cy, th)
        if on_land and self.water[win.sl].mean() > 0.05:  # paved areas stay on land
            return None
        tex = 1 + 0.04 * self.t.standard_normal(U.shape).astype(F32)
        paint(self.img, win, self.cov(sd_box(U, V, a, b)), np.asarray(color, F32) * tex[..., None])
        return win

    def parking_lot(self) -> None:
        g, u = self.g, self.u
        rows, cols = int(g.integers(1, 5)), int(g.integers(4, 13))
        L = g.uniform(6.5, 9.5) * u
        pitch = L * g.uniform(0.62, 0.8)           # side by side
        row_gap = L * g.uniform(1.15, 1.9)        # rows separated by aisles
        th = self.theta0 + (np.pi / 2) * int(g.integers(0, 2)) + g.normal(0, 0.05)
        a, b = cols * pitch / 2 + 2 * u, rows * row_gap / 2 + 1 * u
        grey = g.uniform(0.3, 0.5)
        for _try in range(4):
            cx, cy = self.rand_pt(margin=10)
            win = self.pad(cx, cy, th, a, b, (grey, grey, grey * 1.02))
            if win is not None:
                break
        else:
            return
        U, V = win.frame(cx, cy, th)
        occ_p = g.uniform(0.45, 0.97) * min(1.0, self.density)
        c, s = np.cos(th), np.sin(th)
        for i in range(rows):
            vv = -b + 1 * u + (i + 0.5) * row_gap
            lines = self.cov(pitch / 2 - np.abs(((U + a - 2 * u) % pitch) - pitch / 2) - 0.25 * u) * self.cov(np.abs(V - vv) - L / 2)
            paint(self.img, win, lines, (0.85, 0.85, 0.82), 0.6)
            for j in range(cols):
                if g.random() > occ_p:
                    continue
                uu = -a + 2 * u + (j + 0.5) * pitch
                x, y = cx + uu * c - vv * s, cy + uu * s + vv * c
                flip = np.pi if g.random() < 0.5 else 0.0
                self.vehicle(x + g.normal(0, 0.3 * u), y + g.normal(0, 0.3 * u), th + np.pi / 2 + flip + g.normal(0, 0.06), L * g.uniform(0.9, 1.08))

    def road_traffic(self) -> None:
        g, u = self.g, self.u
        for cx, cy, th, w in self.road_lines:
            for _ in range(int(g.poisson(4 * self.density))):
                t_ = g.uniform(-1, 1) * self.S
                lane = g.choice([-0.5, 0.5]) * w
                x, y = cx + t_ * np.cos(th) - lane * np.sin(th), cy + t_ * np.sin(th) + lane * np.cos(th)
                self.vehicle(x, y, th + (np.pi if lane < 0 else 0.0) + g.normal(0, 0.04))

    def harbour(self) -> None:
        g, u = self.g, self.u
        if not self.water.any():
            return
        ys, xs = np.nonzero(self.water[:: max(1, self.S // 64), :: max(1, self.S // 64)])
        k = g.integers(len(xs))
        cx, cy = (xs[k] + 0.5) * max(1, self.S // 64), (ys[k] + 0.5) * max(1, self.S // 64)
        th = g.uniform(0, np.pi)
        L = g.uniform(40, 90) * u
        pw = g.uniform(2.5, 5) * u
        win = self.pad(cx, cy, th, L / 2, pw, (0.62, 0.61, 0.58), on_land=False)
        if win is None:
            return
        c, s = np.cos(th), np.sin(th)
        self.occ[win.sl] |= self.cov(sd_box(*win.frame(cx, cy, th), L / 2, pw)) > 0.05
        for side in (-1, 1):
            along = -L / 2
            while along < L / 2:
                ln = g.uniform(12, 32) * u
                if g.random() < 0.5:  # moored alongside
                    off = pw + ln * 0.13 + g.uniform(0.5, 1.5) * u
                    x, y = cx + (along + ln / 2) * c - side * off * s, cy + (along + ln / 2) * s + side * off * c
                    self.ship(x, y, th + (np.pi if g.random() < 0.5 else 0), ln)
                    along += ln + g.uniform(1, 6) * u
                else:  # moored bow-in, side by side
                    off = pw + ln / 2 + g.uniform(0.5, 1.5) * u
                    x, y = cx + along * c - side * off * s, cy + along * s + side * off * c
                    self.ship(x, y, th + side * np.pi / 2 + np.pi, ln)
                    along += ln * 0.35 + g.uniform(1, 4) * u

    def free_ships(self) -> None:
        g, u = self.g, self.u
        if not self.water.any():
            return
        for _ in range(int(g.poisson(3 * self.density))):
            for _try in range(8):
                x, y = self.rand_pt(5)
                if self.water[int(y), int(x)]:
                    ln = float(np.clip(g.lognormal(np.log(16), 0.45), 9, 40)) * u
                    self.ship(x, y, g.uniform(0, 2 * np.pi), ln, wake=g.random() < 0.5)
                    break

    def apron(self) -> None:
        g, u = self.g, self.u
        span = g.uniform(14, 32) * u
        n = int(min(g.integers(2, 7), max(1, (0.75 * self.S - 8 * u) // (1.2 * span))))
        th = self.theta0 + g.choice([0, np.pi / 2, np.pi, 1.5 * np.pi])
        a, b = n * span * 0.6 + 4 * u, span * 0.8 + 4 * u
        m = min(0.75 * max(a, b), self.S / 2 - 1)
        for _try in range(8):
            cx, cy = float(g.uniform(m, self.S - m)), float(g.uniform(m, self.S - m))
            win = self.pad(cx, cy, th + np.pi / 2, a, b, (0.58, 0.58, 0.55))
            if win is not None:
                break
        else:
            return
        U, V = win.frame(cx, cy, th + np.pi / 2)
        paint(self.img, win, self.cov(np.abs(V - b * 0.85) - 0.4 * u) * self.cov(np.abs(U) - a), (0.85, 0.75, 0.2), 0.8)
        c, s = np.cos(th + np.pi / 2), np.sin(th + np.pi / 2)
        for i in range(n):
            uu = -a + 4 * u + (i + 0.5) * (2 * a - 8 * u) / n
            if g.random() < 0.85:
                self.airplane(cx + uu * c, cy + uu * s, th + g.normal(0, 0.1), span * g.uniform(0.85, 1.1))

    def tank_farm(self) -> None:
        g, u = self.g, self.u
        r = g.uniform(3, 10) * u
        rows, cols = int(g.integers(1, 4)), int(g.integers(1, 5))
        pitch = r * g.uniform(2.3, 3.0)
        th = self.theta0
        a, b = cols * pitch / 2 + r * 0.4, rows * pitch / 2 + r * 0.4
        for _try in range(4):
            cx, cy = self.rand_pt(12)
            win = self.pad(cx, cy, th, a, b, (0.55, 0.52, 0.46))
            if win is not None:
                break
        else:
            return
        U, V = win.frame(cx, cy, th)
        paint(self.img, win, self.cov(np.abs(sd_box(U, V, a, b)) - 0.5 * u), (0.75, 0.74, 0.7), 0.8)  # bund wall
        c, s = np.cos(th), np.sin(th)
        for i in range(rows):
            for j in range(cols):
                if g.random() < 0.15:
                    continue
                uu, vv = -a + r * 0.4 + (j + 0.5) * pitch, -b + r * 0.4 + (i + 0.5) * pitch
                self.tank(cx + uu * c - vv * s, cy + uu * s + vv * c, r * g.uniform(0.85, 1.1))

    def buildings(self) -> None:
        g, u = self.g, self.u
        for _ in range(int(g.integers(1, 6))):
            a, b = g.uniform(7, 30) * u, g.uniform(7, 22) * u
            th = self.theta0 + (np.pi / 2) * int(g.integers(0, 2)) + g.normal(0, 0.03)
            for _try in range(4):
                x, y = self.rand_pt(8)
                if not self.water[int(y), int(x)] and self.building(x, y, th, a, b):
                    break

    # ---------------------------------------------------------------------------- distractors
    def trees(self) -> None:
        g, u = self.g, self.u
        for _ in range(int(g.integers(0, 4))):
            cx, cy = self.rand_pt()
            spread = g.uniform(8, 40) * u
            for _k in range(int(g.integers(4, 30))):
                x, y = cx + g.normal(0, spread), cy + g.normal(0, spread)
                if not (0 <= x < self.S and 0 <= y < self.S) or self.water[int(y), int(x)]:
                    continue
                r = g.uniform(1.5, 5) * u
                win = window(x, y, 2 * r + 2, self.S, self.S)
                U, V = win.frame(x, y, 0.0)
                d = sd_ellipse(U, V, r, r * g.uniform(0.75, 1.0))   # crowns: roundish, irregular size
                cov = self.cov(d)
                if not free(self.occ, win, cov, 0.3):
                    continue
                sx, sy = -np.cos(self.sun) * 0.6 * r, -np.sin(self.sun) * 0.6 * r
                paint(self.img, win, self.cov(np.sqrt((U - sx) ** 2 + (V - sy) ** 2) - r) * (1 - self.occ[win.sl]), (0.03, 0.05, 0.03), 0.4)
                tone = np.array((0.13, 0.24, 0.1), F32) * F32(g.uniform(0.7, 1.3))
                paint(self.img, win, cov * (1 - self.occ[win.sl]), tone * (1 + 0.2 * self.t.standard_normal(cov.shape).astype(F32))[..., None])

    def clutter(self) -> None:
        """Object-like shapes that are not objects: square roof boxes, rings, rocks, markings."""
        g, u = self.g, self.u
        for _ in range(int(g.poisson(10))):
            x, y = self.rand_pt(3)
            kind = g.choice(4, p=[0.35, 0.1, 0.3, 0.25])
            s = g.uniform(2, 6) * u
            win = window(x, y, 3 * s + 2, self.S, self.S)
            U, V = win.frame(x, y, g.uniform(0, np.pi))
            if kind == 0:    # square-ish boxes: not vehicles (wrong aspect, wrong size)
                d = sd_box(U, V, s, s * g.uniform(0.8, 1.0))
            elif kind == 1:  # ring: roundabout / circular lawn, not a tank
                d = np.abs(np.sqrt(U * U + V * V) - 1.8 * s) - 0.5 * s
            elif kind == 2:  # rock / bush blob
                d = sd_ellipse(U, V, s, 0.7 * s)
            else:            # painted line
                d = sd_box(U, V, 2.5 * s, 0.35 * u)
            cov = self.cov(d)
            if not free(self.occ, win, cov, 0.3):
                continue
            col = np.array(g.choice([(0.75, 0.75, 0.72), (0.3, 0.3, 0.3), (0.5, 0.45, 0.35), (0.35, 0.45, 0.28)]), F32)
            paint(self.img, win, cov, col, g.uniform(0.5, 1.0))

    # ------------------------------------------------------------------------------- finishing
    def finish(self) -> np.ndarray:
        S, g, t = self.S, self.g, self.t
        illum = 1.0 + 0.12 * value_noise(g, S, S, 1.5)              # thin cloud / vignetting
        illum *= np.float32(g.uniform(0.85, 1.15))
        # sensor noise: mostly luminance (shared by the channels) plus a weaker per-channel offset
        noise = t.standard_normal((S, S), dtype=F32) * F32(0.016)
        img = self.img
        img *= illum[..., None]
        img += noise[..., None]
        img += t.standard_normal((1, 1, 3), dtype=F32) * F32(0.004)
        return to_uint8(img)


def optical_scene(size: int = 192, seed: int = 0, *, empty_prob: float = 0.08, density: float = 1.0) -> dict:
    """Render one DIOR-like optical scene.

    Returns ``dict(image=uint8 [size, size, 3], boxes=float32 [n, 4] xyxy, labels=int64 [n])`` with
    labels the 1-based category ids of ``OPTICAL_CLASSES`` (``OPTICAL_CLASSES[label - 1]``).
    ``density`` scales the expected number of vehicles and ships.
    """
    sc = _Scene(int(size), int(seed), empty_prob, density)
    g = sc.g
    sc.background()
    want_harbour = g.random() < 0.35
    if want_harbour or g.random() < 0.25:
        sc.add_water()
    sc.roads()
    if not sc.empty:
        n_lots = int(g.choice([0, 1, 1, 2, 2, 3]))
        for _ in range(n_lots):
            sc.parking_lot()
        if want_harbour:
            sc.harbour()
        sc.free_ships()
        if g.random() < 0.45:
            sc.apron()
        if g.random() < 0.35:
            sc.tank_farm()
        if g.random() < 0.2:
            for _ in range(int(g.integers(1, 3))):
                x, y = sc.rand_pt(10)
                sc.tank(x, y, g.uniform(3, 9) * sc.u)
        if g.random() < 0.75:
            sc.buildings()
        sc.road_traffic()
    sc.trees()
    sc.clutter()
    image = sc.finish()
    boxes, labels = boxes_array(sc.boxes, sc.labels)
    return {"image": image, "boxes": boxes, "labels": labels}
