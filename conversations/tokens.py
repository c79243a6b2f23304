"""The service's token count of a message (`token_count`), with OpenAI's `o200k_base` encoding.

What is counted: the tokens of the message's content, plus for each tool call the tokens of
its function name and of its arguments string, plus for each tool result the tokens of its
content. Nothing else: no per-message or per-call overhead constants (role markers, the
JSON around a call), which differ between model APIs and are not published for all of them.
So `token_count` is what the message's own text costs, and the same for every format.
Special-token strings such as `<|endoftext|>` in a text count as the ordinary text they are,
as model APIs treat them in user content.

Tokenizer: `toktok-rs` (MIT), whose token ids are identical to tiktoken's. Its vocabularies
are compiled into its wheel, so counting works offline on a fresh machine; tiktoken itself
downloads its encoding files at first use. Counts were checked equal to tiktoken 0.14.0's
`o200k_base` (its own file, hash-checked) on 5,000 random strings and the fixed ones in
tests/test_tokens.py. The vocabulary is loaded once per process, at the first count
(about 0.7 s and 64 MiB); a count then takes tens of microseconds.
"""

import threading
from typing import Any

import toktok

ENCODING = "o200k_base"


def _count(texts: list[str]) -> int:
    """The tokens of all `texts`, in one call to the tokenizer."""
    if not texts:
        return 0  # nothing to count: no need to load the vocabulary
    # One thread: a message's texts are few and short; a pool would cost more than it saves
    # and compete with the server's own threads.
    counts: list[int] = toktok.batch_count(texts, ENCODING, threads=1)
    return sum(counts)


def _result_texts(tool_results: list[dict[str, Any]] | None) -> list[str]:
    return [result["content"] for result in tool_results or ()]


def message_tokens(
    content: str | None,
    tool_calls: list[dict[str, Any]] | None,
    tool_results: list[dict[str, Any]] | None,
) -> int:
    """The `token_count` of a message with this content, these calls and these results."""
    texts = [content] if content else []
    for call in tool_calls or ():
        texts += [call["function"]["name"], call["function"]["arguments"]]
    return _count(texts + _result_texts(tool_results))


def load() -> None:
    """Load the vocabulary now rather than at the first count (a server worker's start)."""
    _count(["warm"])
    # The first count in a thread other than the main one sets up about 16 MiB more, once per
    # process (measured; toktok's lazy state). Server threads count, so take that now too:
    # otherwise a worker's memory grows at its first append, long after it started.
    warm_thread = threading.Thread(target=_count, args=(["warm"],), name="tokenizer-warm-up")
    warm_thread.start()
    warm_thread.join()


def tool_results_tokens(tool_results: list[dict[str, Any]]) -> int:
    """What recording `tool_results` later adds to a message's `token_count`."""
    return _count(_result_texts(tool_results))
