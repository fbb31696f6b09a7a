"""llavamed-lite: an educational, tested reproduction of LLaVA-Med (research and teaching only, not for clinical use)."""

__version__ = "0.1.0"
