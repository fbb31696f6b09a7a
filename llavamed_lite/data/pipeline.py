"""The curation pipeline: PMC packages (or loose JATS articles) in, LLaVA-Med's files out.

Per package: safe extraction -> JATS parsing -> per figure: caption and image checks -> domain
(caption vocabulary, then zero-shot CLIP for captions that name none) -> duplicates -> the figure
saved as images/{pair_id}.jpg. Every package's outcome is appended to a ledger, so an interrupted
run resumes where it stopped without redoing finished packages (and rebuilds its duplicate index
from the ledger, so the result does not depend on where it stopped). Then `finalize` writes,
atomically, under run_dir/data/pmc/ (beside the tiny world, which lives in run_dir/data/ itself;
`RunDir(run_dir).curated()` names every file):

    captions.json          caption file: pair_id, pmid, fig_id, fig_label, fig_caption, in_text_mention, domain
                           (+ image, pmcid, domain_name, license: extra fields readers ignore)
    image_manifest.jsonl   {pmc_tar_url, image_file_path, pair_id} per figure
    alignment.json         stage-1 records {id, image, conversations}; images relative to run_dir/data/pmc/
    images/{pair_id}.jpg   the curated figures
    hf_dataset/            the same as a datasets.DatasetDict (train / validation, split by article)
    report.json            counts: packages, figures kept, rejects by reason, domains
    rejects.jsonl          every rejected package or figure with its reason
    curation_ledger.jsonl  the per-package ledger (resume)
"""

import json
import os
import random
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ..io import append_jsonl, atomic_write_json, atomic_write_text, iter_jsonl, read_json
from ..runs import RunDir
from .alignment import alignment_records
from .domains import OTHER, classify_caption, combine, domain_flags
from .extract import ArchiveError, find_article_xml, find_graphic, safe_extract
from .filters import (Deduplicator, FilterConfig, check_caption, count_reasons, open_image, phash,
                      pixel_hash)
from .formats import write_records
from .jats import Article, JATSError, parse_article



class CurationError(RuntimeError):
    """A run whose outputs would be worse than what is already there;
    the earlier outputs are kept."""


@dataclass
class Source:
    """One article to curate: a PMC package (.tar.gz) or a loose JATS
    file with its images beside it."""
    # unique in the run: the package file name, or the XML path relative to the input folder
    name: str
    path: Path
    kind: str  # "package" | "xml"
    url: str | None = None  # where the package came from (the image manifest's pmc_tar_url)


@dataclass
class CurationResult:
    records: list[dict]  # caption records
    rejects: list[dict]
    report: dict
    data_dir: Path
    paths: dict[str, Path] = field(default_factory=dict)


def find_sources(inputs: list[str | Path], urls: dict[str, str] | None = None) -> list[Source]:
    """Packages and loose articles under the inputs (files or folders, searched
    recursively), sorted by name."""
    urls = urls or {}
    out: dict[str, Source] = {}
    for item in inputs:
        item = Path(item)
        if not item.exists():
            raise FileNotFoundError(f"{item}: no such package, article or folder")
        files = [item] if item.is_file() else sorted(p for p in item.rglob("*") if p.is_file())
        base = item.parent if item.is_file() else item
        for p in files:
            if p.name.endswith((".tar.gz", ".tgz", ".tar")):
                out[p.name] = Source(p.name, p, "package", urls.get(p.name, p.resolve().as_uri()))
            elif p.suffix.lower() in (".nxml", ".xml"):
                name = str(p.relative_to(base))
                out[name] = Source(name, p, "xml", urls.get(name, p.resolve().as_uri()))
    return [out[k] for k in sorted(out)]


def _pair_id(article, source: Source, fig_id: str) -> str:
    stem = article.pmcid or re.sub(r"\.(tar\.gz|tgz|tar|nxml|xml)$", "", Path(source.name).name)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{stem}_{fig_id}")


