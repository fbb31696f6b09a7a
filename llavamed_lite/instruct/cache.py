"""The response cache: one JSON line per finished request, keyed by a hash of model, messages and parameters.

Append-only and flushed line by line (llavamed_lite.io.append_jsonl), so Ctrl-C or a killed process loses at
most the request in flight, and a rerun sends nothing that already has an answer. The cache holds answers and
token counts only: never a key, a header or a URL. An empty or oversized answer is never kept (`unusable`): it would
otherwise be reused for good, so it is asked again on the next run.
"""

import hashlib
import json
import time
from pathlib import Path

from ..io import append_jsonl, iter_jsonl

MAX_RESPONSE_BYTES = 64 * 1024  # a conversation about one figure is a few KB; more is a runaway answer


def unusable(response: str | None) -> str | None:
    """Why an answer must not be cached ("empty_response", "oversized_response"), or None when it is fine."""
    if not isinstance(response, str) or not response.strip():
        return "empty_response"
    if len(response.encode("utf-8", "surrogatepass")) > MAX_RESPONSE_BYTES:
        return "oversized_response"
    return None


def request_key(model: str, messages: list[dict], params: dict, record: dict | None = None) -> str:
    """sha256 of the canonical JSON of what determines the answer: model, messages and parameters, plus the
    caption record for a backend that reads it (the offline one)."""
    material = {"model": model, "messages": messages, "params": params}
    if record is not None:
        material["record"] = record
    blob = json.dumps(material, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    """`key -> entry` loaded from the JSONL file at `path` (None: in memory only, nothing saved). Entries with an
    unusable answer (written before they were refused) are skipped, so their requests are sent again."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None
        self.entries: dict[str, dict] = {}
        if self.path and self.path.exists():
            for i, entry in enumerate(iter_jsonl(self.path), 1):
                if not isinstance(entry, dict) or not isinstance(entry.get("key"), str) or "response" not in entry:
                    raise ValueError(f"{self.path}: line {i} is not a cache entry (needs 'key' and 'response')")
                if unusable(entry["response"]) is None:
                    self.entries[entry["key"]] = entry

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def put(self, key: str, item_id: str, model: str, response: str | None, usage: dict,
            finish_reason: str | None) -> dict:
        reason = unusable(response)
        if reason:
            raise ValueError(f"request {item_id}: {reason} is not cached")
        entry = {"key": key, "id": item_id, "model": model, "response": response, "usage": usage,
                 "finish_reason": finish_reason, "time": round(time.time(), 3)}
        if self.path:
            append_jsonl(self.path, [entry])
        self.entries[key] = entry
        return entry
