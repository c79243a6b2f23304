"""token_count's tokenizer: tiktoken's o200k_base counts, offline, with the documented definition."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conversations.tokens import ENCODING, message_tokens, tool_results_tokens

ROOT = Path(__file__).resolve().parents[2]

# Each count is what tiktoken 0.14.0 answered for `len(get_encoding("o200k_base")
# .encode_ordinary(text))`, with its own o200k_base file (sha256 446a9538…1a2d).
TIKTOKEN_O200K_COUNTS = [
    (" ", 1),
    ("hello world", 2),
    ("Hello, world!", 4),
    ("The quick brown fox jumps over the lazy dog.", 10),
    ("don't you've we'll THEY'RE", 6),
    ("3.14159265358979", 7),
    ("2026-11-22T21:52:43.123456Z", 16),
    ("a   \n  b", 4),
    (" " * 100, 2),
    ("x" + " " * 500 + "y", 7),
    ("\t\t\t  \n \n", 3),
    ("\xa0\u2003\u3000 mixed spaces", 5),
    ("日本語のテキストを数えます。", 11),
    ("한국어 문장입니다", 5),
    ("Привет, мир!", 5),
    ("مرحبا بالعالم", 4),
    ("नमस्ते दुनिया", 5),
    ("Straße Größe Ärger", 5),
    ("👨\u200d👩\u200d👧\u200d👦", 11),
    ("🇫🇷🇯🇵", 8),
    ("I ❤️ tokens 🧠🔥", 7),
    ("e\u0301 vs \u00e9", 4),
    ("def f(x):\n    return x ** 2\n", 11),
    ("for (int i = 0; i < n; ++i) { sum += a[i]; }", 22),
    ('{"city": "Paris", "unit": "celsius"}', 13),
    ('<html><body><p class="x">Hi</p></body></html>', 17),
    ("<|endoftext|>", 7),
    ("𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙 ∑∫∂√∞", 42),
    ("\U0010fffd\U000e0001", 7),
    ("\ufeffBOM", 3),
    ("It is 18 °C and sunny in Paris", 10),
    ("a" * 1000, 125),
    ("x" * 10_000, 1250),
    ("🧠" * 10_000, 30_000),
    (" " * 65_536, 512),
    ("你" * 65_536, 65_536),
]


def _call(call_id: str, name: str, arguments: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


CALLS = [
    _call("call_1", "get_weather", '{"city": "Paris"}'),
    _call("call_2", "get_weather", '{"city": "Tokyo"}'),
]
RESULTS = [
    {"tool_call_id": "call_1", "content": "It is 18 °C and sunny in Paris", "is_error": False},
    {"tool_call_id": "call_2", "content": '{"error": "timeout"}', "is_error": True},
]


def test_encoding_is_o200k_base():
    assert ENCODING == "o200k_base"


@pytest.mark.parametrize(("text", "expected"), TIKTOKEN_O200K_COUNTS, ids=range(len(TIKTOKEN_O200K_COUNTS)))
def test_content_counts_as_tiktoken_o200k_base(text, expected):
    assert message_tokens(text, None, None) == expected


def test_message_counts_content_call_names_arguments_and_results():
    # 10 (content) + 2 × (2 name + 6 arguments) + 10 + 6 (results); ids, types, is_error and
    # the JSON around them are not counted, nor any per-message overhead.
    content = "Let me check the weather in Paris and Tokyo."
    assert message_tokens(content, CALLS, RESULTS) == 10 + 2 * (2 + 6) + 10 + 6


def test_results_recorded_later_add_exactly_what_they_would_have_cost_at_append():
    content = "Let me check the weather in Paris and Tokyo."
    assert tool_results_tokens(RESULTS) == 16
    at_append = message_tokens(content, CALLS, RESULTS)
    assert at_append == message_tokens(content, CALLS, None) + tool_results_tokens(RESULTS)
    # One result now, the other later, adds up the same.
    assert message_tokens(None, CALLS, RESULTS) == (
        message_tokens(None, CALLS, RESULTS[:1]) + tool_results_tokens(RESULTS[1:])
    )


def test_null_and_empty_parts_count_zero():
    assert message_tokens(None, None, None) == 0
    assert message_tokens("", None, None) == 0
    assert message_tokens("", [], []) == 0
    assert tool_results_tokens([]) == 0
    assert message_tokens(None, [_call("c", "ping", "")], None) == 1
    assert message_tokens(None, CALLS, [{"tool_call_id": "call_1", "content": ""}]) == 16


_COUNT_IN_A_FRESH_PROCESS = (
    "from conversations.tokens import message_tokens\n"
    "print(message_tokens('hello world', None, [{'tool_call_id': 'c', 'content': 'Привет, мир!'}]))\n"
)


def _count_offline(tmp_path: Path, prefix: list[str]) -> subprocess.CompletedProcess[str]:
    """Count in a new interpreter with an empty home and caches and every proxy pointing at a
    closed port, so any download (tiktoken's encoding files, a hub's) would fail."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in {"no_proxy", "http_proxy", "https_proxy"}}
    env |= {
        "HOME": str(tmp_path),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "TIKTOKEN_CACHE_DIR": str(tmp_path / "tiktoken"),
        "DATA_GYM_CACHE_DIR": str(tmp_path / "tiktoken"),
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "ALL_PROXY": "http://127.0.0.1:9",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    return subprocess.run(  # noqa: S603 (fixed arguments: this interpreter and a literal script)
        [*prefix, sys.executable, "-c", _COUNT_IN_A_FRESH_PROCESS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_counting_needs_no_download_on_a_fresh_machine(tmp_path):
    done = _count_offline(tmp_path, [])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(2 + 5)
    assert list(tmp_path.iterdir()) == []  # nothing was cached, so nothing was fetched


def _can_unshare_network() -> bool:
    try:
        return subprocess.run(["unshare", "--net", "true"], capture_output=True, check=False).returncode == 0  # noqa: S607
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not _can_unshare_network(), reason="needs unshare --net (root on Linux)")
def test_counting_works_with_no_network_at_all(tmp_path):
    # A network namespace of its own has no route anywhere: any connection attempt, from
    # Python or from the extension's native code, fails.
    done = _count_offline(tmp_path, ["unshare", "--net"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(2 + 5)


MEMORY_AFTER_LOAD = """
import random, threading
from conversations import tokens

def rss_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))

tokens.load()
before = rss_kib()

def count():
    words = random.Random(1)
    for _ in range(500):
        tokens.message_tokens(" ".join(str(words.random()) for _ in range(30)), None, None)

threads = [threading.Thread(target=count) for _ in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(rss_kib() - before)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's /proc")
def test_a_loaded_tokenizer_does_not_grow_when_server_threads_start_counting():
    # Before load() warmed a thread too, the first count in a server thread added 16 MiB,
    # which showed as a worker's memory growing long after it started (benchmark target 7).
    grown = subprocess.run(  # noqa: S603 (this interpreter and a literal script)
        [sys.executable, "-c", MEMORY_AFTER_LOAD],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert int(grown.stdout) < 4 * 1024, f"grew by {int(grown.stdout)} KiB"
