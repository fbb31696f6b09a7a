"""Drawing tiny-world figures from findings: numpy shapes on a normalised grid, then PIL for blur and PNG.

Every figure is drawn on coordinates x, y in [-1, 1] (x to the image's right, y downwards), so the same
findings give the same picture at any size from 64 to 336 px. Shapes have anti-aliased edges one pixel wide.

Radiological convention: radiographs are viewed as if facing the patient, and axial CT/MRI slices as if
looking up from the patient's feet, so in all three the PATIENT'S LEFT IS ON THE IMAGE'S RIGHT (x > 0).
A nodule with "side": "left" is drawn at x > 0; the heart bulges to x > 0; the liver sits at x < 0 on CT.
Histology and gross photographs have no sides.
"""

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from .findings import as_rng, validate_findings

MIN_SIZE, MAX_SIZE = 64, 336


def check_size(size: Any) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"image size must be an integer from {MIN_SIZE} to {MAX_SIZE} px, got {size!r}")
    return int(size)


@dataclass
class Grid:
    """Pixel centres in normalised coordinates; `px` is one pixel's width in those units."""

    size: int

    def __post_init__(self):
        c = (np.arange(self.size, dtype=np.float32) + 0.5) / self.size * 2 - 1
        self.y, self.x = np.meshgrid(c, c, indexing="ij")  # (S, S) each
        self.px = 2.0 / self.size

    def ellipse(self, cx, cy, rx, ry=None, angle=0.0, wobble=None):
        """Soft mask (S, S) in [0, 1] of an ellipse; `wobble(theta) -> radial factor` makes it irregular."""
        ry = rx if ry is None else ry
        x, y = self.x - cx, self.y - cy
        if angle:
            c, s = math.cos(angle), math.sin(angle)
            x, y = c * x + s * y, -s * x + c * y
        d = np.sqrt((x / rx) ** 2 + (y / ry) ** 2)
        if wobble is not None:
            d = d / wobble(np.arctan2(y, x))
        return np.clip((1 - d) * min(rx, ry) / self.px + 0.5, 0, 1)

    def stamp(self, canvas, cx, cy, rx, ry=None, angle=0.0, value=1.0):
        """Draw a small filled ellipse into `canvas` (S, S) with max(), touching only its bounding window."""
        ry = rx if ry is None else ry
        r = max(rx, ry) + 2 * self.px
        j0, j1 = [int(np.clip((v + 1) / self.px, 0, self.size)) for v in (cx - r, cx + r + self.px)]
        i0, i1 = [int(np.clip((v + 1) / self.px, 0, self.size)) for v in (cy - r, cy + r + self.px)]
        if i0 >= i1 or j0 >= j1:
            return
        x, y = self.x[i0:i1, j0:j1] - cx, self.y[i0:i1, j0:j1] - cy
        c, s = math.cos(angle), math.sin(angle)
        x, y = c * x + s * y, -s * x + c * y
        d = np.sqrt((x / rx) ** 2 + (y / ry) ** 2)
        m = np.clip((1 - d) * min(rx, ry) / self.px + 0.5, 0, 1) * value
        np.maximum(canvas[i0:i1, j0:j1], m, out=canvas[i0:i1, j0:j1])


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise (S, S) in about [-1, 1]: a cells x cells random field, bicubically upsampled."""
    field = rng.uniform(0, 255, (cells, cells)).astype(np.uint8)
    up = Image.fromarray(field, "L").resize((size, size), Image.BICUBIC)
    return np.asarray(up, dtype=np.float32) / 127.5 - 1


def wobble_fn(rng: np.random.Generator, amount: float):
    """A random smooth radial factor: makes circles look like lesions rather than coins."""
    k, phase = rng.integers(3, 6), rng.uniform(0, 2 * math.pi)
    k2, phase2 = rng.integers(5, 9), rng.uniform(0, 2 * math.pi)
    return lambda t: 1 + amount * (np.sin(k * t + phase) + 0.5 * np.sin(k2 * t + phase2)) / 1.5


def _paint(img, mask, value):
    """Blend `value` (a grey level or an RGB triple) into img where mask is 1."""
    if img.ndim == 3:
        value = np.asarray(value, dtype=np.float32)
        return img * (1 - mask[..., None]) + mask[..., None] * value
    return img * (1 - mask) + mask * value


# ---- chest X-ray (frontal, PA) -----------------------------------------------------------------------------------
def chest_xray(f: dict, g: Grid, rng: np.random.Generator) -> np.ndarray:
    j = lambda s: rng.uniform(-s, s)  # noqa: E731  small anatomical jitter
    img = np.full((g.size, g.size), 0.05, np.float32)
    body = g.ellipse(j(0.03), 0.25 + j(0.03), 1.12 + j(0.03), 1.3)  # the trunk, shoulders at the top corners
    img = _paint(img, body, 0.48 + j(0.04))
    # Lungs: narrow apices, wide bases, domed diaphragm below.
    lung_y, lung_ry = -0.05 + j(0.03), 0.62 + j(0.04)
    lungs = np.zeros_like(img)
    for sx in (-1, 1):
        cx = 0.42 * sx + j(0.02)
        widen = 0.8 + 0.25 * np.clip((g.y - lung_y) / lung_ry + 0.6, 0, 1.2)  # (S, S) width factor by height
        x = (g.x - cx) / widen + cx
        d = np.sqrt(((x - cx) / (0.3 + j(0.02))) ** 2 + ((g.y - lung_y) / lung_ry) ** 2)
        lungs = np.maximum(lungs, np.clip((1 - d) * 0.3 / g.px + 0.5, 0, 1))
    img = _paint(img, lungs, 0.14 + j(0.03))
    img = img + 0.05 * lungs * smooth_noise(rng, g.size, 12)  # vascular markings
    # Posterior ribs: bands that run out from the spine and curve down laterally; clavicles at the apices.
    ax = np.abs(g.x)
    phase = (g.y - 0.55 * ax ** 2 + j(0.05)) * 6.0
    ribs = np.clip((np.cos(2 * math.pi * phase) - 0.5) * 3, 0, 1) * body * (ax > 0.08) * (ax < 0.85) * (g.y < 0.6)
    img = img + ribs * (0.07 + 0.14 * lungs)
    clav = np.clip(1 - np.abs(g.y - (-0.66 + 0.2 * ax)) / 0.035, 0, 1) * (ax > 0.06) * (ax < 0.72)
    img = img + 0.25 * clav
    # Spine and mediastinum down the middle, the trachea dark within it; the heart bulges to the patient's
    # left (image right).
    img = _paint(img, np.clip(1 - np.abs(g.x) / 0.1, 0, 1) * body, 0.58)
    img = _paint(img, g.ellipse(0.0, -0.3, 0.12, 0.45), 0.6)
    img = _paint(img, g.ellipse(0.0, -0.55, 0.035, 0.32), 0.3)  # trachea
    heart_rx = (0.42 if f["cardiomegaly"] else 0.27) + j(0.02)
    heart = g.ellipse(0.08 + heart_rx * 0.3, 0.32 + j(0.03), heart_rx, 0.27 + j(0.02), angle=-0.3)
    img = _paint(img, heart, 0.66)
    img = _paint(img, np.clip((g.y - 0.5 - 0.25 * g.x ** 2) / 0.06, 0, 1) * body, 0.6)  # below the diaphragm
    if f["nodule"]:
        upper = f["zone"] == "upper"
        cx = (1 if f["side"] == "left" else -1) * ((0.4 if upper else 0.52) + j(0.06))
        cy = (-0.32 if upper else 0.12) + j(0.07)
        r = (0.075 if f["size"] == "small" else 0.15) * (1 + j(0.12))
        img = img + 0.36 * g.ellipse(cx, cy, r, wobble=wobble_fn(rng, 0.12))
    img = img + 0.04 * smooth_noise(rng, g.size, 6)
    return img


# ---- CT (axial abdomen, upper) -----------------------------------------------------------------------------------
def ct_scan(f: dict, g: Grid, rng: np.random.Generator) -> np.ndarray:
    j = lambda s: rng.uniform(-s, s)  # noqa: E731
    enh = f["contrast"]
    img = np.full((g.size, g.size), 0.02, np.float32)
    img = _paint(img, np.clip(1 - np.abs(g.y - 0.8) / 0.03, 0, 1) * (np.abs(g.x) < 0.85), 0.35)  # the table
    bx, by = 0.88 + j(0.04), 0.62 + j(0.04)
    img = _paint(img, g.ellipse(0, 0.05, bx, by), 0.55)  # skin
    img = _paint(img, g.ellipse(0, 0.05, bx - 0.03, by - 0.03), 0.3)  # subcutaneous fat
    img = _paint(img, g.ellipse(0, 0.05, bx - 0.1, by - 0.1), 0.48)  # muscle wall and viscera
    # Bowel loops anteriorly: grey with dark gas.
    for _ in range(5):
        cx, cy = rng.uniform(-0.2, 0.45), rng.uniform(-0.45, -0.2)
        img = _paint(img, g.ellipse(cx, cy, 0.08, 0.06, angle=rng.uniform(0, 3)), 0.42)
        img = _paint(img, g.ellipse(cx + j(0.02), cy + j(0.02), 0.03, 0.025), 0.08)
    liver = (-0.36 + j(0.03), -0.02 + j(0.03), 0.38, 0.4)
    spleen = (0.52 + j(0.02), 0.12 + j(0.02), 0.19, 0.26)
    img = _paint(img, g.ellipse(*liver, angle=0.3), 0.72 if enh else 0.6)
    img = _paint(img, g.ellipse(*spleen, angle=-0.4), 0.7 if enh else 0.58)
    for sx in (-1, 1):  # kidneys: cortex bright with contrast
        img = _paint(img, g.ellipse(0.3 * sx, 0.3, 0.1, 0.14, angle=-0.4 * sx), 0.85 if enh else 0.52)
    img = _paint(img, g.ellipse(0, 0.36, 0.12), 0.95)  # vertebral body
    img = _paint(img, g.ellipse(0, 0.36, 0.08), 0.75)
    img = _paint(img, g.ellipse(0, 0.55, 0.05, 0.08), 0.9)  # spinous process
    img = _paint(img, g.ellipse(0.06, 0.15, 0.055), 0.97 if enh else 0.5)  # aorta
    n = f["lesion_count"]
    if n:
        cx, cy, rx, ry = liver if f["organ"] == "liver" else spleen
        if f["organ"] == "liver":
            r = 0.06 if f["size"] == "small" else 0.12
        else:
            r = 0.045 if f["size"] == "small" else 0.075
        for cx_l, cy_l in _place(rng, n, cx, cy, rx - r - 0.02, ry - r - 0.02, r):
            img = _paint(img, g.ellipse(cx_l, cy_l, r * (1 + j(0.1)), wobble=wobble_fn(rng, 0.1)), 0.3)
    img = img + 0.03 * smooth_noise(rng, g.size, 8)
    return img


def _place(rng, n, cx, cy, rx, ry, r):
    """n non-overlapping centres inside an ellipse (rejection sampling; overlap allowed as a last resort)."""
    points = []
    for _ in range(200):
        if len(points) == n:
            break
        t, u = rng.uniform(0, 2 * math.pi), math.sqrt(rng.uniform(0, 1))
        p = (cx + u * rx * math.cos(t), cy + u * ry * math.sin(t))
        if all((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2 > (2.3 * r) ** 2 for q in points):
            points.append(p)
    while len(points) < n:
        points.append((cx + rng.uniform(-rx, rx) * 0.7, cy + rng.uniform(-ry, ry) * 0.7))
    return points


# ---- MRI (axial brain) -------------------------------------------------------------------------------------------
def mri(f: dict, g: Grid, rng: np.random.Generator) -> np.ndarray:
    j = lambda s: rng.uniform(-s, s)  # noqa: E731
    t2 = f["sequence"] == "T2"
    csf, grey, white, fat = (0.95, 0.55, 0.38, 0.55) if t2 else (0.12, 0.42, 0.66, 0.85)
    rx, ry = 0.74 + j(0.03), 0.9 + j(0.03)
    img = np.zeros((g.size, g.size), np.float32)
    img = _paint(img, g.ellipse(0, 0, rx, ry), fat)  # scalp
    img = _paint(img, g.ellipse(0, 0, rx - 0.05, ry - 0.05), 0.04)  # skull (no signal)
    img = _paint(img, g.ellipse(0, 0, rx - 0.09, ry - 0.09), csf)  # CSF around the brain
    gyri = wobble_fn(rng, 0.03)
    img = _paint(img, g.ellipse(0, 0, rx - 0.12, ry - 0.12, wobble=gyri), grey)  # cortex
    sulci = lambda t: 1 + 0.06 * np.sin(14 * t + 1.0) + 0.03 * np.sin(23 * t)  # noqa: E731
    img = _paint(img, g.ellipse(0, 0.02, rx - 0.22, ry - 0.25, wobble=sulci), white)  # white matter
    img = _paint(img, np.clip(1 - np.abs(g.x) / 0.015, 0, 1) * (np.abs(g.y) > 0.35) * (np.abs(g.y) < ry - 0.1), csf)
    for sx in (-1, 1):  # lateral ventricles
        img = _paint(img, g.ellipse(0.1 * sx, -0.05, 0.06, 0.26, angle=-0.25 * sx), csf)
    if f["mass"]:
        cx = (0.36 if f["side"] == "left" else -0.36) + j(0.05)
        cy = rng.uniform(-0.35, 0.35)
        r = (0.1 if f["size"] == "small" else 0.19) * (1 + j(0.1))
        if f["oedema"]:
            hemisphere = np.clip((g.x * (1 if cx > 0 else -1) - 0.02) / g.px, 0, 1)  # oedema stops at the midline
            halo = (g.ellipse(cx, cy, 1.8 * r + 0.06, wobble=wobble_fn(rng, 0.25))
                    * g.ellipse(0, 0, rx - 0.14, ry - 0.14))
            halo = halo * hemisphere
            img = _paint(img, halo, 0.88 if t2 else 0.28)
        img = _paint(img, g.ellipse(cx, cy, r, wobble=wobble_fn(rng, 0.1)), 0.75 if t2 else 0.8)  # rim
        img = _paint(img, g.ellipse(cx, cy, 0.6 * r, wobble=wobble_fn(rng, 0.15)), 0.62 if t2 else 0.3)  # core
    img = img + 0.04 * smooth_noise(rng, g.size, 10)
    return img


# ---- histology (H&E) ---------------------------------------------------------------------------------------------
EOSIN, HAEMATOXYLIN, LUMEN = (0.93, 0.6, 0.74), (0.3, 0.16, 0.5), (0.97, 0.94, 0.96)


def histology(f: dict, g: Grid, rng: np.random.Generator) -> np.ndarray:
    j = lambda s: rng.uniform(-s, s)  # noqa: E731
    tint = np.array([j(0.03), j(0.04), j(0.03)], np.float32)
    img = np.empty((g.size, g.size, 3), np.float32)
    img[:] = np.asarray(EOSIN, np.float32) + tint
    fibres = smooth_noise(rng, g.size, 12)
    img = img - 0.07 * fibres[..., None] * np.array([0.3, 1.0, 0.6], np.float32)
    nuclei = np.zeros((g.size, g.size), np.float32)
    blocked = np.zeros((g.size, g.size), np.float32)
    if f["necrosis"]:
        necrotic = g.ellipse(j(0.4), j(0.4), 0.38, 0.3, angle=rng.uniform(0, 3), wobble=wobble_fn(rng, 0.25))
        img = _paint(img, necrotic, (0.95, 0.82, 0.88))
        blocked = np.maximum(blocked, necrotic)
        for _ in range(25):  # granular debris
            g.stamp(nuclei, *rng.uniform(-0.9, 0.9, 2), 0.012, value=0.5)
    r_nuc = 0.038 if f["atypia"] else 0.022
    if f["glands"]:
        n_glands = int(rng.integers(2, 4))
        for cx, cy in _place(rng, n_glands, 0, 0, 0.62, 0.62, 0.2):
            r = rng.uniform(0.13, 0.19)
            img = _paint(img, g.ellipse(cx, cy, r + 0.07), (0.86, 0.55, 0.72))  # epithelium
            lumen = g.ellipse(cx, cy, r)
            img = _paint(img, lumen, LUMEN)
            blocked = np.maximum(blocked, g.ellipse(cx, cy, r + 0.07))
            for t in np.linspace(0, 2 * math.pi, int(2 * math.pi * r / 0.05), endpoint=False):
                g.stamp(nuclei, cx + (r + 0.05) * math.cos(t), cy + (r + 0.05) * math.sin(t), r_nuc, r_nuc * 0.7,
                        angle=t)
    count = 160 if f["density"] == "dense" else 45
    for _ in range(count):
        cx, cy = rng.uniform(-1, 1, 2)
        i, k = int((cy + 1) / g.px), int((cx + 1) / g.px)
        if blocked[min(i, g.size - 1), min(k, g.size - 1)] > 0.5:
            continue
        ratio = rng.uniform(0.55, 0.9) if f["atypia"] else rng.uniform(0.75, 1.0)
        g.stamp(nuclei, cx, cy, r_nuc * rng.uniform(0.8, 1.3), r_nuc * ratio, angle=rng.uniform(0, 3.14))
    dark = np.asarray(HAEMATOXYLIN, np.float32) - (0.08 if f["atypia"] else 0.0)
    img = _paint(img, nuclei, dark)
    return img + 0.02 * smooth_noise(rng, g.size, 16)[..., None]


# ---- gross pathology (photograph of a specimen) ------------------------------------------------------------------
CM = 0.16  # one centimetre on the ruler, in normalised units


def gross(f: dict, g: Grid, rng: np.random.Generator) -> np.ndarray:
    j = lambda s: rng.uniform(-s, s)  # noqa: E731
    img = np.empty((g.size, g.size, 3), np.float32)
    img[:] = np.array([0.07, 0.08, 0.12], np.float32)
    img = img + 0.03 * smooth_noise(rng, g.size, 5)[..., None]
    cx, cy = j(0.08), -0.18 + j(0.05)
    if f["organ"] == "kidney":  # a tan bean: an ellipse with a notch (the hilum) on one side
        shape = g.ellipse(cx, cy, 0.55, 0.36, angle=j(0.2), wobble=wobble_fn(rng, 0.03))
        shape = shape * (1 - g.ellipse(cx, cy + 0.4, 0.2, 0.14))
        colour, rim = (0.78, 0.56, 0.44), (0.68, 0.44, 0.34)
        inner = g.ellipse(cx, cy - 0.03, 0.42, 0.22) * shape
    else:  # a red-brown wedge of liver
        shape = g.ellipse(cx, cy, 0.65, 0.4, angle=j(0.2), wobble=wobble_fn(rng, 0.06))
        shape = shape * np.clip((g.y - (cy - 0.35) - 0.4 * (g.x - cx)) / g.px, 0, 1)
        colour, rim = (0.55, 0.24, 0.2), (0.45, 0.18, 0.16)
        inner = g.ellipse(cx - 0.05, cy + 0.05, 0.5, 0.28) * shape
    img = _paint(img, shape, rim)
    img = _paint(img, inner, colour)
    img = img + 0.05 * (smooth_noise(rng, g.size, 14) * shape)[..., None]
    img = img + 0.08 * np.clip(1 - np.hypot(g.x - cx + 0.2, g.y - cy + 0.15) / 0.35, 0, 1)[..., None] * shape[..., None]
    if f["lesion"]:
        r = (0.6 if f["size"] == "small" else 1.6) * CM * (1 + j(0.1))
        lx, ly = cx + j(0.25), cy + j(0.08)
        lesion = g.ellipse(lx, ly, r, wobble=wobble_fn(rng, 0.15)) * shape
        tone = (0.38, 0.04, 0.07) if f["colour"] == "dark red" else (0.92, 0.82, 0.45)
        img = _paint(img, lesion, tone)
    # The ruler: a white strip with a black tick every centimetre (longer every 5 cm).
    ruler = (g.y > 0.62) * (g.y < 0.84) * (np.abs(g.x) < 0.85)
    img = _paint(img, ruler.astype(np.float32), (0.93, 0.93, 0.9))
    tick_phase = (g.x + 0.8) / CM
    ticks = (np.abs(tick_phase - np.round(tick_phase)) * CM < 0.6 * g.px) * (g.x > -0.81) * (g.x < 0.81)
    long_tick = (np.round(tick_phase) % 5 == 0)
    ticks = ticks * (g.y > 0.62) * (g.y < np.where(long_tick, 0.78, 0.71))
    img = _paint(img, ticks.astype(np.float32), (0.05, 0.05, 0.05))
    return img


RENDERERS = {"chest_xray": chest_xray, "ct_scan": ct_scan, "mri": mri, "histology": histology, "gross": gross}


def render(findings: dict, size: int = 64, rng: Any = 0) -> Image.Image:
    """The figure for `findings` as an RGB PIL image of size x size px (64-336); deterministic for a given rng seed."""
    f = validate_findings(findings)
    size = check_size(size)
    rng = as_rng(rng)
    g = Grid(size)
    img = RENDERERS[f["domain"]](f, g, rng)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    pil = Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")
    pil = pil.filter(ImageFilter.GaussianBlur(radius=0.4 * size / 64))
    grain = rng.normal(0, 0.012 * 255, (size, size, 1)).astype(np.float32)
    return Image.fromarray(np.clip(np.asarray(pil, np.float32) + grain, 0, 255).astype(np.uint8), "RGB")
