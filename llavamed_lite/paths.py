"""Where the repository's shipped files live, so notebooks and tests find them from any working directory."""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_SAMPLES = Path(os.environ.get("LLAVAMED_DATA_SAMPLES", REPO_ROOT / "data_samples"))
TINY_FOUNDATION = DATA_SAMPLES / "tiny-foundation"


def data_sample(*parts: str) -> Path:
    """Path of a file under data_samples/, with a clear error when it is missing."""
    path = DATA_SAMPLES.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: data_samples/ ships with the repository (see ATTRIBUTION.md)")
    return path
