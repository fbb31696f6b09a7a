"""LLaVA-Med's released data, read by its release names and made into records a stage trains on.

The release (CC BY-NC 4.0: fetched at run time, never committed) is a folder or a base URL laid out as

    alignment/llava_med_alignment_500k.json                      stage 1: 500K image-caption records
    instruct/llava_med_instruct_{10k,60k,60k_inline_mention}.json stage 2: GPT-4 conversations
    llava_med_image_urls.jsonl                                   {pmc_tar_url, image_file_path, pair_id} per pair
    eval/llava_med_eval_qa50_qa.jsonl                            the 193 chat-evaluation questions

(a folder holding the files side by side works too). The records name their image `{pair_id}.jpg`; the images
themselves are inside the PubMed Central packages the image-URL manifest names, so `prepare_release_records`
fetches those packages with the resilient downloader (resume, retries, ledger), takes the one figure out of each
(safe extraction) as images/{pair_id}.jpg, and writes the records whose image arrived. `max_pairs` takes a subset
sampled round-robin over the five domains, so a 5K-pair run can come before the full one.
"""

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from ..io import atomic_write_json, iter_jsonl, read_json
from ..runs import MissingInput, Records, RunDir
from .domains import OTHER, classify_caption
from .download import Package, download_all, download_package, read_manifest
from .extract import ArchiveError, extract_listed_images
from .formats import DOMAINS, RecordError, load_records, record_domain, validate_training_record, write_records

RELEASE_FILES = {
    "alignment": "alignment/llava_med_alignment_500k.json",
    "instruct-10k": "instruct/llava_med_instruct_10k.json",
    "instruct-60k": "instruct/llava_med_instruct_60k.json",
    "instruct-60k-im": "instruct/llava_med_instruct_60k_inline_mention.json",
    "image_urls": "llava_med_image_urls.jsonl",
    "qa50": "eval/llava_med_eval_qa50_qa.jsonl",
}
INSTRUCT_VARIANTS = ("10k", "60k", "60k-im")
QA50_FIELDS = ("question_id", "pair_id", "text", "gpt4_answer", "fig_caption", "type")
LICENCE = ("LLaVA-Med's released data is licensed CC BY-NC 4.0 (non-commercial research use; the figures keep the "
           "licences of their PubMed Central articles). It is fetched into the run directory and never committed.")
PARAMETER = "data.release (--set data.release=FOLDER_OR_URL, or the notebooks' `release` parameter)"


def is_url(release: str) -> bool:
    return release.startswith(("http://", "https://", "file://"))


def fetch_release_file(release: str, key: str, dest: Path, progress: bool = True) -> Path:
    """The release file `key` (see RELEASE_FILES): found in a local folder (in the layout, or flat), or fetched
    from a base URL into `dest` (resumed after an interruption, kept once complete)."""
    layout = RELEASE_FILES[key]
    name = Path(layout).name
    if not is_url(release):
        folder = Path(release)
        for path in (folder / layout, folder / name):
            if path.is_file():
                return path
        raise MissingInput(f"{name}: not in the LLaVA-Med release folder {folder} (looked for {layout} and {name}); "
                           f"set {PARAMETER}")
    dest.mkdir(parents=True, exist_ok=True)
    if (dest / name).is_file():
        return dest / name
    print(f"fetching {name} from {release}", flush=True)
    reasons = []
    for url in (release.rstrip("/") + "/" + layout, release.rstrip("/") + "/" + name):
        result = download_package(Package(url=url, name=name), dest)
        if result.status != "failed":
            return dest / name
        reasons.append(f"{url}: {result.reason}")
    raise MissingInput(f"{name}: could not fetch it from the LLaVA-Med release ({'; '.join(reasons)}); set {PARAMETER}")


def read_release_records(path: str | Path) -> list[dict]:
    """A released records file (a JSON list), each record validated; `conversatons` (the alignment file's spelling)
    becomes `conversations`. A truncated or malformed file is an error naming it."""
    records = load_records(path)
    return [validate_training_record(r, f"{path}: record {i}") for i, r in enumerate(records)]


def pair_of(record: dict) -> str:
    """The pair id a record's image belongs to: the released records name their image `{pair_id}.jpg`."""
    return Path(str(record.get("image") or f"{record['id']}.jpg")).stem


def domain_of(record: dict) -> str:
    """A record's domain: its `domain` field (instruct records), else the vocabulary of its caption (the alignment
    records' answer), else "other"."""
    domain = record.get("domain")
    if isinstance(domain, dict):
        return record_domain(record) or OTHER
    if isinstance(domain, str) and domain in DOMAINS:
        return domain
    answers = " ".join(t["value"] for t in record["conversations"] if t["from"] == "gpt")
    return classify_caption(answers)


def round_robin(records: list[dict], max_pairs: int | None, seed: int = 0) -> list[dict]:
    """At most max_pairs records, taken in turn from each domain (shuffled with the seed), "other" last."""
    if max_pairs is None or max_pairs >= len(records):
        return list(records)
    if max_pairs < 1:
        raise ValueError(f"data.max_pairs must be a positive number of pairs, got {max_pairs}")
    groups: dict[str, list[dict]] = {d: [] for d in (*DOMAINS, OTHER)}
    for r in records:
        groups[domain_of(r)].append(r)
    rng = random.Random(seed)
    for group in groups.values():
        rng.shuffle(group)
    out, k = [], 0
    while len(out) < max_pairs:
        for group in groups.values():
            if k < len(group) and len(out) < max_pairs:
                out.append(group[k])
        k += 1
    return out


