"""PMC curation and LLaVA-Med's record formats.

    download.py       manifests (oa_file_list.csv, LLaVA-Med image manifest) and a resumable, concurrent downloader
    extract.py        safe extraction of PMC packages; finding the article XML and a figure's image file
    jats.py           parse_article: ids, licence, figures, captions and the body sentences citing each figure
    domains.py        the five domains: caption vocabulary, zero-shot CLIP, precision/recall
    filters.py        caption and image checks, exact and perceptual-hash duplicates, reasons
    alignment.py      stage-1 records (brief-description instruction -> caption)
    pipeline.py       Curator: package -> records, with a resume ledger; outputs under run_dir/data/pmc/
    curate.py         the `llavamed-lite curate` command
    plots.py          the notebook's figures
    formats.py        LLaVA-Med's record formats (caption file, image manifest, training and answer records)
"""
