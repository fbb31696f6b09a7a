"""Instruction synthesis (LLaVA-Med's GPT-4 step): prompts, an OpenAI-compatible client, a cached concurrent run
engine, post-processing into instruct records, and an offline backend for the tiny world."""

from .offline import OfflineBackend, offline_conversation
from .postprocess import clean_response, instruct_record, split_turns
from .prompts import FEW_SHOT, SYSTEM_PROMPT, build_messages
from .synthesize import SynthesisResult, make_backend, synthesize, synthesize_offline, write_instruct

__all__ = ["FEW_SHOT", "SYSTEM_PROMPT", "OfflineBackend", "SynthesisResult", "build_messages", "clean_response",
           "instruct_record", "make_backend", "offline_conversation", "split_turns", "synthesize",
           "synthesize_offline", "write_instruct"]
