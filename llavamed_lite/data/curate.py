"""`llavamed-lite curate`: download PMC packages from a manifest (optional), curate them into
LLaVA-Med's files.

    llavamed-lite curate --input data_samples/pmc_synthetic --run-dir runs/tiny
    llavamed-lite curate --manifest oa_file_list.csv --max-articles 1000 --download-dir pmc/ --run-dir runs/full \\
        --scale full --image-classifier auto

Outputs land in run_dir/data/pmc/ (captions.json, image_manifest.jsonl, alignment.json, images/,
hf_dataset/, report.json, rejects.jsonl; see llavamed_lite.runs.RunDir.curated). Re-running resumes:
finished downloads and finished packages are not redone. Inputs holding no package or article are
refused (exit 2), and a run that kept no figure never replaces outputs in which an earlier run kept
some (exit 1).
"""

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from ..cli import add_config_arguments, config_from_args, count, number
from ..io import atomic_write_json
from ..model.placement import resolve_device
from ..runs import RunDir
from ..synth.towers import domain_prompts
from .domains import OTHER_PROMPTS, ImageDomainClassifier
from .download import download_all, read_manifest
from .extract import ArchiveError, extract_listed_images
from .filters import FilterConfig
from .pipeline import Curator, CurationError, find_sources


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--run-dir", default="runs/tiny")
    parser.add_argument("--input", action="append", default=[], metavar="PATH",
                        help="package (.tar.gz), JATS file or folder of them (repeatable)")
    parser.add_argument("--manifest", default=None, help="oa_file_list.csv or LLaVA-Med image manifest (.jsonl) "
                                                         "to download first (default: data.manifest of the config)")
    parser.add_argument("--base-url", default=None, help="base URL for the File column of oa_file_list.csv")
    parser.add_argument("--download-dir", default=None, help="where packages go (default: run_dir/data/pmc_packages)")
    parser.add_argument("--max-articles", type=count(1), default=None, help="default: data.max_articles of the config")
    parser.add_argument("--workers", type=count(1), default=4, help="concurrent downloads")
    parser.add_argument("--timeout", type=number(), default=30.0)
    parser.add_argument("--retries", type=count(0), default=3)
    parser.add_argument("--image-classifier", default="none",
                        help="'none' (caption vocabulary only), 'auto' (the config's vision tower), "
                             "or a CLIP path/name")
    parser.add_argument("--keep-other", action="store_true", help="keep figures outside the five domains")
    parser.add_argument("--min-caption-words", type=count(0), default=5)
    parser.add_argument("--restart", action="store_true",
                        help="curate every package again (after changing filters or classifier); downloads are kept")
    parser.add_argument("--no-progress", action="store_true")


def image_classifier_for(spec: str, cfg):
    """The classifier a --image-classifier value names, or None. Tiny scale: the stage-0 CLIP,
    prompted with captions from the tiny world's own generator (the only language it knows); other
    scales: a real CLIP, prompted in the words of real captions, with "other" prompts (charts,
    diagrams, blots)."""
    if spec == "none":
        return None
    model = cfg.model.vision if spec == "auto" else spec
    device = resolve_device(cfg.device)
    if cfg.scale == "tiny":
        if not Path(model).exists():
            print(f"curate: no tiny CLIP at {model}; classifying by caption only", file=sys.stderr)
            return None
        return ImageDomainClassifier(model, prompts=domain_prompts(seed=cfg.seed), device=device)
    try:
        return ImageDomainClassifier(model, other_prompts=OTHER_PROMPTS, device=device)
    except OSError as e:  # a missing folder, or a hub name that cannot be fetched: transformers' many-line message
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise ValueError(f"--image-classifier {spec}: not a CLIP folder, and not loadable from the hub ({first})") \
            from None


def _extract_manifest_images(packages, folder: Path, run_dir: Path) -> None:
    """LLaVA-Med's image manifest: save the listed figures as
    run_dir/data/pmc/manifest_images/{pair_id}.jpg (the files their caption and instruction data
    refer to), with a report by reason."""
    paths = RunDir(run_dir).curated()
    out = paths["manifest_images"]
    rows = []
    for p in packages:
        if not (folder / p.name).exists():
            rows += [{"pair_id": pid, "status": "failed", "reason": "package not downloaded"} for _, pid in p.images]
            continue
        try:
            rows += extract_listed_images(folder / p.name, p.images, out)
        except ArchiveError as e:
            rows += [{"pair_id": pid, "status": "failed", "reason": f"bad package ({e})"} for _, pid in p.images]
    counts = Counter(f"{r['status']}: {r['reason'].split(' (')[0]}" for r in rows)
    atomic_write_json(paths["manifest_images_report"], {"counts": dict(counts), "images": rows})
    print(f"manifest images -> {out}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))


def main(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    max_articles = args.max_articles if args.max_articles is not None else cfg.data.max_articles
    inputs = list(args.input)
    urls = {}
    manifest = args.manifest or cfg.data.manifest
    if manifest:
        kwargs = {"base_url": args.base_url} if args.base_url else {}
        if not Path(manifest).is_file():
            print(f"curate: manifest {manifest}: no such file", file=sys.stderr)
            return 2
        packages = read_manifest(manifest, max_packages=max_articles, **kwargs)
        folder = Path(args.download_dir or RunDir(args.run_dir).pmc_packages)
        report = download_all(packages, folder, workers=args.workers, timeout=args.timeout, retries=args.retries,
                              progress=not args.no_progress)
        print(report)
        urls = {p.name: p.url for p in packages}
        inputs.append(folder)
        if any(p.images for p in packages):
            _extract_manifest_images(packages, folder, Path(args.run_dir))
    if not inputs:
        print("curate: give --input PATH or --manifest FILE", file=sys.stderr)
        return 2
    try:
        sources = find_sources(inputs, urls)
    except FileNotFoundError as e:
        print(f"curate: {e}", file=sys.stderr)
        return 2
    if not sources:
        print(f"curate: no PMC package (.tar.gz, .tgz, .tar) or JATS article (.nxml, .xml) in "
              f"{', '.join(map(str, inputs))}", file=sys.stderr)
        return 2
    filters = FilterConfig(keep_other=args.keep_other, min_caption_words=args.min_caption_words)
    curator = Curator(args.run_dir, filters, image_classifier_for(args.image_classifier, cfg), seed=cfg.seed)
    try:
        result = curator.run(sources, max_articles=max_articles, progress=not args.no_progress, restart=args.restart)
    except CurationError as e:
        print(f"curate: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result.report, indent=2))
    print(f"curate: outputs in {result.data_dir}")
    return 0
