"""One padding helper for token-id rows of different lengths."""

import torch


def pad_rows(rows: list[list[int]], pad_id: int,
             side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention_mask), each (len(rows), longest row): the rows padded with `pad_id` on
    `side` ("left" for generation, so every prompt ends where the new tokens start; "right" for
    encoders), and 1 over real tokens."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    for i, r in enumerate(rows):
        span = slice(width - len(r), width) if side == "left" else slice(0, len(r))
        ids[i, span] = torch.tensor(r, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask
