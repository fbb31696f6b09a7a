"""Resilient download of PMC packages from a manifest: the part of LLaVA-Med's pipeline its users
say breaks most (404s, no resume, slow). Standard library only (urllib + threads).

- Manifests: PMC's open-access file list (`oa_file_list.csv`: File, Article Citation, Accession ID,
  Last Updated, PMID, License) or LLaVA-Med's image manifest (JSONL: pmc_tar_url, image_file_path,
  pair_id), grouped by package.
- Bounded concurrency (a thread pool), a timeout per request, retries with exponential backoff on
  5xx, 429, timeouts and cut connections; 404/410 are recorded and not retried.
- Resume: bytes go to `NAME.part`; a retry or a later run asks for the rest with an HTTP Range
  request.
- Checks: Content-Length (a short body is a truncation, resumed), and size / sha256 / md5 where the
  manifest gives them. Only a verified file is renamed to its final name, so a final file is
  complete and is never fetched again.
- A ledger (`download_ledger.jsonl`, append-only) keeps every outcome; the report counts them by
  reason.
"""

import csv
import hashlib
import http.client
import io
import json
import socket
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from ..io import append_jsonl, atomic_write_text, iter_jsonl

PMC_OA_BASE = "https://ftp.ncbi.nlm.nih.gov/pub/pmc/"  # base of the File column of oa_file_list.csv
OA_FILE_LIST_HEADER = ["File", "Article Citation", "Accession ID", "Last Updated (YYYY-MM-DD HH:MM:SS)", "PMID",
                       "License"]
LEDGER = "download_ledger.jsonl"
CHUNK = 1 << 16
USER_AGENT = "llavamed-lite/0.1 (research data curation)"


@dataclass
class Package:
    """One package to fetch. `images` are (image_file_path inside the package, pair_id) from
    LLaVA-Med's manifest."""
    url: str
    name: str  # file name under the download folder
    pmcid: str | None = None
    pmid: str | None = None
    license: str | None = None
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    images: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class DownloadResult:
    name: str
    url: str
    status: str  # "done" | "skipped" | "failed"
    reason: str  # "downloaded", "already complete", "not found (404)", "HTTP 500", "timeout", ...
    bytes: int = 0
    attempts: int = 0


@dataclass
class DownloadReport:
    results: list[DownloadResult]

    def counts(self) -> dict[str, dict[str, int]]:
        """{"done": {"downloaded": 3}, "skipped": {...}, "failed": {"not found (404)": 1}}"""
        out: dict[str, Counter] = {}
        for r in self.results:
            out.setdefault(r.status, Counter())[r.reason] += 1
        return {k: dict(v) for k, v in out.items()}

    def paths(self, folder: str | Path) -> list[Path]:
        return [Path(folder) / r.name for r in self.results if r.status in ("done", "skipped") and
                (Path(folder) / r.name).exists()]

    def __str__(self) -> str:
        lines = [f"{len(self.results)} packages"]
        for status, reasons in self.counts().items():
            lines.append(f"  {status}: " + ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items())))
        return "\n".join(lines)


class DownloadError(Exception):
    def __init__(self, reason: str, retry: bool):
        super().__init__(reason)
        self.reason, self.retry = reason, retry


# ---- manifests ---------------------------------------------------------------------------------------------
def read_manifest(path: str | Path, base_url: str = PMC_OA_BASE, max_packages: int | None = None,
                  pair_ids: set[str] | None = None) -> list[Package]:
    """Packages from an oa_file_list CSV or a LLaVA-Med image manifest JSONL (one line per image,
    grouped here by pmc_tar_url; `pair_ids` keeps only those images). Errors name the file and line."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such manifest")
    if path.suffix in (".jsonl", ".json"):
        packages: dict[str, Package] = {}
        for i, row in enumerate(iter_jsonl(path, skip_truncated_tail=False), 1):
            if not isinstance(row, dict) or not all(k in row for k in ("pmc_tar_url", "image_file_path", "pair_id")):
                raise ValueError(f"{path}: line {i}: expected pmc_tar_url, image_file_path and pair_id")
            if pair_ids is not None and str(row["pair_id"]) not in pair_ids:
                continue
            url = row["pmc_tar_url"]
            if url not in packages:
                packages[url] = Package(url=url, name=_name_from_url(url), pmcid=_pmcid(url))
            packages[url].images.append((row["image_file_path"], str(row["pair_id"])))
        out = list(packages.values())
    else:
        out = []
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "File" not in reader.fieldnames:
                raise ValueError(f"{path}: not an oa_file_list CSV (no 'File' column; header {reader.fieldnames})")
            for i, row in enumerate(reader, 2):
                file = (row.get("File") or "").strip()
                if not file:
                    raise ValueError(f"{path}: line {i}: empty 'File'")
                size = row.get("Size") or row.get("size")
                out.append(Package(url=file if "://" in file else base_url.rstrip("/") + "/" + file.lstrip("/"),
                                   name=_name_from_url(file), pmcid=(row.get("Accession ID") or None),
                                   pmid=(row.get("PMID") or None), license=(row.get("License") or None),
                                   size=int(size) if size else None, sha256=row.get("sha256") or None,
                                   md5=row.get("md5") or None))
    return out[:max_packages] if max_packages is not None else out


def _name_from_url(url: str) -> str:
    name = PurePosixPath(url.split("?")[0]).name
    if not name or name in (".", ".."):
        raise ValueError(f"cannot derive a file name from {url!r}")
    return name


def _pmcid(url: str) -> str | None:
    name = _name_from_url(url)
    return name.split(".")[0] if name.upper().startswith("PMC") else None


# ---- one package --------------------------------------------------------------------------------------------
def _verify(path: Path, pkg: Package) -> str | None:
    """None if the file matches what the manifest knows, else the reason it does not."""
    size = path.stat().st_size
    if pkg.size is not None and size != pkg.size:
        return f"size mismatch ({size} != {pkg.size})"
    for algo in ("sha256", "md5"):
        expected = getattr(pkg, algo)
        if expected:
            h = hashlib.new(algo)
            with path.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            if h.hexdigest().lower() != expected.lower():
                return f"{algo} mismatch"
    return None


def _fetch_once(pkg: Package, part: Path, timeout: float) -> int:
    """One request: resume from the .part file's length with a Range header. Returns the bytes now
    in .part. Raises DownloadError (retry or not) on failure; a short body leaves the partial bytes
    for the next try."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(pkg.url, headers={"User-Agent": USER_AGENT})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and have:  # nothing left to send: the part is whole (checked by the caller)
            return have
        if e.code in (404, 410):
            raise DownloadError(f"not found ({e.code})", retry=False)
        raise DownloadError(f"HTTP {e.code}", retry=e.code >= 500 or e.code in (408, 429))
    except urllib.error.URLError as e:
        if isinstance(e.reason, (socket.timeout, TimeoutError)):
            raise DownloadError("timeout", retry=True)
        if isinstance(e.reason, FileNotFoundError):
            raise DownloadError("not found (no such file)", retry=False)
        raise DownloadError(f"connection error ({e.reason})", retry=True)
    except (socket.timeout, TimeoutError):
        raise DownloadError("timeout", retry=True)
    except (ConnectionError, http.client.HTTPException) as e:
        raise DownloadError(f"connection error ({type(e).__name__})", retry=True)
    with response:
        status = getattr(response, "status", 200)
        if have and status != 206:  # the server ignored the Range: start over
            have = 0
        length = response.headers.get("Content-Length")
        expected = have + int(length) if length and length.isdigit() else None
        got = have
        try:
            with part.open("ab" if have else "wb") as f:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    got += len(chunk)
        except (socket.timeout, TimeoutError):
            raise DownloadError("timeout", retry=True)
        except (ConnectionError, http.client.HTTPException, OSError) as e:
            raise DownloadError(f"truncated ({type(e).__name__})", retry=True)
        if expected is not None and got < expected:
            raise DownloadError(f"truncated ({got} of {expected} bytes)", retry=True)
        return got


def download_package(pkg: Package, folder: Path, timeout: float = 30.0, retries: int = 3,
                     backoff: float = 0.5) -> DownloadResult:
    """Fetch one package into `folder` (skipped when its final file is already there and verifies)."""
    final, part = folder / pkg.name, folder / (pkg.name + ".part")
    if final.exists():
        problem = _verify(final, pkg)
        if problem is None:
            return DownloadResult(pkg.name, pkg.url, "skipped", "already complete", final.stat().st_size)
        final.unlink()  # e.g. the manifest's checksum changed: fetch again
    reason, attempts = "unknown", 0
    for attempts in range(1, retries + 2):
        try:
            got = _fetch_once(pkg, part, timeout)
            problem = _verify(part, pkg)
            if problem is None:
                part.replace(final)
                return DownloadResult(pkg.name, pkg.url, "done", "downloaded", got, attempts)
            part.unlink(missing_ok=True)  # wrong bytes cannot be resumed
            reason = problem
        except DownloadError as e:
            reason = e.reason
            if not e.retry:
                part.unlink(missing_ok=True)
                return DownloadResult(pkg.name, pkg.url, "failed", reason, 0, attempts)
        if attempts <= retries:
            time.sleep(backoff * 2 ** (attempts - 1))
    return DownloadResult(pkg.name, pkg.url, "failed", reason, part.stat().st_size if part.exists() else 0, attempts)


# ---- many packages ------------------------------------------------------------------------------------------
def download_all(packages: list[Package], folder: str | Path, workers: int = 4, timeout: float = 30.0,
                 retries: int = 3, backoff: float = 0.5, retry_missing: bool = False,
                 progress: bool = True) -> DownloadReport:
    """Fetch packages with at most `workers` at a time; every outcome goes to
    folder/download_ledger.jsonl. Packages the ledger records as not found are skipped (unless
    retry_missing): PMC retracts packages."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ledger = folder / LEDGER
    missing = set()
    if ledger.exists() and not retry_missing:
        missing = {r["url"] for r in iter_jsonl(ledger) if r.get("reason", "").startswith("not found")}
    results: dict[int, DownloadResult] = {}
    todo = []
    for i, pkg in enumerate(packages):
        if pkg.url in missing and not (folder / pkg.name).exists():
            results[i] = DownloadResult(pkg.name, pkg.url, "skipped", "not found earlier (ledger)")
        else:
            todo.append(i)
    bar = tqdm(total=len(packages), desc="download", unit="pkg", disable=not progress, initial=len(results))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(download_package, packages[i], folder, timeout, retries, backoff): i for i in todo}
        for fut in as_completed(futures):
            result = fut.result()
            results[futures[fut]] = result
            append_jsonl(ledger, [{**result.__dict__, "time": time.time()}])  # only this thread writes it
            bar.update(1)
            bar.set_postfix(failed=sum(r.status == "failed" for r in results.values()))
    bar.close()
    return DownloadReport([results[i] for i in range(len(packages))])


def write_oa_file_list(path: str | Path, rows: list[list[str]]) -> Path:
    """A manifest in oa_file_list.csv's layout, one row (in OA_FILE_LIST_HEADER's columns) per
    package: what the tiny world's PMC mirror serves (synth/articles.py)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([OA_FILE_LIST_HEADER, *rows])
    return atomic_write_text(path, buf.getvalue())