class Curator:
    """Curates sources into run_dir/data. `image_classifier`: an
    ImageDomainClassifier or None (caption only)."""

    def __init__(self, run_dir: str | Path, filters: FilterConfig | None = None,
                 image_classifier=None, seed: int = 0):
        self.paths = RunDir(run_dir).curated()
        self.data_dir = self.paths["root"]
        self.images = self.paths["images"]
        self.ledger = self.paths["ledger"]
        self.filters = filters or FilterConfig()
        self.classifier = image_classifier
        self.seed = seed

    # ---- one source ----
    def curate_source(self, source: Source, dedup: Deduplicator) -> dict:
        """Process one source; returns its ledger entry (kept figures
        with their records, rejects)."""
        entry = {"source": source.name, "status": "ok", "reason": None, "kept": [], "rejected": []}
        work = self.paths["work"] / re.sub(r"[^A-Za-z0-9._-]+", "_", source.name)
        try:
            if source.kind == "package":
                files = safe_extract(source.path, work)
                xml, root = find_article_xml(files), work
            else:
                xml, root = source.path, source.path.parent
            if xml is None:
                return {**entry, "status": "rejected", "reason": "no article XML"}
            try:
                article = parse_article(xml, source=f"{source.name}:{xml.relative_to(root)}"
                                        if source.kind == "package" else str(source.path))
            except JATSError as e:
                return {**entry, "status": "rejected", "reason": "malformed XML", "error": str(e)}
            entry.update(pmid=article.pmid, pmcid=article.pmcid, title=article.title,
                         license=article.license.code, n_figures=len(article.figures))
            candidates = self.readable_figures(article, source, xml.parent, entry["rejected"])
            self.keep_figures(candidates, article, source, root, dedup, entry)
            return entry
        except ArchiveError as e:
            return {**entry, "status": "rejected", "reason": "unsafe or corrupt archive",
                    "error": str(e)}
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def readable_figures(self, article: Article, source: Source, folder: Path,
                         rejected: list) -> list[tuple]:
        """The figures whose caption passes the filters and whose image opens: (fig, pair_id, path,
        image) each. The others go to `rejected` with their reason."""
        candidates = []
        for fig in article.figures:
            pair_id = _pair_id(article, source, fig.fig_id)
            reject = {"pair_id": pair_id, "fig_id": fig.fig_id, "caption": fig.caption[:300]}
            reason = check_caption(fig.caption, self.filters)
            path = find_graphic(fig.graphic, folder) if reason is None else None
            if reason is None and path is None:
                reason = "missing graphic"
            image = None
            if reason is None:
                image, reason = open_image(path, self.filters)
            if reason:
                rejected.append({**reject, "reason": reason})
                continue
            candidates.append((fig, pair_id, path, image))
        return candidates

    def keep_figures(self, candidates: list[tuple], article: Article, source: Source, root: Path,
                     dedup: Deduplicator, entry: dict) -> None:
        """Classify the candidates' domain (caption and image, the images in one batch), drop
        other-domain figures and duplicates, and save the rest with their records into `entry`."""
        if self.classifier is not None and candidates:
            image_domains = self.classifier.classify([c[3] for c in candidates])
        else:
            image_domains = [None] * len(candidates)
        for (fig, pair_id, path, image), image_domain in zip(candidates, image_domains):
            caption_domain = classify_caption(fig.caption)
            domain = combine(caption_domain, image_domain)
            reject = {"pair_id": pair_id, "fig_id": fig.fig_id, "caption": fig.caption[:300],
                      "domain": domain}
            if domain == OTHER and not self.filters.keep_other:
                entry["rejected"].append({**reject, "reason": "other domain"})
                continue
            digest, perceptual = pixel_hash(image), phash(image)
            reason = dedup.check(digest, perceptual, fig.caption)
            if reason:
                entry["rejected"].append({**reject, "reason": reason})
                continue
            pair_id = dedup.unique_pair_id(pair_id)
            dedup.add(digest, perceptual, fig.caption, pair_id)
            _save_jpeg(image, self.images / f"{pair_id}.jpg")
            entry["kept"].append({
                "record": {"pair_id": pair_id, "pmid": article.pmid or "", "fig_id": fig.fig_id,
                           "fig_label": fig.label or f"Figure {article.figures.index(fig) + 1}",
                           "fig_caption": fig.caption, "in_text_mention": fig.mentions,
                           "domain": domain_flags(domain), "image": f"images/{pair_id}.jpg",
                           "pmcid": article.pmcid, "domain_name": domain,
                           "caption_domain": caption_domain,
                           "image_domain": image_domain, "license": article.license.code},
                "image_file_path": str(path.relative_to(root)), "pmc_tar_url": source.url,
                "pixel_hash": digest, "phash": f"{perceptual:016x}"})

    # ---- many sources ----
    def run(self, sources: list[Source], max_articles: int | None = None, progress: bool = True,
            restart: bool = False) -> CurationResult:
        """Curate the sources not yet in the ledger, then finalize. Safe to call again after an
        interruption. The ledger keeps each package's decisions: after changing filters or
        classifier, pass restart=True (which deletes the earlier outputs of this run directory)."""
        if max_articles is not None and max_articles < 1:
            raise ValueError(f"max_articles must be >= 1, got {max_articles}")
        if restart:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        self.images.mkdir(parents=True, exist_ok=True)
        entries = self._ledger_entries()
        dedup = Deduplicator(self.filters.near_duplicate_bits)
        for entry in entries.values():
            for k in entry["kept"]:
                dedup.add(k["pixel_hash"], int(k["phash"], 16), k["record"]["fig_caption"],
                          k["record"]["pair_id"])
        sources = sources[:max_articles] if max_articles is not None else sources
        todo = [s for s in sources if s.name not in entries]
        bar = tqdm(todo, desc="curate", unit="pkg", disable=not progress)
        for source in bar:
            entry = self.curate_source(source, dedup)
            append_jsonl(self.ledger, [entry])
            entries[source.name] = entry
        shutil.rmtree(self.paths["work"], ignore_errors=True)
        return self.finalize([entries[s.name] for s in sources])

    def _ledger_entries(self) -> dict[str, dict]:
        if not self.ledger.exists():
            return {}
        return {e["source"]: e for e in iter_jsonl(self.ledger)}

    # ---- outputs ----
    def finalize(self, entries: list[dict]) -> CurationResult:
        """Write the outputs for `entries`. A result with no figure never replaces outputs that hold
        some (raises CurationError, everything kept): wrong inputs must not wipe a finished run."""
        records, manifest, rejects = [], [], []
        for e in entries:
            if e["status"] != "ok":
                rejects.append({"source": e["source"], "reason": e["reason"],
                                "error": e.get("error")})
            for r in e["rejected"]:
                rejects.append({"source": e["source"], **r})
            for k in e["kept"]:
                records.append(k["record"])
                manifest.append({"pmc_tar_url": k["pmc_tar_url"],
                                 "image_file_path": k["image_file_path"],
                                 "pair_id": k["record"]["pair_id"]})
        d, paths = self.data_dir, self.paths
        if not records and paths["captions"].is_file():
            try:
                earlier = len(read_json(paths["captions"]))
            except (ValueError, TypeError):
                earlier = 0
            if earlier:
                raise CurationError(
                    f"this run kept no figure from {len(entries)} source(s), but "
                    f"{paths['captions']} holds {earlier} from an earlier run; the earlier outputs "
                    "were kept (pass --restart / restart=True to start over)")
        write_records(paths["captions"], records)
        atomic_write_text(paths["image_manifest"], "".join(_jsonl(m) for m in manifest))
        alignment = alignment_records(records, d, seed=self.seed)
        write_records(paths["alignment"], alignment)
        atomic_write_text(paths["rejects"], "".join(_jsonl(r) for r in rejects))
        report = {
            "packages": len(entries),
            "packages_ok": sum(e["status"] == "ok" for e in entries),
            "figures_seen": sum(e.get("n_figures", 0) for e in entries),
            "figures_kept": len(records),
            "rejects": count_reasons(rejects),
            "domains": dict(Counter(r["domain_name"] for r in records)),
            "articles_with_figures": sum(1 for e in entries if e["kept"]),
            "mentions": sum(len(r["in_text_mention"]) for r in records),
        }
        atomic_write_json(paths["report"], report)
        save_dataset(records, alignment, paths["hf_dataset"], seed=self.seed)
        return CurationResult(records, rejects, report, d, paths)


