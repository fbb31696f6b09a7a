"""The mistral_instruct conversation format of LLaVA-Med v1.5, as a Jinja chat template:

    [INST] <image>\\n{question} [/INST] {answer}</s>[INST] {question} [/INST] {answer}</s>

The tokenizer adds the leading <s>. Message content is a string, or a list of {"type": "image"} /
{"type": "text"} items (the processor's format), joined by newlines in their order, so the image
goes before or after the text. Written on one line: transformers renders templates with trim_blocks,
which would eat newlines after block tags.

`</s>` follows an answer directly, then the next `[INST]`. LLaVA-Med v1.5's mistral_instruct
(LLaVA's llama_2 separator style) writes a space between an earlier answer and its `</s>` when it
re-renders the history. We keep none: the model emits `</s>` right after its last answer token, so
the history it reads back is the sequence it wrote and was trained on (train/templates.py renders
the same text); a v1.5 checkpoint sees one token of difference per earlier turn.
"""

MISTRAL_INSTRUCT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{%- set content = message['content'] -%}"
    "{%- else -%}{%- set ns = namespace(parts=[]) -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{%- set ns.parts = ns.parts + ['<image>'] -%}"
    "{%- else -%}{%- set ns.parts = ns.parts + [item['text']] -%}{%- endif -%}"
    "{%- endfor -%}{%- set content = ns.parts | join('\n') -%}{%- endif -%}"
    "{%- if message['role'] == 'user' -%}{{ '[INST] ' + content + ' [/INST]' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ ' ' + content + eos_token }}"
    "{%- elif message['role'] == 'system' -%}{{ content + '\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)
