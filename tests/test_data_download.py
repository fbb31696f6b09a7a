"""The download engine against a real HTTP server on 127.0.0.1 that injects 404, 500, slow and truncated answers."""

import hashlib
import json
import shutil

import pytest

from fake_release import write_image_manifest
from llavamed_lite.data.download import Package, download_all, read_manifest, write_oa_file_list
from llavamed_lite.paths import data_sample
from llavamed_lite.teaching_servers import FaultyServer

REAL = data_sample("real_pmc", "packages", "PMC12419688.tar.gz")
FAST = dict(timeout=2.0, retries=2, backoff=0.01, progress=False)


@pytest.fixture
def mirror(tmp_path):
    """A folder of 'packages': the real one under several names."""
    root = tmp_path / "mirror"
    root.mkdir()
    for name in ("PMC1.tar.gz", "PMC2.tar.gz", "PMC3.tar.gz", "PMC4.tar.gz", "PMC5.tar.gz"):
        shutil.copy(REAL, root / name)
    return root


def _pkgs(server, names, **kw):
    return [Package(url=server.url(n), name=n, **kw) for n in names]


def test_faults_are_survived_and_reported(mirror, tmp_path):
    faults = {"PMC2.tar.gz": "404", "PMC3.tar.gz": "500:1", "PMC4.tar.gz": "truncate", "PMC5.tar.gz": "500"}
    out = tmp_path / "dl"
    with FaultyServer(mirror, faults) as server:
        names = ["PMC1.tar.gz", "PMC2.tar.gz", "PMC3.tar.gz", "PMC4.tar.gz", "PMC5.tar.gz"]
        report = download_all(_pkgs(server, names), out, workers=3, **FAST)
        by_name = {r.name: r for r in report.results}
        assert by_name["PMC1.tar.gz"].status == "done"
        assert (by_name["PMC2.tar.gz"].status, by_name["PMC2.tar.gz"].reason) == ("failed", "not found (404)")
        assert server.gets("PMC2.tar.gz") == 1  # a 404 is not retried
        assert by_name["PMC3.tar.gz"].status == "done" and by_name["PMC3.tar.gz"].attempts == 2
        assert by_name["PMC4.tar.gz"].status == "done"
        ranges = [r for p, r in server.requests if p == "PMC4.tar.gz"]
        assert ranges[0] is None and ranges[1] == f"bytes={REAL.stat().st_size // 2}-"  # resumed, not restarted
        assert (by_name["PMC5.tar.gz"].status, by_name["PMC5.tar.gz"].reason) == ("failed", "HTTP 500")
        assert server.gets("PMC5.tar.gz") == 3  # 1 + 2 retries
        for n in ("PMC1.tar.gz", "PMC3.tar.gz", "PMC4.tar.gz"):
            assert (out / n).read_bytes() == REAL.read_bytes()
        assert not (out / "PMC2.tar.gz").exists() and not (out / "PMC5.tar.gz").exists()
        assert report.counts() == {"done": {"downloaded": 3}, "failed": {"not found (404)": 1, "HTTP 500": 1}}
        assert "failed: 1 HTTP 500, 1 not found (404)" in str(report)

        # a second run fetches nothing complete again and skips the known 404
        before = len(server.requests)
        again = download_all(_pkgs(server, names), out, workers=3, **FAST)
        counts = again.counts()
        assert counts["skipped"] == {"already complete": 3, "not found earlier (ledger)": 1}
        assert [p for p, _ in server.requests[before:]] == ["PMC5.tar.gz"] * 3
    ledger = [json.loads(line) for line in (out / "download_ledger.jsonl").read_text().splitlines()]
    assert len(ledger) == 9 and {"name", "url", "status", "reason"} <= set(ledger[0])


def test_slow_server_times_out_then_resume_of_partial_file(mirror, tmp_path):
    out = tmp_path / "dl"
    out.mkdir()
    with FaultyServer(mirror, {"PMC1.tar.gz": "slow:1.5"}) as server:
        report = download_all(_pkgs(server, ["PMC1.tar.gz"]), out, timeout=0.3, retries=1, backoff=0.01, progress=False)
        assert (report.results[0].status, report.results[0].reason) == ("failed", "timeout")
        # a partial file left by an earlier, killed run is completed with a Range request
        data = REAL.read_bytes()
        (out / "PMC2.tar.gz.part").write_bytes(data[:1000])
        report = download_all(_pkgs(server, ["PMC2.tar.gz"]), out, **FAST)
        assert report.results[0].status == "done"
        assert server.requests[-1] == ("PMC2.tar.gz", "bytes=1000-")
        assert (out / "PMC2.tar.gz").read_bytes() == data


def test_checksum_and_size_checks(mirror, tmp_path):
    data = REAL.read_bytes()
    good = hashlib.sha256(data).hexdigest()
    with FaultyServer(mirror) as server:
        ok = download_all(_pkgs(server, ["PMC1.tar.gz"], sha256=good, size=len(data)), tmp_path / "a", **FAST)
        assert ok.results[0].status == "done"
        bad = download_all(_pkgs(server, ["PMC2.tar.gz"], sha256="0" * 64), tmp_path / "b", **FAST)
        assert (bad.results[0].status, bad.results[0].reason) == ("failed", "sha256 mismatch")
        assert not (tmp_path / "b" / "PMC2.tar.gz").exists()
        size = download_all(_pkgs(server, ["PMC3.tar.gz"], size=5), tmp_path / "c", **FAST)
        assert size.results[0].reason.startswith("size mismatch")


def test_read_manifests(tmp_path):
    row = ["oa_package/aa/bb/PMC1.tar.gz", "J. 2020", "PMC1", "2021-01-15 10:00:00", "11", "CC BY"]
    csv_path = write_oa_file_list(tmp_path / "oa_file_list.csv", [row])
    (p,) = read_manifest(csv_path, base_url="https://mirror.example/pmc/")
    assert (p.url, p.name, p.pmcid, p.pmid, p.license) == (
        "https://mirror.example/pmc/oa_package/aa/bb/PMC1.tar.gz", "PMC1.tar.gz", "PMC1", "11", "CC BY")
    rows = [{"pmc_tar_url": "https://x/PMC7.tar.gz", "image_file_path": f"PMC7/f{i}.jpg", "pair_id": f"p{i}"}
            for i in range(3)]
    (q,) = read_manifest(write_image_manifest(tmp_path / "images.jsonl", rows))
    assert q.name == "PMC7.tar.gz" and q.pmcid == "PMC7" and q.images[2] == ("PMC7/f2.jpg", "p2")


@pytest.mark.parametrize("text, suffix, message", [
    ('{"pmc_tar_url": "x"}\n', ".jsonl", "line 1: expected pmc_tar_url"),
    ("a,b\n1,2\n", ".csv", "no 'File' column"),
    ("File,PMID\n,1\n", ".csv", "line 2: empty 'File'"),
    ('{"pmc_tar_url": \n{}\n', ".jsonl", "invalid JSON on line 1"),
])
def test_bad_manifests_name_file_and_line(tmp_path, text, suffix, message):
    path = tmp_path / f"m{suffix}"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as e:
        read_manifest(path)
    assert str(path) in str(e.value)
