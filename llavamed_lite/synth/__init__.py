"""The tiny world: a seeded generator of biomedical figures in LLaVA-Med's five domains, and its pretrained towers.

    findings.py   what a figure shows (a JSON dict per figure): sample_findings, validate_findings, SCHEMA
    draw.py       findings -> image (64-336 px; radiological convention: the patient's left on the image's right)
    text.py       findings -> PMC-style caption, inline mentions, paraphrase
    questions.py  findings -> VQA questions (CLOSED yes/no, OPEN) and a plain description
    world.py      build_tiny_world: images + LLaVA-Med caption files + VQA records, train and held-out splits
    articles.py   write_pmc_packages: JATS .nxml + figures in PMC .tar.gz packages, oa_file_list.csv, truth.json
    corpus.py     the LM's pretraining text (training split only)
    tokenizer.py  the byte-level BPE tokenizer (<pad> <image> <s> </s> = 0-3, mistral_instruct template)
    towers.py     tiny CLIP and LM training and their metrics
    foundation.py pretrain_tiny / evaluate_towers / load_towers: stage 0 end to end
    pretrain.py   the `llavamed-lite pretrain-tiny` command
"""
