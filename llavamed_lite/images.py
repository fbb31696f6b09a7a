"""Opening medical images as RGB pictures for CLIP: PNG/JPEG, and DICOM slices windowed to a
viewable range."""

from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

MAX_PIXELS = 60_000_000  # refuse decompression bombs (PIL warns above ~89M); the largest real figure is far below


def load_image(path: str | Path, window: tuple[float, float] | None = None) -> Image.Image:
    """An RGB PIL image. DICOM files are rescaled to Hounsfield units (CT) and windowed: `window` =
    (centre, width), else the file's own window, else the 1st-99th percentile range. Errors name the
    file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: image file not found")
    if path.suffix.lower() in (".dcm", ".dicom") or _is_dicom(path):
        return _load_dicom(path, window)
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise ValueError(f"{path}: image of {im.width}x{im.height} px is too large "
                                 f"(limit {MAX_PIXELS:,} pixels)")
            return im.convert("RGB")
    except Image.DecompressionBombError as e:  # PIL refuses it at open, from the header's size
        raise ValueError(f"{path}: image is too large ({e})") from None
    except OSError as e:
        raise ValueError(f"{path}: not a readable image ({e})") from None


def _is_dicom(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(132)[128:132] == b"DICM"


def _load_dicom(path: Path, window: tuple[float, float] | None) -> Image.Image:
    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array.astype(np.float32)  # (H, W) raw stored values
    except Exception as e:  # pydicom raises many types for broken files
        raise ValueError(f"{path}: not a readable DICOM image ({type(e).__name__}: {e})") from None
    if pixels.ndim != 2:
        raise ValueError(f"{path}: expected one 2-D slice, got pixel data of shape {pixels.shape}")
    pixels = pixels * float(ds.get("RescaleSlope", 1) or 1) + float(ds.get("RescaleIntercept", 0) or 0)
    if window is None and ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        centre, width = (float(np.atleast_1d(ds.WindowCenter)[0]), float(np.atleast_1d(ds.WindowWidth)[0]))
    elif window is None:
        lo, hi = np.percentile(pixels, [1, 99])
        centre, width = (lo + hi) / 2, max(hi - lo, 1.0)
    else:
        centre, width = window
    grey = np.clip((pixels - (centre - width / 2)) / width, 0, 1)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        grey = 1 - grey
    return Image.fromarray((grey * 255).astype(np.uint8)).convert("RGB")


def to_displayable(pixel_values, image_mean, image_std) -> np.ndarray:
    """Undo the processor's normalisation: (3, H, W) tensor -> (H, W, 3) floats in [0, 1] for
    plt.imshow."""
    x = np.asarray(pixel_values, dtype=np.float32).transpose(1, 2, 0)
    return np.clip(x * np.asarray(image_std) + np.asarray(image_mean), 0, 1)
