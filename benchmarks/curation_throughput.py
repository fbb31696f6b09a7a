"""Curation throughput on the tiny world's synthetic PMC packages, and peak memory as the number of articles grows
10x (it should stay flat: packages are processed one at a time, nothing accumulates but the small records).

    python benchmarks/curation_throughput.py [--sizes 30 300] [--out benchmarks/results/curation.json]

Each size runs in a fresh process so its peak RSS (ru_maxrss) is its own. Measures:
- download: packages/s from a local HTTP server (4 workers, no faults)
- parse: articles/s for parse_article on the .nxml bytes alone
- curate: packages/s for the whole pipeline (extract, parse, filter, hash, save JPEG, write the outputs), caption-only
  domains; and without the fixed cost of writing the outputs (timed by a second, resumed run that has nothing to do)
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def worker(n: int, work: Path) -> dict:
    import datasets  # noqa: F401  (imported before the clocks start: a one-off second, not throughput)

    from llavamed_lite.data.download import download_all, read_manifest
    from llavamed_lite.teaching_servers import FaultyServer
    from llavamed_lite.data.jats import parse_article
    from llavamed_lite.data.pipeline import Curator, find_sources
    from llavamed_lite.synth.articles import write_pmc_packages

    made = write_pmc_packages(work / "mirror", n, seed=0, image_size=128)
    packages = read_manifest(made["manifest"], base_url="http://placeholder/")
    with FaultyServer(work / "mirror") as server:
        for p in packages:
            p.url = p.url.replace("http://placeholder/", server.url())
        t = time.perf_counter()
        report = download_all(packages, work / "dl", workers=4, progress=False)
        download_s = time.perf_counter() - t
    assert report.counts() == {"done": {"downloaded": n}}, report.counts()

    xml = []
    for path in made["packages"]:
        with tarfile.open(path) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith(".nxml"))
            xml.append(tar.extractfile(member).read())
    t = time.perf_counter()
    figures = sum(len(parse_article(data).figures) for data in xml)
    parse_s = time.perf_counter() - t

    sources = find_sources([work / "dl"])
    t = time.perf_counter()
    result = Curator(work / "run").run(sources, progress=False)
    curate_s = time.perf_counter() - t
    t = time.perf_counter()
    Curator(work / "run").run(sources, progress=False)  # everything is in the ledger: only the outputs are rewritten
    finalize_s = time.perf_counter() - t
    return {"articles": n, "figures": figures, "figures_kept": result.report["figures_kept"],
            "download_packages_per_s": n / download_s, "parse_articles_per_s": n / parse_s,
            "curate_packages_per_s": n / curate_s, "curate_figures_per_s": figures / curate_s,
            "curate_packages_per_s_without_outputs": n / max(curate_s - finalize_s, 1e-9),
            "finalize_s": finalize_s,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[30, 300])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "curation.json"))
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(worker(args.worker, Path(tmp))))
        return
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    runs = []
    for n in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--worker", str(n)], capture_output=True, text=True, env=env,
                             check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(runs[-1]))
    results = {"benchmark": "curation_throughput", "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
               "python": platform.python_version(), "runs": runs,
               "peak_rss_growth": runs[-1]["peak_rss_mb"] / runs[0]["peak_rss_mb"] if len(runs) > 1 else None}
    from llavamed_lite.io import atomic_write_json

    atomic_write_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
