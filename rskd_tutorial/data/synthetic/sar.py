"""SAR ship scenes (SSDD/HRSID-like): dark sea clutter, bright ships, multiplicative speckle.

What it imitates. A single-look complex SAR image is the coherent sum of many scatterers per
resolution cell; its intensity ``I`` is the product model ``I = sigma0 * n`` of the scene's clean
reflectivity ``sigma0`` and a speckle variable ``n``. For fully developed speckle averaged over ``L``
independent looks, ``n ~ Gamma(shape=L, scale=1/L)`` (mean 1, variance 1/L), so the equivalent
number of looks ``ENL = mean^2 / var`` of a homogeneous area equals ``L``. The generator builds
``sigma0`` and draws ``n`` independently per pixel:

* sea: low reflectivity (``sigma0`` about 0.02-0.06) modulated by a slowly varying log-normal field
  (wind) and long swell stripes, times a spatially correlated Gamma texture of shape ``nu`` (the
  compound / K-distribution model of sea clutter: Gamma texture x Gamma speckle);
* ships: elongated hulls of moderate reflectivity (``sigma0`` 1-6) holding a few strong point
  scatterers (superstructure corner reflectors, ``sigma0`` up to several hundred). Each scatterer is
  imaged through the system's point spread function ``sinc^2(dx/rho) * sinc^2(dy/rho)``: its
  range and azimuth sidelobes form the bright cross through strong targets that is typical of
  SSDD/HRSID (the box covers the hull only, not the sidelobes);
* azimuth ambiguities: some strong ships leave a faint displaced ghost (a classic false alarm);
* inshore scenes (``inshore_prob`` = 30 % by default): land (brighter, textured, with very bright
  urban point scatterers), harbour piers and docks (bright linear double-bounce structures) and ships
  moored along them or along the coast;
* mostly small ships: lengths are log-normal, median about 11 px at 192 px.

On disk the scene is stored like SSDD: an 8-bit single-channel amplitude image,
``DN = clip(round(SAR_AMPLITUDE_GAIN * sqrt(I)), 0, 255)`` with ``SAR_AMPLITUDE_GAIN = 64`` (sea at
``sigma0 = 0.04`` -> DN about 13; ``I >= 15.9`` saturates at 255). ``sar_scene`` returns the float
intensity, the clean reflectivity and the boxes for the speckle chapters.
"""

from __future__ import annotations

import numpy as np

from ._common import (
    F32, bbox_of, boxes_array, coverage, free, gaussian_blur, resize_f, rngs, sd_box,
    sd_convex, value_noise, window,
)

__all__ = ["SAR_CLASSES", "SAR_AMPLITUDE_GAIN", "sar_scene", "sar_to_uint8", "gamma_speckle"]

SAR_CLASSES: tuple[str, ...] = ("ship",)
SAR_AMPLITUDE_GAIN = 64.0
_KIND = 202


