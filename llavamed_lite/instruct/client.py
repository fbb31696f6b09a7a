"""The `openai` backend: OpenAI, Azure OpenAI, or any server that speaks chat completions (vLLM, Ollama,
llama.cpp, LM Studio) through `base_url`.

The key comes from the environment only (OPENAI_API_KEY, or AZURE_OPENAI_API_KEY for Azure): no function here
takes one, so it cannot end up in a notebook's parameters, a log line or the cache. The client is built with
`max_retries=0`: retries, backoff and Retry-After are the engine's (engine.py), so they are counted and
logged in one place. Errors are sorted into two kinds: `Retryable` (429, 408, 409, 5xx, timeouts, dropped
connections) and `RequestFailed` (other 4xx, malformed answers), each with a short reason.
"""

import datetime
import email.utils
import os
import time
from dataclasses import dataclass, field

import openai

AZURE_API_VERSION = "2024-10-21"
LOCAL_PLACEHOLDER_KEY = "not-needed"  # local servers ignore the key, but the client insists on one


@dataclass
class Request:
    """One chat request: the caption record it came from, its messages and its cache key."""

    id: str
    record: dict
    messages: list[dict]
    key: str


@dataclass
class Completion:
    text: str | None
    usage: dict = field(default_factory=dict)  # prompt_tokens, completion_tokens
    finish_reason: str | None = None


class Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason, self.retry_after = reason, retry_after


class RequestFailed(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def retry_after_seconds(headers) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` as seconds or an HTTP date (UTC when it names no
    zone); None if absent or unreadable. How long is too long is the engine's call (RetryPolicy.max_retry_after)."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # "-0000": a UTC time, not the local one
            when = when.replace(tzinfo=datetime.timezone.utc)
        return max(0.0, when.timestamp() - time.time())


class OpenAIBackend:
    """Chat completions through `openai.AsyncOpenAI` (or `AsyncAzureOpenAI` when `azure_endpoint` is given;
    then `model` is the deployment name)."""

    name = "openai"

    def __init__(self, model: str = "gpt-4o", base_url: str | None = None, azure_endpoint: str | None = None,
                 api_version: str | None = None, timeout: float = 120.0, temperature: float = 0.0,
                 max_tokens: int = 1024):
        self.model = model
        self.params = {"temperature": temperature, "max_tokens": max_tokens}
        if azure_endpoint:
            if not os.environ.get("AZURE_OPENAI_API_KEY"):
                raise RuntimeError("Azure OpenAI needs the AZURE_OPENAI_API_KEY environment variable")
            self.client = openai.AsyncAzureOpenAI(
                azure_endpoint=azure_endpoint,
                api_version=api_version or os.environ.get("OPENAI_API_VERSION", AZURE_API_VERSION),
                timeout=timeout, max_retries=0)
        else:
            env_key = os.environ.get("OPENAI_API_KEY")
            if not env_key and not base_url:
                raise RuntimeError("the openai backend needs the OPENAI_API_KEY environment variable "
                                   "(or --base-url for a local server that needs no key)")
            # With a key in the environment the client reads it itself; a local server gets a placeholder.
            self.client = openai.AsyncOpenAI(api_key=None if env_key else LOCAL_PLACEHOLDER_KEY, base_url=base_url,
                                             timeout=timeout, max_retries=0)

    async def complete(self, request: Request) -> Completion:
        try:
            response = await self.client.chat.completions.create(model=self.model, messages=request.messages,
                                                                 **self.params)
        except openai.APITimeoutError:
            raise Retryable("timeout") from None
        except openai.APIConnectionError:
            raise Retryable("connection_error") from None
        except openai.APIStatusError as e:
            reason = f"http_{e.status_code}"
            if e.status_code in (408, 409, 429) or e.status_code >= 500:
                raise Retryable(reason, retry_after_seconds(e.response.headers)) from None
            raise RequestFailed(reason) from None
        except (ValueError, openai.APIResponseValidationError):  # a body that is not JSON, or not a completion
            raise RequestFailed("malformed_response") from None
        choices = getattr(response, "choices", None)
        message = getattr(choices[0], "message", None) if choices else None
        if message is None:
            raise RequestFailed("malformed_response")
        usage = response.usage
        return Completion(
            text=message.content,
            usage={"prompt_tokens": getattr(usage, "prompt_tokens", None),
                   "completion_tokens": getattr(usage, "completion_tokens", None)},
            finish_reason=choices[0].finish_reason)

    async def aclose(self) -> None:
        await self.client.close()
