"""The prompts that ask a text-only model to write a conversation about a figure it cannot see.

LLaVA-Med gave GPT-4 a figure's caption (and, in the "inline mentions" variant, the article's sentences that
cite the figure) and asked for a multi-turn conversation in which both speakers seem to look at the image.
The structure follows theirs: a system message with the rules, eight few-shot examples (their mix of domains) as
user/assistant message pairs, then the query. Every sentence and every example figure here is our own.
"""

from dataclasses import dataclass

from ..data.formats import mention_texts

SYSTEM_PROMPT = """\
You are an AI assistant with expert knowledge of biomedicine: radiology, pathology and clinical research.

You will receive the caption of one figure from a biomedical research article. Sometimes you will also \
receive "Figure Context": sentences from the same article that refer to the figure. You cannot see the \
figure itself; the caption and the context are all you know about it.

Your task: write a conversation between a User, who asks about the image, and an Assistant, who answers. \
Write it as if both of them were looking at the image, not reading its caption.

Rules:
- Never refer to the text you were given. Do not write "the caption", "the description", "the context", \
"as mentioned" or "according to the text"; speak about what the image shows.
- Do not copy exact numbers, names of people, dates or places from the text.
- Ask varied questions: the kind of image, the body part or tissue, what is visible and where, how large, \
how many, and what the findings could mean. Prefer questions the image can answer.
- Write at least two question-and-answer exchanges, and at most four.
- Answers are careful and precise. When the image alone cannot settle a point, say so instead of guessing. \
Never give medical advice or a diagnosis for a real patient.
- Format: each question on a new paragraph starting with "User:", each answer with "Assistant:". \
Write nothing before the first "User:" and nothing after the last answer."""


@dataclass(frozen=True)
class FewShotExample:
    domain: str
    fig_label: str
    caption: str
    mentions: tuple[str, ...]  # inline mentions; shown only when prompting with mentions
    conversation: str  # "User: ...\n\nAssistant: ..." as the model should write it


