"""Figures for the curation notebook: the data summary in the spirit of the paper's data figure, and a gallery."""

import textwrap
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
from PIL import Image

from .formats import DOMAIN_NAMES, mention_texts


def plot_summary(records: list[dict], title: str = "curated figures"):
    """Three panels: figures per domain, caption length (words), figures kept per article."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    domains = Counter(r.get("domain_name", "other") for r in records)
    names = sorted(domains, key=domains.get, reverse=True)
    axes[0].bar([DOMAIN_NAMES.get(n, n) for n in names], [domains[n] for n in names], color="#4c72b0")
    axes[0].set_title("domain distribution")
    axes[0].tick_params(axis="x", rotation=30)
    axes[1].hist([len(r["fig_caption"].split()) for r in records], bins=20, color="#55a868")
    axes[1].set_title("caption length (words)")
    per_article = Counter(r.get("pmcid") or r["pmid"] for r in records)
    counts = Counter(per_article.values())
    axes[2].bar(list(counts), list(counts.values()), color="#c44e52")
    axes[2].set_title("figures kept per article")
    axes[2].set_xlabel("figures")
    axes[2].xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes:  # every y axis counts figures or articles: whole numbers
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel("figures"); axes[1].set_ylabel("figures"); axes[2].set_ylabel("articles")
    fig.suptitle(f"{title}: {len(records)} figures from {len(per_article)} articles")
    fig.tight_layout()
    return fig


def plot_captioned_figures(records: list[dict], root: str | Path, n: int = 6, cols: int = 3, width: int = 48):
    """The first n curated figures, each with its label, domain, caption and first mention under it."""
    records = records[:n]
    rows = max(1, -(-len(records) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 6.5 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, r in zip(axes.ravel(), records):
        with Image.open(Path(root) / r["image"]) as im:
            ax.imshow(im.convert("RGB"))
        ax.axis("on"); ax.set_xticks([]); ax.set_yticks([])
        lines = _wrap(f"{r['fig_label']} [{r.get('domain_name')}]: {r['fig_caption']}", width, 6)
        mentions = mention_texts(r)
        if mentions:
            lines += _wrap(f"mention: {mentions[0]}", width, 3)
        ax.set_xlabel("\n".join(lines), fontsize=8, loc="left")
    fig.tight_layout()
    return fig


def _wrap(text: str, width: int, max_lines: int) -> list[str]:
    lines = textwrap.wrap(text, width)
    return lines[:max_lines - 1] + [lines[max_lines - 1] + (" ..." if len(lines) > max_lines else "")] \
        if len(lines) >= max_lines else lines


def plot_rejects(report: dict):
    """Horizontal bars: rejected packages and figures by reason."""
    reasons = report.get("rejects", {})
    fig, ax = plt.subplots(figsize=(7, 0.35 * max(len(reasons), 2) + 1))
    ax.barh(list(reasons)[::-1], list(reasons.values())[::-1], color="#8172b2")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("count")
    ax.set_title(f"rejected, by reason ({sum(reasons.values())} of {report.get('figures_seen', 0)} figures "
                 f"and {report.get('packages', 0) - report.get('packages_ok', 0)} packages)")
    fig.tight_layout()
    return fig
