"""A hand-written miniature of LLaVA-Med's data release, in its layout, with PMC-style packages (.tar.gz holding the
figures) that its image-URL manifest points at. For the release reader's tests; nothing here is LLaVA-Med's data."""

import io
import json
import tarfile
from pathlib import Path

from PIL import Image

# pair_id -> (package, path inside it, caption, domain); p4's figure is missing from its package, p5's package is gone
PAIRS = {
    "p1": ("PMC100", "PMC100/fig1.jpg", "Chest radiograph showing a right upper lobe nodule.", "chest_xray"),
    "p2": ("PMC100", "PMC100/fig2.jpg", "Axial CT of the abdomen with two hypodense liver lesions.", "ct_scan"),
    "p3": ("PMC200", "PMC200/a.png", "Brain MRI, T2-weighted, with a mass in the left hemisphere.", "mri"),
    "p4": ("PMC200", "PMC200/missing.jpg", "Histology of the biopsy: dense nuclei, H&E staining.", "histology"),
    "p5": ("PMC300", "PMC300/x.jpg", "Gross specimen of the resected kidney with a tan lesion.", "gross"),
    "p6": ("PMC100", "PMC100/fig3.jpg", "Photomicrograph of the tumour, H&E, showing glands.", "histology"),
}
DOMAINS = ("chest_xray", "mri", "histology", "gross", "ct_scan")


def _image(color: tuple[int, int, int], fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 40), color).save(buf, format=fmt)
    return buf.getvalue()


def write_image_manifest(path: str | Path, rows: list[dict]) -> Path:
    """LLaVA-Med's image manifest: one {pmc_tar_url, image_file_path, pair_id} per line."""
    path = Path(path)
    fields = ("pmc_tar_url", "image_file_path", "pair_id")
    path.write_text("".join(json.dumps({k: r[k] for k in fields}, ensure_ascii=False) + "\n" for r in rows))
    return path


def write_fake_release(root: str | Path, base_url: str, flat: bool = False) -> Path:
    """Write the release under root (in its layout, or every file side by side with flat=True); the manifest's
    package URLs start with base_url (where root/packages/ is served)."""
    root = Path(root)
    packages = root / "packages"
    packages.mkdir(parents=True, exist_ok=True)
    members: dict[str, list[tuple[str, bytes]]] = {}
    for k, (pkg, path, _, _) in enumerate(PAIRS.values()):
        if pkg != "PMC300" and not path.endswith("missing.jpg"):
            members.setdefault(pkg, []).append((path, _image((40 * k, 90, 200 - 30 * k), "PNG" if path.endswith(".png") else "JPEG")))
    members["PMC200"].append(("PMC200/article.nxml", b"<article/>"))
    for pkg, files in members.items():
        with tarfile.open(packages / f"{pkg}.tar.gz", "w:gz") as tar:
            for name, data in files:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

    def put(layout: str, text: str) -> None:
        path = root / (Path(layout).name if flat else layout)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    put("llava_med_image_urls.jsonl", "".join(
        json.dumps({"pmc_tar_url": f"{base_url.rstrip('/')}/packages/{pkg}.tar.gz", "image_file_path": path,
                    "pair_id": pid}) + "\n" for pid, (pkg, path, _, _) in PAIRS.items()))
    # the alignment file spells its key `conversatons`, as the released one does
    put("alignment/llava_med_alignment_500k.json", json.dumps([
        {"id": pid, "image": f"{pid}.jpg", "conversatons": [
            {"from": "human", "value": "<image>\nDescribe the figure briefly."}, {"from": "gpt", "value": caption}]}
        for pid, (_, _, caption, _) in PAIRS.items()]))
    put("instruct/llava_med_instruct_60k_inline_mention.json", json.dumps([
        {"id": pid, "image": f"{pid}.jpg", "domain": {d: d == domain for d in DOMAINS}, "conversations": [
            {"from": "human", "value": "What is shown?\n<image>"}, {"from": "gpt", "value": caption},
            {"from": "human", "value": "Is anything abnormal?"}, {"from": "gpt", "value": "Yes, as described."}]}
        for pid, (_, _, caption, domain) in PAIRS.items()]))
    put("eval/llava_med_eval_qa50_qa.jsonl", "".join(json.dumps(
        {"question_id": k, "image": f"{pid}.jpg", "pair_id": pid, "text": question, "gpt4_answer": caption,
         "fig_caption": caption, "in_text_mention": [], "domain": {d: d == domain for d in DOMAINS}, "type": kind,
         "fig_label": "Figure 1"}) + "\n" for k, (pid, question, kind) in enumerate(
        [("p1", "What does the radiograph show?", "conversation"), ("p5", "Describe the specimen.",
          "detailed_description"), ("p2", "Describe the image in detail.", "detailed_description")])
        for caption, domain in [PAIRS[pid][2:]]))
    return root