@dataclass
class ImageReport:
    counts: dict[str, int]  # "done: extracted", "failed: not in the package", ...
    failed: dict[str, str]  # pair_id -> reason

    def __str__(self) -> str:
        return ", ".join(f"{n} {k}" for k, n in sorted(self.counts.items()))


def fetch_images(pair_ids: list[str], manifest: Path, images: Path, packages: Path, workers: int = 8,
                 keep_packages: bool = False, progress: bool = True) -> ImageReport:
    """images/{pair_id}.jpg for each pair, from the PMC packages the manifest names. Pairs already extracted are not
    fetched again; a package is deleted once its figures are out unless keep_packages."""
    wanted = {p for p in pair_ids if not (images / f"{p}.jpg").is_file()}
    results = [{"pair_id": p, "status": "skipped", "reason": "already extracted"} for p in pair_ids if p not in wanted]
    todo = read_manifest(manifest, pair_ids=wanted) if wanted else []
    listed = {pid for p in todo for _, pid in p.images}
    results += [{"pair_id": p, "status": "failed", "reason": "not in the image manifest"} for p in wanted - listed]
    download = download_all(todo, packages, workers=workers, progress=progress)
    for pkg, got in tqdm(list(zip(todo, download.results)), desc="extract", unit="pkg", disable=not progress):
        if got.status == "failed":
            results += [{"pair_id": pid, "status": "failed", "reason": f"package {got.reason}"}
                        for _, pid in pkg.images]
            continue
        try:
            results += extract_listed_images(packages / pkg.name, pkg.images, images)
        except ArchiveError as e:
            results += [{"pair_id": pid, "status": "failed", "reason": f"bad package ({e})"} for _, pid in pkg.images]
        if not keep_packages:
            (packages / pkg.name).unlink(missing_ok=True)
    counts = Counter(f"{r['status']}: {r['reason'].split(' (')[0]}" for r in results)
    return ImageReport(dict(counts), {r["pair_id"]: r["reason"] for r in results if r["status"] == "failed"})


def release_key(stage: str, variant: str) -> str:
    """The release file a stage trains on: the alignment set for stage 1, an instruct variant for stage 2."""
    if stage == "1":
        return "alignment"
    if variant not in INSTRUCT_VARIANTS:
        raise ValueError(f"data.instruct_variant {variant!r}: choose one of {', '.join(INSTRUCT_VARIANTS)}")
    return f"instruct-{variant}"


def prepare_release_records(run: RunDir, stage: str, release: str, variant: str = "60k-im",
                            max_pairs: int | None = None, seed: int = 0, progress: bool = True) -> Records:
    """The records stage 1 or 2 trains on, from LLaVA-Med's release: the file fetched, a round-robin subset of
    max_pairs, their images fetched, and the records whose image arrived written to run_dir/data/llava_med/
    (kept when made with the same arguments; `images_report.json` says what was missing and why)."""
    key = release_key(stage, variant)
    root = run.release
    out = Records(root / f"{key}_train.json", root / "images")
    made = {"release": release, "file": RELEASE_FILES[key], "max_pairs": max_pairs, "seed": seed}
    stats = root / f"{key}_train.stats.json"
    if out.exists() and stats.is_file():
        try:
            if read_json(stats).get("made_from") == made:
                return out
        except ValueError:
            pass  # an unreadable stats file: make the records again
    print(LICENCE, flush=True)
    records = round_robin(read_release_records(fetch_release_file(release, key, root / "files", progress)),
                          max_pairs, seed)
    if not records:
        raise RecordError(f"{RELEASE_FILES[key]}: no records in the release file")
    manifest = fetch_release_file(release, "image_urls", root / "files", progress)
    report = fetch_images(sorted({pair_of(r) for r in records}), manifest, out.image_folder, root / "packages",
                          progress=progress)
    print(f"images -> {out.image_folder}: {report}", flush=True)
    kept = [{**r, "image": f"{pair_of(r)}.jpg"} for r in records if pair_of(r) not in report.failed]
    if not kept:
        raise MissingInput(f"none of the {len(records)} images of {RELEASE_FILES[key]} could be fetched ({report}); "
                           f"check {PARAMETER}")
    write_records(out.path, kept)
    atomic_write_json(stats, {"made_from": made, "records": len(kept), "without_image": len(records) - len(kept),
                              "images": report.counts, "failed": report.failed,
                              "domains": dict(Counter(domain_of(r) for r in kept))})
    return out


def qa50_questions(run: RunDir, release: str, progress: bool = True) -> tuple[list[dict], Path]:
    """LLaVA-Med's chat-evaluation questions (193 over 50 figures, for the GPT-4 judge) whose figure could be had,
    and the folder their `image` ({pair_id}.jpg) is relative to."""
    root = run.release
    path = fetch_release_file(release, "qa50", root / "files", progress)
    questions = []
    for i, q in enumerate(iter_jsonl(path, skip_truncated_tail=False), 1):
        missing = [k for k in QA50_FIELDS if not isinstance(q, dict) or k not in q]
        if missing:
            raise RecordError(f"{path}: line {i}: missing field(s) {', '.join(missing)}")
        questions.append({**q, "image": f"{q['pair_id']}.jpg"})
    images = root / "images"
    manifest = fetch_release_file(release, "image_urls", root / "files", progress)
    report = fetch_images(sorted({str(q["pair_id"]) for q in questions}), manifest, images, root / "packages",
                          progress=progress)
    return [q for q in questions if str(q["pair_id"]) not in report.failed], images