# Our own invented figures, in LLaVA-Med's mix: 2 chest X-ray, CT, 2 gross, 2 histology, MRI; each with its inline
# mentions (shown only in the 60K-IM variant). Short captions keep the prompt cheap.
FEW_SHOT: tuple[FewShotExample, ...] = (
    FewShotExample(
        "chest_xray", "Figure 1",
        "Frontal chest radiograph of a 58-year-old smoker showing a 2.5 cm spiculated nodule in the right upper "
        "lobe. The heart size is normal.",
        ("A chest radiograph (Figure 1) obtained for a persistent cough revealed a nodule in the right upper lobe.",),
        "User: What kind of image is this?\n\n"
        "Assistant: This is a frontal (posteroanterior) chest X-ray.\n\n"
        "User: Is there anything abnormal in the lungs?\n\n"
        "Assistant: Yes. There is a nodule in the upper zone of the right lung. Its edges look irregular and "
        "spiculated, a pattern that warrants further work-up, for example with CT.\n\n"
        "User: Is the heart enlarged?\n\n"
        "Assistant: No, the heart appears normal in size; it takes up less than half the width of the chest.",
    ),
    FewShotExample(
        "chest_xray", "Fig. 4",
        "Portable AP chest X-ray on day 3 demonstrating bilateral diffuse airspace opacities and an enlarged "
        "cardiac silhouette (arrows).",
        ("On day 3 the patient's oxygen requirement increased, and the radiograph showed new bilateral "
         "opacities (Fig. 4).",),
        "User: What does this chest X-ray show?\n\n"
        "Assistant: Both lungs show widespread hazy opacities, filling the air spaces on the left and on the right, "
        "and the heart silhouette looks enlarged.\n\n"
        "User: What could cause opacities like these in both lungs?\n\n"
        "Assistant: Diffuse opacities in both lungs can come from fluid (pulmonary oedema), infection such as "
        "pneumonia, or acute lung injury. Telling these apart needs the clinical picture and often further tests; "
        "the image alone is not enough.",
    ),
    FewShotExample(
        "ct_scan", "Figure 2",
        "Contrast-enhanced axial CT of the abdomen: three hypodense lesions in the right lobe of the liver, the "
        "largest measuring 3.1 cm (arrowhead).",
        ("Follow-up CT (Figure 2) revealed multiple liver lesions consistent with metastatic disease.",),
        "User: Which organ is affected in this CT image?\n\n"
        "Assistant: The liver. Several darker (hypodense) areas are visible in its right lobe.\n\n"
        "User: How many lesions can you see?\n\n"
        "Assistant: There are three lesions, one of them clearly larger than the others.\n\n"
        "User: Was contrast used for this scan?\n\n"
        "Assistant: Yes, it is a contrast-enhanced CT: the blood vessels appear bright, which makes the darker "
        "lesions stand out against the normal liver.",
    ),
    FewShotExample(
        "gross", "Fig. 6",
        "Gross photograph of the nephrectomy specimen: a 4 cm well-circumscribed yellow tumour in the upper "
        "pole of the kidney. Scale in centimetres.",
        ("The cut surface of the specimen (Fig. 6) showed a solitary, well-demarcated yellow tumour.",),
        "User: What is shown in this photograph?\n\n"
        "Assistant: A surgical specimen of a kidney, cut open and photographed next to a ruler.\n\n"
        "User: Is there a lesion on the cut surface?\n\n"
        "Assistant: Yes, there is a well-defined yellow lesion at one end (pole) of the kidney.\n\n"
        "User: How large is it?\n\n"
        "Assistant: Compared with the ruler it is fairly large, a few centimetres across. The yellow colour is "
        "typical of tumours that contain fat, such as clear cell renal cell carcinoma, though only the histology "
        "can confirm the type.",
    ),
    FewShotExample(
        "gross", "Figure 8",
        "Opened resected stomach showing a 5 cm ulcerated mass with raised, rolled edges on the lesser curvature.",
        ("The resection specimen (Figure 8) contained an ulcerated tumour on the lesser curvature.",),
        "User: Which organ is shown in this photograph?\n\n"
        "Assistant: It is a stomach that has been removed surgically and opened, so its inner lining faces the "
        "camera.\n\n"
        "User: What abnormality can you see?\n\n"
        "Assistant: There is a mass with a central ulcer, a crater in the lining, surrounded by raised and rolled "
        "edges.\n\n"
        "User: Does its appearance suggest a benign ulcer?\n\n"
        "Assistant: Raised, heaped-up edges around an ulcer are more typical of a malignant tumour than of a simple "
        "peptic ulcer, but only a microscopic examination of the tissue can tell.",
    ),
    FewShotExample(
        "histology", "Figure 5",
        "Photomicrograph of the resected colon tumour (H&E, x200): irregular glands lined by atypical cells "
        "with enlarged hyperchromatic nuclei, and a focus of necrosis.",
        ("Histology (Figure 5) confirmed a moderately differentiated adenocarcinoma.",
         "Areas of necrosis were present in the tumour (Figure 5)."),
        "User: What kind of image is this?\n\n"
        "Assistant: It is a microscope image of tissue stained with haematoxylin and eosin (H&E): nuclei are "
        "purple and the surrounding tissue pink.\n\n"
        "User: Do the cells look normal?\n\n"
        "Assistant: No. Many nuclei are enlarged, dark and irregular in shape, which pathologists call atypia. "
        "The glands are also irregular in shape.\n\n"
        "User: Is there any necrosis?\n\n"
        "Assistant: Yes, there is a pale area with few or no nuclei, which is consistent with necrosis.",
    ),
    FewShotExample(
        "histology", "Figure 7",
        "Liver biopsy (Masson trichrome, x100) showing bands of blue-staining fibrous tissue linking portal tracts, "
        "with regenerative nodules.",
        ("The biopsy (Figure 7) showed bridging fibrosis with early nodule formation.",
         "Trichrome staining (Figure 7) highlighted the collagen."),
        "User: Which stain was used for this tissue section?\n\n"
        "Assistant: This section is stained with a trichrome stain, which colours collagen blue or green and liver "
        "cells red or pink.\n\n"
        "User: What do the blue bands represent?\n\n"
        "Assistant: They are fibrous tissue (collagen). Here they run between the portal areas and link them, a "
        "pattern called bridging fibrosis.\n\n"
        "User: What are the rounded islands of liver cells surrounded by the bands?\n\n"
        "Assistant: They look like regenerative nodules, groups of liver cells enclosed by scar tissue. Together with "
        "the bridging fibrosis they point to advanced scarring of the liver, approaching cirrhosis.",
    ),
    FewShotExample(
        "mri", "Fig. 3",
        "Axial T2-weighted MRI of the brain showing a large heterogeneous mass in the left frontal lobe with "
        "surrounding vasogenic oedema and mass effect.",
        ("MRI of the brain (Fig. 3) showed a left frontal mass with surrounding oedema.",),
        "User: What imaging technique was used here?\n\n"
        "Assistant: This is an axial brain MRI, T2-weighted: fluid such as the cerebrospinal fluid in the "
        "ventricles appears bright.\n\n"
        "User: Is there a mass, and where is it?\n\n"
        "Assistant: Yes, there is a large mass in the frontal lobe of the left hemisphere.\n\n"
        "User: What is the bright area around the mass?\n\n"
        "Assistant: It is most likely oedema, swelling of the surrounding brain tissue, which shows as a bright "
        "halo on T2-weighted images. It pushes on nearby structures, a so-called mass effect.",
    ),
)


def user_message(fig_label: str, caption: str, mentions: list[str] | tuple[str, ...] = ()) -> str:
    """`Figure Caption:\\n{label}: {caption}`, then, with mentions, `Figure Context:` and one bulleted line each."""
    label = (fig_label or "").strip()
    text = f"Figure Caption:\n{label}: {caption.strip()}" if label else f"Figure Caption:\n{caption.strip()}"
    mentions = [m.strip() for m in mentions if m and m.strip()]
    if mentions:
        text += "\n\nFigure Context:\n" + "\n".join(f"- {m}" for m in mentions)
    return text


def build_messages(record: dict, with_mentions: bool = False) -> list[dict]:
    """The chat `messages` for one caption record: system, the few-shot pairs, then the query.
    `with_mentions` gives the examples and the query their inline mentions (LLaVA-Med's 60K-IM variant)."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT}]
    for ex in FEW_SHOT:
        mentions = ex.mentions if with_mentions else ()
        messages.append({"role": "user", "content": user_message(ex.fig_label, ex.caption, mentions)})
        messages.append({"role": "assistant", "content": ex.conversation})
    mentions = mention_texts(record) if with_mentions else []
    query = user_message(record.get("fig_label", ""), record["fig_caption"], mentions)
    messages.append({"role": "user", "content": query})
    return messages
