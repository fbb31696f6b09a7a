"""llavamed-lite: an educational, tested reproduction of LLaVA-Med (research and teaching only, not for
clinical use)."""

__version__ = "0.1.0"

import warnings

# Noise a student should not read: tqdm's notice that Jupyter widgets are absent (its text bars work), and a
# transformers deprecation raised inside peft's own calls, not ours.
warnings.filterwarnings("ignore", message="IProgress not found")
warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated")
