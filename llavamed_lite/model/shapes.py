"""Architectures of the published towers, written out so parameter counts
need no download (meta device).

Values are those of the public configs of openai/clip-vit-large-patch14(-336),
mistralai/Mistral-7B-Instruct-v0.2 and LLaMA-7B (the base of Vicuna-7B, LLaVA-Med v1.0's LM)."""

from transformers import CLIPVisionConfig, LlamaConfig, MistralConfig

_CLIP_L14 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                 patch_size=14, projection_dim=768, hidden_act="quick_gelu")

KNOWN_VISION = {
    "openai/clip-vit-large-patch14-336": lambda: CLIPVisionConfig(**_CLIP_L14, image_size=336),
    "openai/clip-vit-large-patch14": lambda: CLIPVisionConfig(**_CLIP_L14, image_size=224),
}
KNOWN_LM = {
    "mistralai/Mistral-7B-Instruct-v0.2": lambda: MistralConfig(
        vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, max_position_embeddings=32768, rope_theta=1e6, sliding_window=None,
        tie_word_embeddings=False),
    "huggyllama/llama-7b": lambda: LlamaConfig(
        vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
        max_position_embeddings=2048, tie_word_embeddings=False),
}
