"""What a run will cost before it starts: estimated token counts x a price table you can override.

Token counts are estimated from characters (about 4 per token for English, plus a few per message), good to
some 10-20 % for GPT-style tokenizers; the real counts come back in each response's `usage` and the run
reports them. Output is priced at `max_tokens` per request, so the estimate is an upper bound.
"""

import math
from dataclasses import dataclass

# USD per million tokens (input, output), list prices at the time of writing: check your provider's page and
# pass your own (`--price IN,OUT` or `prices=`) for other models, discounts or Azure. Local servers cost 0.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-4": (30.00, 60.00),
    "gpt-3.5-turbo": (0.50, 1.50),
    "offline": (0.0, 0.0),
}


class BudgetError(RuntimeError):
    """The estimated cost is above `max_cost`."""


def estimate_tokens(messages: list[dict]) -> int:
    return sum(4 + math.ceil(len(m["content"]) / 4) for m in messages) + 3


def price_for(model: str, prices: dict[str, tuple[float, float]] | None = None) -> tuple[float, float] | None:
    """The table entry for `model`: an exact name, else the longest known prefix ("gpt-4o-2024-08-06" -> gpt-4o)."""
    table = {**PRICES, **(prices or {})}
    if model in table:
        return table[model]
    prefixes = [name for name in table if model.startswith(name)]
    return table[max(prefixes, key=len)] if prefixes else None


@dataclass
class CostEstimate:
    model: str
    n_requests: int
    input_tokens: int
    output_tokens: int  # upper bound: max_tokens per request
    price: tuple[float, float] | None  # USD per million (input, output); None = unknown

    @property
    def usd(self) -> float | None:
        if self.price is None:
            return None
        return (self.input_tokens * self.price[0] + self.output_tokens * self.price[1]) / 1e6

    def __str__(self) -> str:
        cost = "unknown (no price for this model: pass --price IN,OUT per million tokens)" if self.usd is None \
            else f"at most ${self.usd:,.2f}"
        plural = "" if self.n_requests == 1 else "s"
        return (f"{self.n_requests} request{plural} to {self.model}: ~{self.input_tokens:,} input tokens, "
                f"<= {self.output_tokens:,} output tokens, {cost}")


def estimate_cost(model: str, message_lists: list[list[dict]], max_tokens: int,
                  prices: dict[str, tuple[float, float]] | None = None) -> CostEstimate:
    return CostEstimate(model, len(message_lists), sum(estimate_tokens(m) for m in message_lists),
                        max_tokens * len(message_lists), price_for(model, prices))


def usage_cost(usage: dict, price: tuple[float, float] | None) -> float:
    if price is None:
        return 0.0
    return ((usage.get("prompt_tokens") or 0) * price[0] + (usage.get("completion_tokens") or 0) * price[1]) / 1e6


def check_budget(estimate: CostEstimate, max_cost: float | None) -> None:
    """Refuse to start when the estimate exceeds max_cost, or when max_cost is set but the price is unknown."""
    if max_cost is None:
        return
    if estimate.usd is None:
        raise BudgetError(f"--max-cost {max_cost} is set but {estimate.model!r} has no price: pass --price IN,OUT")
    if estimate.usd > max_cost:
        raise BudgetError(f"estimated cost ${estimate.usd:,.2f} exceeds --max-cost ${max_cost:,.2f} ({estimate})")
