"""Filters for curated figures, each rejection counted by reason, and duplicate detection: exact (hash of the
decoded pixels), near (a 64-bit perceptual hash, DCT of a 32x32 greyscale thumbnail, within a Hamming distance)
and duplicate captions. Written with numpy and PIL only."""

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

REASONS = ("no article XML", "malformed XML", "unsafe or corrupt archive", "no caption", "missing graphic",
           "unreadable image", "caption too short", "caption too long", "image too small", "image too large",
           "other domain", "duplicate image", "near-duplicate image", "duplicate caption")


@dataclass
class FilterConfig:
    min_caption_words: int = 5
    max_caption_words: int = 512
    min_image_side: int = 32  # pixels, the shorter side
    max_image_side: int = 20_000  # and the longer: a "figure" larger than this is a scan of a poster
    max_image_pixels: int = 200_000_000  # decompression-bomb guard, checked before decoding
    keep_other: bool = False  # keep figures outside the five domains (the paper drops them)
    # perceptual hashes at most this many bits apart are near-duplicates. Resizing + JPEG recompression moves a
    # tiny-world figure 0-4 bits; distinct tiny-world figures (drawn from templates) are 4 or more apart.
    near_duplicate_bits: int = 2


# ---- hashes --------------------------------------------------------------------------------------------------
def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)
    m = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * np.sqrt(2 / n)
    m[0] /= np.sqrt(2)
    return m  # (n, n), orthonormal DCT-II


_DCT32 = _dct_matrix(32)


def phash(image: Image.Image) -> int:
    """64-bit perceptual hash: greyscale 32x32, 2-D DCT, the 8x8 lowest frequencies against their median.
    Robust to resizing, recompression and small edits; Hamming distance measures similarity."""
    grey = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)  # (32, 32)
    low = (_DCT32 @ grey @ _DCT32.T)[:8, :8].ravel()  # (64,)
    bits = low > np.median(low[1:])
    return int("".join("1" if b else "0" for b in bits), 2)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def pixel_hash(image: Image.Image) -> str:
    """SHA-256 of the decoded RGB pixels and size: the same picture saved twice (another file, same pixels)."""
    rgb = image.convert("RGB")
    return hashlib.sha256(f"{rgb.size}".encode() + rgb.tobytes()).hexdigest()


def caption_key(caption: str) -> str:
    """Captions that differ only in case, spacing, punctuation or the figure label count as the same."""
    text = re.sub(r"^(fig(ure)?s?\.?\s*\d+[a-z]?[.:]?\s*)", "", caption.strip(), flags=re.I)
    return re.sub(r"[\W_]+", " ", text.lower()).strip()


# ---- the state of one curation run --------------------------------------------------------------------------
@dataclass
class Deduplicator:
    """What the run has kept so far. Rebuilt from the ledger on resume so the result does not depend on
    interruptions."""
    near_bits: int = 2
    pixels: set = field(default_factory=set)
    phashes: list = field(default_factory=list)
    captions: set = field(default_factory=set)
    pair_ids: set = field(default_factory=set)

    def check(self, pixel_digest: str, perceptual: int, caption: str) -> str | None:
        """The duplicate reason, or None (then call add)."""
        if pixel_digest in self.pixels:
            return "duplicate image"
        if any(hamming(perceptual, h) <= self.near_bits for h in self.phashes):
            return "near-duplicate image"
        if caption_key(caption) in self.captions:
            return "duplicate caption"
        return None

    def add(self, pixel_digest: str, perceptual: int, caption: str, pair_id: str | None = None) -> None:
        self.pixels.add(pixel_digest)
        self.phashes.append(perceptual)
        self.captions.add(caption_key(caption))
        if pair_id is not None:
            self.pair_ids.add(pair_id)

    def unique_pair_id(self, pair_id: str) -> str:
        """pair_id, or pair_id-2, -3, ... if a kept figure already has it (two articles without a PMCID and
        with the same file name must not overwrite each other's image)."""
        candidate, n = pair_id, 1
        while candidate in self.pair_ids:
            n += 1
            candidate = f"{pair_id}-{n}"
        return candidate


def check_caption(caption: str, cfg: FilterConfig) -> str | None:
    if not caption.strip():
        return "no caption"
    n = len(caption.split())
    if n < cfg.min_caption_words:
        return "caption too short"
    if n > cfg.max_caption_words:
        return "caption too long"
    return None


def open_image(path, cfg: FilterConfig) -> tuple[Image.Image | None, str | None]:
    """(RGB image, None) or (None, reason): unreadable files and absurd sizes are rejected before decoding."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > cfg.max_image_pixels or max(w, h) > cfg.max_image_side:
                return None, "image too large"
            im.load()
            rgb = im.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError):
        return None, "unreadable image"
    if min(rgb.size) < cfg.min_image_side:
        return None, "image too small"
    return rgb, None


def count_reasons(rows: list[dict]) -> dict[str, int]:
    """{reason: count} over reject rows, in REASONS order."""
    c = Counter(r["reason"] for r in rows)
    return {r: c[r] for r in REASONS if c[r]} | {r: n for r, n in c.items() if r not in REASONS}
