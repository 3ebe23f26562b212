"""Paired RGB / thermal-IR street scenes (KAIST-like): one scene, two sensors, shared boxes.

What it imitates. KAIST and FLIR record the same street with a visible camera and a long-wave
infrared (LWIR, 8-14 um) camera, registered pixel to pixel. The two images show different physics:

* RGB measures reflected light: ``radiance = reflectance x illumination``. By day the sun lights
  everything and objects cast shadows; at night the ambient light is tiny, the camera's auto exposure
  raises the gain (so sensor noise grows and contrast drops) and the only bright areas are light
  sources: street lamps and the pools of light they cast, lit windows, headlights and tail lights.
* LWIR measures emitted heat: the camera sees ``radiance ~ (T + 273.15)^4`` (Stefan-Boltzmann) of a
  temperature field ``T``. Pedestrians (skin 32-35 C, clothing 27-31 C) and running vehicles (engine
  and exhaust much hotter than ambient, warm tyres) stand out against a cooler background that varies
  smoothly (sun-warmed road by day, the cold sky, buildings near ambient, warm windows at night) and
  has little texture, whatever the lighting. The optics blur the image (Gaussian PSF), the
  microbolometer adds temporal noise (NETD) and column fixed-pattern noise, and the 8-bit output comes
  from an automatic gain control (a linear stretch between the 0.5 and 99.5 percentiles).

Geometry: a forward-looking camera at street level; a horizon line, a road converging to a
vanishing point, buildings above the horizon. An object standing on the ground at image row ``y``
has a height proportional to ``y - horizon`` (perspective), so far pedestrians are small (about
8-70 px at 192 px). Objects are drawn far to near, so near ones occlude far ones; boxes are the full
(amodal) extent as in KAIST. Classes (``RGBIR_CLASSES``): ``person`` (1), ``vehicle`` (2).
"""

from __future__ import annotations

import numpy as np

from ._common import (
    F32, Win, bbox_of, boxes_array, coverage, gaussian_blur, paint, rngs, sd_box, sd_ellipse,
    to_uint8, value_noise, window,
)

__all__ = ["RGBIR_CLASSES", "rgbir_scene"]

RGBIR_CLASSES: tuple[str, ...] = ("person", "vehicle")
PERSON, VEHICLE = 1, 2
_KIND = 303


