import numpy as np
import pytest
from PIL import Image

from llavamed_lite.images import load_image, to_displayable
from llavamed_lite.paths import data_sample


def test_dicom_ct_is_windowed_to_rgb():
    image = load_image(data_sample("dicom", "CT_small.dcm"), window=(40, 400))  # soft-tissue window
    assert image.mode == "RGB" and image.size == (128, 128)
    grey = np.asarray(image)[..., 0]
    assert grey.min() == 0 and grey.max() == 255  # air is black, bone saturates


def test_dicom_mr_uses_its_own_window():
    image = load_image(data_sample("dicom", "MR_small.dcm"))
    assert image.size == (64, 64) and np.asarray(image).std() > 10


def test_png_x_ray():
    assert load_image(data_sample("xray", "00000001_000.png")).mode == "RGB"


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20])
def test_unreadable_files_name_the_file(tmp_path, content):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="broken.png: not a readable image"):
        load_image(path)


def test_truncated_dicom(tmp_path):
    data = data_sample("dicom", "CT_small.dcm").read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.dcm: not a readable DICOM image"):
        load_image(path)


def test_missing_and_enormous(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.png"):
        load_image(tmp_path / "nothing.png")
    path = tmp_path / "huge.png"
    Image.new("1", (10_000, 10_000)).save(path)  # 100 M pixels, a few KB on disk
    with pytest.raises(ValueError, match="too large"):
        load_image(path)


def test_to_displayable_inverts_normalisation():
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.2, 0.2]
    original = np.random.default_rng(0).random((4, 4, 3)).astype(np.float32)
    normalised = ((original - mean) / std).transpose(2, 0, 1)
    np.testing.assert_allclose(to_displayable(normalised, mean, std), original, atol=1e-6)
