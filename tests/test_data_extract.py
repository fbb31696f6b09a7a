"""Safe extraction of PMC packages: the real package, and hostile or broken archives refused by name."""

import io
import shutil
import tarfile

import pytest

from llavamed_lite.data.extract import ArchiveError, find_article_xml, find_graphic, safe_extract
from llavamed_lite.paths import data_sample

REAL = data_sample("real_pmc", "packages", "PMC12419688.tar.gz")


def test_real_package_extracts_xml_and_images_only(tmp_path):
    files = safe_extract(REAL, tmp_path / "out")
    names = sorted(p.name for p in files)
    assert names == ["koaf197.nxml", "koaf197f1.gif", "koaf197f1.jpg"]  # the PDF stays packed
    xml = find_article_xml(files)
    assert xml.name == "koaf197.nxml"
    assert find_graphic("koaf197f1", xml.parent).name == "koaf197f1.jpg"  # not the .gif thumbnail


def _tar(path, members):
    """members: list of (TarInfo kwargs, data bytes or None)."""
    with tarfile.open(path, "w:gz") as tar:
        for kw, data in members:
            kw = dict(kw)
            info = tarfile.TarInfo(kw.pop("name"))
            for k, v in kw.items():
                setattr(info, k, v)
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


GOOD = ({"name": "PMC1/a.nxml"}, b"<article/>")


@pytest.mark.parametrize("member, reason", [
    ({"name": "/etc/evil.jpg"}, "absolute path"),
    ({"name": "PMC1/../../evil.jpg"}, "leaves the target"),
    ({"name": "PMC1/link.jpg", "type": tarfile.SYMTYPE, "linkname": "../../etc/passwd"}, "link pointing outside"),
    ({"name": "PMC1/link2.jpg", "type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}, "link pointing outside"),
    ({"name": "PMC1/hard.jpg", "type": tarfile.LNKTYPE, "linkname": "../outside"}, "link pointing outside"),
    ({"name": "PMC1/dev", "type": tarfile.CHRTYPE}, "device"),
    ({"name": "PMC1/fifo", "type": tarfile.FIFOTYPE}, "device or FIFO"),
])
def test_hostile_members_refuse_the_package(tmp_path, member, reason):
    archive = _tar(tmp_path / "PMC1.tar.gz", [GOOD, (member, None if "type" in member else b"x")])
    with pytest.raises(ArchiveError, match=reason) as e:
        safe_extract(archive, tmp_path / "out")
    assert "PMC1.tar.gz" in str(e.value) and repr(member["name"]) in str(e.value)
    assert not (tmp_path / "out").exists()  # nothing written, not even the good member
    assert not (tmp_path / "evil.jpg").exists()


def test_link_inside_the_package_is_accepted(tmp_path):
    archive = _tar(tmp_path / "p.tar.gz", [GOOD, ({"name": "PMC1/b.xml", "type": tarfile.SYMTYPE,
                                                   "linkname": "a.nxml"}, None)])
    files = safe_extract(archive, tmp_path / "out")
    assert [p.name for p in files] == ["a.nxml"]  # links themselves are never written


def test_absurd_sizes_are_refused(tmp_path):
    archive = _tar(tmp_path / "big.tar.gz", [GOOD, ({"name": "PMC1/f.jpg"}, b"x" * 1000)])
    with pytest.raises(ArchiveError, match="'PMC1/f.jpg': 1000 bytes is larger"):
        safe_extract(archive, tmp_path / "out", max_member_bytes=999)
    with pytest.raises(ArchiveError, match="unpacks to more than 500 bytes"):
        safe_extract(archive, tmp_path / "out", max_total_bytes=500)


def test_truncated_and_corrupt_archives(tmp_path):
    data = REAL.read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchiveError, match="cut.tar.gz: truncated or corrupt"):
        safe_extract(tmp_path / "cut.tar.gz", tmp_path / "out")
    (tmp_path / "junk.tar.gz").write_bytes(b"this is not a tar file at all" * 20)
    with pytest.raises(ArchiveError, match="junk.tar.gz: truncated or corrupt"):
        safe_extract(tmp_path / "junk.tar.gz", tmp_path / "out")
    with pytest.raises(ArchiveError, match="no such archive"):
        safe_extract(tmp_path / "absent.tar.gz", tmp_path / "out")


def test_find_graphic_refuses_paths_and_urls(tmp_path):
    shutil.copy(REAL, tmp_path / "x.jpg")
    assert find_graphic("x", tmp_path) == tmp_path / "x.jpg"
    assert find_graphic("x.tif", tmp_path) == tmp_path / "x.jpg"  # preprints name a TIFF that was converted
    for href in ("../x", "/etc/passwd", "https://example.org/x.jpg", None, "missing"):
        assert find_graphic(href, tmp_path) is None
