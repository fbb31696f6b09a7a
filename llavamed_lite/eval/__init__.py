"""Evaluation as in LLaVA-Med, written out and tested.

    vqa.py        VQA-RAD, SLAKE, PathVQA, LLaVA-Med VQA JSON and the tiny world's questions -> VQAItem
    metrics.py    the paper's VQA metrics exactly (substring closed accuracy, open recall) and our strict ones beside
    baselines.py  image-free answers (always "yes", the majority answer per question type)
    generate.py   batched greedy answers into resumable LLaVA-Med answer files
    evaluate.py   a saved model on a benchmark -> answers.jsonl + scores.json (`llavamed-lite evaluate`, cli.py)
    judge.py      the LLM-judged chat evaluation (relative score) and its questions from the tiny world
    judge_stand_in.py  the offline stand-in judge: rule-based, deterministic, what the chat evaluation runs by default
    paper.py      the published numbers to compare with
"""