def gamma_speckle(shape: tuple[int, ...], looks: float, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative speckle of ``looks`` looks: ``Gamma(shape=L, scale=1/L)``, mean 1, variance 1/L."""
    return rng.gamma(float(looks), 1.0 / float(looks), size=shape).astype(F32)


def sar_to_uint8(intensity: np.ndarray) -> np.ndarray:
    """The on-disk 8-bit amplitude: ``clip(round(64 * sqrt(I)), 0, 255)``."""
    return np.clip(np.rint(SAR_AMPLITUDE_GAIN * np.sqrt(np.maximum(intensity, 0))), 0, 255).astype(np.uint8)


def _sinc2(x: np.ndarray) -> np.ndarray:
    return np.square(np.sinc(x)).astype(F32)


class _SarScene:
    def __init__(self, size: int, seed: int, inshore: bool | None, inshore_prob: float, empty_prob: float) -> None:
        self.S = size
        self.u = size / 192.0
        self.g, self.t = rngs(seed, _KIND)
        g = self.g
        self.inshore = bool(g.random() < inshore_prob) if inshore is None else bool(inshore)
        self.empty = bool(g.random() < empty_prob)
        self.clean = np.zeros((size, size), F32)
        self.occ = np.zeros((size, size), bool)
        self.land = np.zeros((size, size), bool)
        self.boxes: list = []
        self.rho = 0.9 * self.u        # resolution (first null of the sinc) in pixels
        self.hull = np.zeros((size, size), F32)   # hull reflectivity, blurred by the PSF at the end
        self.points: list[tuple[float, float, float]] = []
        self.coast = None

    def sea(self) -> None:
        S, g, t = self.S, self.g, self.t
        base = g.uniform(0.02, 0.06)
        wind = np.exp(0.35 * value_noise(g, S, S, 2, octaves=2) - 0.06)
        a, lam = g.uniform(0, np.pi), g.uniform(8, 20) * self.u
        X = (np.arange(S, dtype=F32) + 0.5)[None, :]
        Y = (np.arange(S, dtype=F32) + 0.5)[:, None]
        swell = 1 + g.uniform(0.05, 0.2) * np.sin((X * np.float32(np.cos(a)) + Y * np.float32(np.sin(a))) * np.float32(2 * np.pi / lam))
        nu = g.uniform(3, 15)          # texture shape: smaller = spikier clutter
        n = max(4, int(S / (3 * self.u)))
        tex = resize_f(t.gamma(nu, 1 / nu, size=(n, n)).astype(F32), S, S)
        self.clean = (base * wind * swell * tex).astype(F32)

    def land_and_harbour(self) -> None:
        S, g, t, u = self.S, self.g, self.t, self.u
        X = (np.arange(S, dtype=F32) + 0.5)[None, :] / S
        Y = (np.arange(S, dtype=F32) + 0.5)[:, None] / S
        a = g.uniform(0, 2 * np.pi)
        nx, ny = np.cos(a), np.sin(a)
        off = g.uniform(0.15, 0.45)        # land fraction
        s = (X - 0.5) * nx + (Y - 0.5) * ny - (0.5 - off) + 0.04 * value_noise(g, S, S, 3, octaves=3)
        self.land = s > 0
        refl = g.uniform(0.15, 0.6) * np.exp(0.6 * value_noise(t, S, S, 10, octaves=2))
        # urban blocks: bright points (double bounce), fields: smooth patches
        urb = (value_noise(g, S, S, 4) > 0.3) & self.land
        pts = (t.random((S, S)) < 0.04) & urb
        refl = refl + pts * t.uniform(3, 40, (S, S)).astype(F32)
        self.clean = np.where(self.land, refl.astype(F32), self.clean)
        self.coast = (a, nx, ny, off)
        # piers: bright rectangles from the coast into the sea, docks: a bright strip along the coast
        self.piers = []
        X0, Y0 = (np.arange(S, dtype=F32) + 0.5)[None, :], (np.arange(S, dtype=F32) + 0.5)[:, None]
        s_px = s * S
        dock = coverage(np.abs(s_px + 1.0 * u) - 1.0 * u) * (g.random() < 0.6)
        self.clean += dock * g.uniform(2, 6)
        for _ in range(int(g.integers(1, 4))):
            # a point on the coast line: walk along the tangent
            tpos = g.uniform(-0.35, 0.35)
            cx = (0.5 + (0.5 - off) * nx - tpos * ny) * S
            cy = (0.5 + (0.5 - off) * ny + tpos * nx) * S
            L = g.uniform(20, 60) * u
            w = g.uniform(1.2, 2.5) * u
            th = a + np.pi  # pointing into the sea
            pcx, pcy = cx + np.cos(th) * L / 2, cy + np.sin(th) * L / 2
            win = window(pcx, pcy, L / 2 + w + 2, S, S)
            if win is None:
                continue
            U, V = win.frame(pcx, pcy, th)
            cov = coverage(sd_box(U, V, L / 2, w))
            edge = coverage(np.abs(np.abs(V) - w) - 0.5) * coverage(np.abs(U) - L / 2)
            self.clean[win.sl] += cov * g.uniform(1.0, 3.0) + edge * g.uniform(4, 12)
            self.occ[win.sl] |= cov > 0.05
            self.piers.append((pcx, pcy, th, L, w))

    def ship(self, cx: float, cy: float, th: float, L: float) -> bool:
        g, t, u = self.g, self.t, self.u
        ix, iy = int(cx), int(cy)
        if not (0 <= ix < self.S and 0 <= iy < self.S) or self.land[iy, ix]:
            return False
        a = L / 2
        b = max(a * g.uniform(0.15, 0.28), 0.6 * u)
        bow = min(2 * b, 0.3 * L)
        win = window(cx, cy, a + 2, self.S, self.S)
        if win is None:
            return False
        U, V = win.frame(cx, cy, th)
        d = np.minimum(sd_box(U + bow / 2, V, a - bow / 2, b, 0.5 * b),
                       sd_convex(U, V, [(a - bow - 0.5, -b), (a, 0.0), (a - bow - 0.5, b)]))
        cov = coverage(d)
        if (cov >= 0.5).sum() < 3 or not free(self.occ | self.land, win, cov):
            return False
        hull = g.uniform(1.0, 6.0) * (0.5 + t.random(cov.shape).astype(F32))
        self.hull[win.sl] = np.maximum(self.hull[win.sl], cov * hull)
        c, s = np.cos(th), np.sin(th)
        for _ in range(int(g.integers(1, 5))):
            pu, pv = g.uniform(-0.8, 0.7) * a, g.uniform(-0.5, 0.5) * b
            amp = float(np.exp(g.uniform(np.log(8), np.log(400))))
            self.points.append((cx + pu * c - pv * s, cy + pu * s + pv * c, amp))
        box = bbox_of(win, cov)
        self.occ[win.sl] |= cov > 0.05
        self.boxes.append(box)
        return True

    def ship_length(self) -> float:
        return float(np.clip(self.g.lognormal(np.log(11), 0.5), 5, 45)) * self.u

    def offshore_ships(self, n: int) -> None:
        for _ in range(n):
            for _try in range(10):
                x, y = self.g.uniform(4, self.S - 4, 2)
                if self.ship(x, y, self.g.uniform(0, 2 * np.pi), self.ship_length()):
                    break

    def moored_ships(self) -> None:
        g, u = self.g, self.u
        for pcx, pcy, th, L, w in self.piers:
            c, s = np.cos(th), np.sin(th)
            for side in (-1, 1):
                along = -L / 2 + g.uniform(0, 4) * u
                while along < L / 2 and g.random() < 0.8:
                    ln = self.ship_length()
                    off = w + ln * 0.12 + g.uniform(0.8, 2.0) * u
                    x = pcx + (along + ln / 2) * c - side * off * s
                    y = pcy + (along + ln / 2) * s + side * off * c
                    self.ship(x, y, th + (np.pi if g.random() < 0.5 else 0.0), ln)
                    along += ln + g.uniform(1, 5) * u
        if self.coast is not None:  # ships along the coast
            a, nx, ny, off = self.coast
            for _ in range(int(g.integers(0, 4))):
                tpos = g.uniform(-0.45, 0.45)
                ln = self.ship_length()
                dist = (0.5 - off) * self.S - ln * 0.15 - g.uniform(2, 6) * u
                x = 0.5 * self.S + dist * nx - tpos * ny * self.S
                y = 0.5 * self.S + dist * ny + tpos * nx * self.S
                self.ship(x, y, a + np.pi / 2, ln)

    def render(self, looks: float) -> tuple[np.ndarray, np.ndarray]:
        S, g, t, u = self.S, self.g, self.t, self.u
        clean = self.clean + gaussian_blur(self.hull, 0.45 * self.rho)
        # point scatterers through the separable sinc^2 PSF: strong ones show the sidelobe cross
        for x, y, amp in self.points:
            R = min(S, max(3.0, self.rho * np.sqrt(amp / 0.02) / np.pi))  # sidelobes above the sea level
            win = window(x, y, R, S, S)
            if win is None:
                continue
            px = _sinc2((win.X - x) / self.rho)
            py = _sinc2((win.Y - y) / self.rho)
            clean[win.sl] += amp * (py * px)
            if amp > 150 and g.random() < 0.3:  # azimuth ambiguity: a faint ghost shifted along y
                dy = g.choice([-1, 1]) * g.uniform(0.25, 0.4) * S
                gw = window(x, y + dy, 3 * self.rho, S, S)
                if gw is not None:
                    clean[gw.sl] += amp * 0.01 * _sinc2((gw.Y - y - dy) / self.rho) * _sinc2((gw.X - x) / self.rho)
        clean = clean.astype(F32)
        intensity = clean * gamma_speckle(clean.shape, looks, t)
        return intensity, clean


def sar_scene(size: int = 192, seed: int = 0, looks: float = 1, inshore: bool | None = None, *,
              inshore_prob: float = 0.3, empty_prob: float = 0.04) -> dict:
    """Render one SSDD-like SAR scene in memory.

    Returns ``dict(intensity=float32 [H, W], clean=float32 [H, W], boxes=float32 [n, 4] xyxy,
    labels=int64 [n] (all 1 = ship), inshore=bool, looks=L)``; ``intensity = clean * speckle`` with
    ``speckle ~ Gamma(L, 1/L)`` i.i.d. per pixel. ``inshore=None`` draws an inshore scene with
    probability ``inshore_prob``. Use :func:`sar_to_uint8` for the on-disk 8-bit amplitude.
    """
    if looks <= 0:
        raise ValueError(f"looks must be positive, got {looks}")
    sc = _SarScene(int(size), int(seed), inshore, inshore_prob, empty_prob)
    sc.sea()
    if sc.inshore:
        sc.land_and_harbour()
    if not sc.empty:
        if sc.inshore:
            sc.moored_ships()
            sc.offshore_ships(int(sc.g.integers(0, 3)))
        else:
            sc.offshore_ships(int(np.clip(sc.g.geometric(0.3), 1, 12)))
    for _ in range(int(sc.g.poisson(1.0))):  # buoys / small rocks: isolated bright points, no box
        x, y = sc.g.uniform(0, sc.S, 2)
        if not sc.occ[int(y), int(x)]:
            sc.points.append((x, y, float(sc.g.uniform(1, 6))))
    intensity, clean = sc.render(looks)
    boxes, labels = boxes_array(sc.boxes, [1] * len(sc.boxes))
    return {"intensity": intensity, "clean": clean, "boxes": boxes, "labels": labels,
            "inshore": sc.inshore, "looks": looks}