def _jsonl(row: dict) -> str:
    return json.dumps(row, ensure_ascii=False) + "\n"


def _save_jpeg(image, path: Path) -> None:
    """Write the image as JPEG atomically (temp file + rename): a killed run
    never leaves half an image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    image.save(tmp, format="JPEG", quality=95)
    os.replace(tmp, path)


def save_dataset(records: list[dict], alignment: list[dict], path: Path, seed: int = 0,
                 validation_fraction: float = 0.1):
    """The curated pairs as a datasets.DatasetDict (train / validation, split by article so
    no article is in both), saved with save_to_disk. Image paths are relative to the
    curated root (run_dir/data/pmc)."""
    # pyarrow + pandas: seconds on every `curate`
    from datasets import Dataset, DatasetDict, Features, List, Value

    features = Features({"id": Value("string"), "image": Value("string"), "pmid": Value("string"),
                         "pmcid": Value("string"), "fig_label": Value("string"),
                         "caption": Value("string"), "mentions": List(Value("string")),
                         "domain": Value("string"),
                         "conversations": List({"from": Value("string"), "value": Value("string")})})
    rows = [{"id": r["pair_id"], "image": r["image"], "pmid": r["pmid"],
             "pmcid": r.get("pmcid") or "",
             "fig_label": r["fig_label"], "caption": r["fig_caption"],
             "mentions": [m if isinstance(m, str) else m["tokens"] for m in r["in_text_mention"]],
             "domain": r.get("domain_name") or "", "conversations": a["conversations"]}
            for r, a in zip(records, alignment)]
    articles = sorted({r["pmid"] or r["id"].rsplit("_", 1)[0] for r in rows})
    random.Random(seed).shuffle(articles)
    n_val = int(len(articles) * validation_fraction) if len(articles) > 1 else 0
    held = set(articles[:max(n_val, 1 if len(articles) >= 5 else 0)])
    split = {"train": [r for r in rows if (r["pmid"] or r["id"].rsplit("_", 1)[0]) not in held],
             "validation": [r for r in rows if (r["pmid"] or r["id"].rsplit("_", 1)[0]) in held]}
    dd = DatasetDict({k: Dataset.from_dict({c: [r[c] for r in v] for c in features},
                                           features=features)
                      for k, v in split.items()})
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    # one shard each, so an empty split still loads
    dd.save_to_disk(str(tmp), num_shards={k: 1 for k in dd})
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
    return dd