class _Pair:
    def __init__(self, size: int, seed: int, night: bool | None, empty_prob: float) -> None:
        self.S = size
        self.u = size / 192.0
        self.g, self.t = rngs(seed, _KIND)
        g = self.g
        self.night = bool(g.random() < 0.4) if night is None else bool(night)
        self.empty = bool(g.random() < empty_prob)
        self.refl = np.zeros((size, size, 3), F32)    # reflectance (RGB)
        self.light = np.zeros((size, size), F32)      # illumination
        self.emit = np.zeros((size, size, 3), F32)    # emitted visible light (lamps, windows, sky)
        self.temp = np.zeros((size, size), F32)       # temperature, deg C
        self.occ = np.zeros((size, size), F32)
        self.boxes: list = []
        self.labels: list = []
        self.Ta = g.uniform(2, 12) if self.night else g.uniform(8, 20)   # ambient air temperature
        self.aa = max(1.0, 1.0 * self.u)                                  # edge width ~ the optics' PSF
        self.yh = g.uniform(0.3, 0.45) * size
        self.vx = g.uniform(0.35, 0.65) * size

    # --------------------------------------------------------------------------------- background
    def background(self) -> None:
        S, g, t, u = self.S, self.g, self.t, self.u
        Y = (np.arange(S, dtype=F32) + 0.5)[:, None]
        X = (np.arange(S, dtype=F32) + 0.5)[None, :]
        ny = int(np.clip(np.ceil(self.yh - 0.5), 0, S))          # rows above the horizon: sky
        # sky: emissive in RGB, very cold in LWIR
        if self.night:
            sky_col = np.array([0.008, 0.01, 0.02], F32)
        else:
            sky_col = np.array([0.55, 0.68, 0.85], F32) * F32(g.uniform(0.8, 1.1))
        self.emit = np.zeros((S, S, 3), F32)
        self.emit[:ny] = sky_col * (0.7 + 0.3 * Y[:ny, :, None] / self.yh)
        # ground: road between two lines through the vanishing point, sidewalks outside
        depth = np.clip((Y - self.yh) / (S - self.yh), 1e-3, 1)
        half = g.uniform(0.35, 0.6) * S * depth
        label = np.where(np.abs(X - self.vx) < half, 1, 2).astype(np.intp)   # 1 road, 2 sidewalk
        label[:ny] = 0
        tex = value_noise(t, S, S, 30, octaves=2)
        asphalt = np.array([0.25, 0.25, 0.26], F32) * F32(g.uniform(0.8, 1.2))
        pave = np.array([0.5, 0.48, 0.45], F32) * F32(g.uniform(0.8, 1.2))
        self.refl = np.take(np.stack([np.zeros(3, F32), asphalt, pave]), label, axis=0)
        self.refl *= (1 + 0.12 * tex)[..., None]
        # lane markings (reflectance only: paint is at road temperature)
        dashes = np.sin(np.log(depth + 0.02) * 18) > 0
        lane = (label == 1) & (np.abs(X - self.vx) < 0.012 * S * depth + 0.3) & dashes
        self.refl[lane] = (0.8, 0.8, 0.75)
        heat_road = g.uniform(1, 4) if self.night else g.uniform(3, 8)
        smooth = value_noise(g, S, S, 2)
        base_t = np.array([self.Ta - g.uniform(20, 35), self.Ta + heat_road, self.Ta + heat_road * 0.5], F32)
        self.temp = np.take(base_t, label) + 0.8 * smooth * (label > 0)
        self.light = np.full((S, S), 0.03 + 0.05 * g.random() if self.night else g.uniform(0.8, 1.1), F32)
        self.light[:ny] = 0
        # buildings above the horizon
        x = -g.uniform(0, 20) * u
        while x < S:
            w = g.uniform(15, 60) * u
            h = g.uniform(0.05, 0.3) * S
            col = np.array(g.choice([(0.55, 0.5, 0.45), (0.4, 0.4, 0.42), (0.6, 0.35, 0.3), (0.7, 0.7, 0.68)]), F32)
            win = Win(max(0, int(x)), max(0, int(self.yh - h)), min(S, int(x + w)), ny)
            if win.x1 > win.x0 and win.y1 > win.y0:
                self.emit[win.sl] = 0
                self.refl[win.sl] = col
                self.light[win.sl] = self.light[S - 1, S // 2] * 0.8
                bt = self.Ta + (g.uniform(1, 4) if self.night else g.uniform(2, 7))
                self.temp[win.sl] = bt
                # windows: a grid; lit (emissive) and warm at night, reflecting the cold sky by day
                pw, ph = g.uniform(4, 8) * u, g.uniform(5, 9) * u
                wx = ((win.X - win.x0) % pw) < 0.55 * pw
                wy = ((win.Y - win.y0) % ph) < 0.5 * ph
                wm = wx & wy
                lit = t.random((int(np.ceil((win.y1 - win.y0) / ph)) + 1, int(np.ceil((win.x1 - win.x0) / pw)) + 1)) < 0.35
                lit_px = lit[((win.Y - win.y0) // ph).astype(int), ((win.X - win.x0) // pw).astype(int)] & wm
                self.refl[win.sl][wm] = (0.15, 0.17, 0.2)
                if self.night:
                    self.emit[win.sl][lit_px] = (0.9, 0.75, 0.45)
                    self.temp[win.sl][wm] = bt + 2.0
                else:
                    self.temp[win.sl][wm] = bt - 3.0
            x += w + g.uniform(0, 8) * u
        if self.night:  # street lamps: light pools on the ground, glowing heads
            for _ in range(int(g.integers(1, 4))):
                lx, ly = g.uniform(0, S), g.uniform(self.yh + 0.1 * S, S)
                r = g.uniform(0.1, 0.25) * S * (ly - self.yh) / (S - self.yh) + 4 * u
                strength = g.uniform(0.3, 0.8)
                pw_ = Win(max(0, int(lx - 5 * r)), max(ny, int(ly - 2 * r)), min(S, int(lx + 5 * r) + 1), min(S, int(ly + 2 * r) + 1))
                if pw_.x1 > pw_.x0 and pw_.y1 > pw_.y0:
                    pool = np.exp(-(((pw_.X - lx) / (1.6 * r)) ** 2 + ((pw_.Y - ly) / (0.6 * r)) ** 2))
                    self.light[pw_.sl] += pool.astype(F32) * F32(strength)
                hy = ly - g.uniform(1.0, 2.0) * r * 2
                hw = window(lx, hy, 6 * u + 2, S, S)
                if hw is not None:
                    head = np.exp(-((hw.X - lx) ** 2 + (hw.Y - hy) ** 2) / (2 * (1.5 * u) ** 2)).astype(F32)
                    self.emit[hw.sl] += head[..., None] * np.array([1.5, 1.3, 0.9], F32)
                    self.temp[hw.sl] += head * 8

    # -------------------------------------------------------------------------------- objects
    def scale_at(self, y_foot: float) -> float:
        return (y_foot - self.yh) / (self.S - self.yh)

    def _place_ok(self, win: Win, cov: np.ndarray) -> bool:
        inside = cov > 0.5
        n = inside.sum()
        return n >= 6 and (self.occ[win.sl][inside].mean() < 0.35)

    def cov(self, d: np.ndarray) -> np.ndarray:
        return coverage(d, self.aa)

    def person(self, x: float, y_foot: float) -> bool:
        g, t = self.g, self.t
        h = self.scale_at(y_foot) * self.S * self.h_near
        if h < 6 * self.u * 0.5 + 3:
            return False
        cx, cy = x, y_foot - h / 2
        win = window(cx, cy, h / 2 + 2, self.S, self.S)
        if win is None:
            return False
        U, V = win.X - cx, win.Y - cy        # image-aligned frame, V down
        lean = g.normal(0, 0.03) * h
        U = U - lean * (V / h)
        head = np.sqrt(U * U + (V + 0.43 * h) ** 2) - 0.065 * h
        torso = sd_box(U, V + 0.17 * h, 0.13 * h, 0.2 * h, 0.05 * h)
        stride = g.uniform(0, 0.06) * h
        leg1 = sd_box(U - 0.05 * h - stride * (V / h), V - 0.24 * h, 0.045 * h, 0.26 * h)
        leg2 = sd_box(U + 0.05 * h + stride * (V / h), V - 0.24 * h, 0.045 * h, 0.26 * h)
        arms = sd_box(np.abs(U) - 0.15 * h, V + 0.12 * h, 0.035 * h, 0.2 * h)
        body = np.minimum(np.minimum(torso, arms), np.minimum(leg1, leg2))
        cov_all = self.cov(np.minimum(head, body))
        if not self._place_ok(win, cov_all):
            return False
        if not self.night:  # cast shadow on the ground
            sh = sd_ellipse(U + 0.25 * h, V - 0.5 * h, 0.3 * h, 0.05 * h)
            self.light[win.sl] *= 1 - 0.5 * self.cov(sh) * (1 - np.minimum(self.occ[win.sl], 1))
        top = np.array(g.choice([(0.7, 0.1, 0.1), (0.1, 0.2, 0.5), (0.8, 0.8, 0.8), (0.1, 0.1, 0.1),
                                 (0.3, 0.5, 0.3), (0.8, 0.6, 0.2), (0.45, 0.4, 0.35)]), F32)
        bottom = np.array(g.choice([(0.1, 0.1, 0.15), (0.2, 0.25, 0.45), (0.35, 0.3, 0.25), (0.5, 0.5, 0.5)]), F32)
        skin = np.array([0.75, 0.55, 0.42], F32) * F32(g.uniform(0.6, 1.1))
        Tcloth, Tskin, Tleg = g.uniform(28, 31), g.uniform(32.5, 35), g.uniform(27, 30)
        for sdf, col, T in ((np.minimum(leg1, leg2), bottom, Tleg), (np.minimum(torso, arms), top, Tcloth), (head, skin, Tskin)):
            cov = self.cov(sdf)
            paint(self.refl, win, cov, col)
            paint(self.temp, win, cov, T)
            paint(self.emit, win, cov, 0.0)
        self.occ[win.sl] = np.maximum(self.occ[win.sl], cov_all)
        self.boxes.append(bbox_of(win, cov_all))
        self.labels.append(PERSON)
        return True

    def vehicle(self, x: float, y_foot: float) -> bool:
        g = self.g
        hp = self.scale_at(y_foot) * self.S * self.h_near   # a person's height at this depth
        h = hp * g.uniform(0.75, 0.95)
        w = h * g.uniform(1.3, 2.3)
        if h < 5:
            return False
        cx, cy = x, y_foot - h / 2
        win = window(cx, cy, max(w, h) / 2 + 2, self.S, self.S)
        if win is None:
            return False
        U, V = win.X - cx, win.Y - cy
        U, V = np.broadcast_arrays(U, V)
        lower = sd_box(U, V - 0.12 * h, w / 2, 0.3 * h, 0.08 * h)
        cabin = sd_box(U, V + 0.25 * h, 0.36 * w, 0.22 * h, 0.12 * h)
        wheels = np.minimum(sd_box(U - 0.32 * w, V - 0.4 * h, 0.1 * w, 0.1 * h, 0.03 * h),
                            sd_box(U + 0.32 * w, V - 0.4 * h, 0.1 * w, 0.1 * h, 0.03 * h))
        cov_all = self.cov(np.minimum(np.minimum(lower, cabin), wheels))
        if not self._place_ok(win, cov_all):
            return False
        if not self.night:
            sh = sd_ellipse(U + 0.2 * w, V - 0.5 * h, 0.6 * w, 0.07 * h)
            self.light[win.sl] *= 1 - 0.5 * self.cov(sh) * (1 - np.minimum(self.occ[win.sl], 1))
        body = np.array(g.choice([(0.85, 0.85, 0.85), (0.1, 0.1, 0.1), (0.6, 0.1, 0.1), (0.2, 0.3, 0.55),
                                  (0.55, 0.55, 0.58)]), F32)
        running = g.random() < 0.75
        Tbody = self.Ta + g.uniform(0.5, 3)
        glass = self.cov(sd_box(U, V + 0.25 * h, 0.3 * w, 0.15 * h, 0.08 * h))
        for sdf, col, T in ((np.minimum(lower, cabin), body, Tbody), (wheels, np.array([0.05, 0.05, 0.05], F32), self.Ta + (g.uniform(8, 15) if running else 1))):
            cov = self.cov(sdf)
            paint(self.refl, win, cov, col)
            paint(self.temp, win, cov, T)
            paint(self.emit, win, cov, 0.0)
        paint(self.refl, win, glass, (0.08, 0.1, 0.12))
        paint(self.temp, win, glass, self.Ta - 4)           # glass reflects the cold sky
        if running:  # hot engine / exhaust region low at the back or front
            hot = self.cov(sd_ellipse(U - g.uniform(-0.3, 0.3) * w, V - 0.2 * h, 0.18 * w, 0.12 * h))
            paint(self.temp, win, hot * cov_all, self.Ta + g.uniform(15, 35))
        lights = self.cov(np.minimum(sd_box(U - 0.42 * w, V + 0.0 * h, 0.05 * w, 0.05 * h),
                                     sd_box(U + 0.42 * w, V + 0.0 * h, 0.05 * w, 0.05 * h)))
        lcol = np.array([1.6, 1.5, 1.2] if g.random() < 0.5 else [1.4, 0.15, 0.1], F32)
        if self.night and running:
            paint(self.emit, win, lights, lcol)
            paint(self.temp, win, lights, self.Ta + 10)
        else:
            paint(self.refl, win, lights, lcol * 0.5)
        self.occ[win.sl] = np.maximum(self.occ[win.sl], cov_all)
        self.boxes.append(bbox_of(win, cov_all))
        self.labels.append(VEHICLE)
        return True

    def objects(self) -> None:
        g, S = self.g, self.S
        self.h_near = g.uniform(0.55, 0.8)
        items = []
        for _ in range(int(g.choice([1, 1, 2, 2, 3, 4, 5, 6, 8]))):
            h = np.exp(g.uniform(np.log(0.05), np.log(0.35))) * S
            y = self.yh + h / (S * self.h_near) * (S - self.yh)
            if y <= S - 1:
                items.append((y, "p", g.uniform(0.05, 0.95) * S))
        for _ in range(int(g.choice([0, 0, 1, 1, 2, 3]))):
            h = np.exp(g.uniform(np.log(0.05), np.log(0.3))) * S
            y = self.yh + h / (S * self.h_near) * (S - self.yh)
            if y <= S - 1:
                items.append((y, "v", self.vx + g.uniform(-0.5, 0.5) * (y - self.yh) * 1.2))
        for y, kind, x in sorted(items):        # far to near: near objects occlude far ones
            if kind == "p":
                self.person(x, y)
            else:
                self.vehicle(x, y)

    # -------------------------------------------------------------------------------- sensors
    def render_rgb(self) -> np.ndarray:
        g, t, S = self.g, self.t, self.S
        lcol = np.array([1.0, 0.85, 0.6], F32) if self.night else np.array([1.0, 1.0, 0.97], F32)
        rad = self.refl * (self.light[..., None] * lcol) + self.emit
        # optics: the scene is drawn with edges about one PSF wide (``aa``), so no image convolution
        if self.night:   # auto exposure: high gain, strong noise, low contrast
            gain, sigma = g.uniform(1.5, 2.5), 0.006
        else:
            gain, sigma = g.uniform(0.9, 1.1), 0.004
        rad *= F32(gain)
        rad += (t.standard_normal((S, S), dtype=F32) * F32(sigma * gain))[..., None]
        rad += t.standard_normal((1, 1, 3), dtype=F32) * F32(0.3 * sigma * gain)
        idx = (np.clip(rad, 0, 1) * (len(_SRGB) - 1) + 0.5).astype(np.intp)
        return _SRGB[idx]          # sRGB encoding through a lookup table

    def render_ir(self) -> np.ndarray:
        t, S, u = self.t, self.S, self.u
        temp = self.temp + 0.4 * value_noise(t, S, S, 6)                 # smooth, little texture
        rad = ((temp + F32(273.15)) / F32(300.0)) ** 4                    # Stefan-Boltzmann
        rad = gaussian_blur(rad.astype(F32), 0.8 * u)                    # LWIR optics
        k = 4.0 / 300.0                                                   # d(rad)/dT near 300 K
        rad += t.standard_normal((S, S), dtype=F32) * F32(0.08 * k)      # NETD ~ 0.08 K
        rad += t.standard_normal((1, S), dtype=F32) * F32(0.05 * k)      # column fixed-pattern noise
        sample = rad[::3, ::3].ravel()                                    # AGC: percentile stretch
        q = max(1, int(0.005 * sample.size))
        part = np.partition(sample, (q, sample.size - 1 - q))
        lo, hi = part[q], part[sample.size - 1 - q]
        return to_uint8((rad - lo) / max(float(hi - lo), 1e-6))


_lin = np.linspace(0, 1, 4096, dtype=np.float64)
_SRGB = np.clip(np.rint(255 * np.where(_lin <= 0.0031308, 12.92 * _lin, 1.055 * _lin ** (1 / 2.4) - 0.055)),
                0, 255).astype(np.uint8)


def rgbir_scene(size: int = 192, seed: int = 0, night: bool | None = None, *, empty_prob: float = 0.06) -> dict:
    """Render one pixel-aligned RGB / thermal-IR pair.

    Returns ``dict(rgb=uint8 [H, W, 3], ir=uint8 [H, W], boxes=float32 [n, 4] xyxy, labels=int64 [n]
    (1 = person, 2 = vehicle), night=bool, temperature=float32 [H, W] (deg C, before the sensor))``.
    ``night=None`` draws a night scene with probability 0.4.
    """
    sc = _Pair(int(size), int(seed), night, empty_prob)
    sc.background()
    if not sc.empty:
        sc.objects()
    rgb = sc.render_rgb()
    ir = sc.render_ir()
    keep = [i for i, b in enumerate(sc.boxes) if b is not None]
    boxes, labels = boxes_array([sc.boxes[i] for i in keep], [sc.labels[i] for i in keep])
    return {"rgb": rgb, "ir": ir, "boxes": boxes, "labels": labels, "night": sc.night,
            "temperature": sc.temp.copy()}
