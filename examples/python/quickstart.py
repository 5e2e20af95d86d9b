"""sluice with the official OpenAI Python SDK.

The SDK is used exactly as against OpenAI: only its base URL points at sluice.
Four steps: a chat completion, a streamed one, an embedding, and the first chat
completion sent again, which sluice answers from its cache.

    pip install -r examples/python/requirements.txt
    OPENAI_BASE_URL=http://127.0.0.1:8080/v1 python3 examples/python/quickstart.py

Exits with 1 when the repeated request is not a cache hit.
"""

import os
import sys

from openai import OpenAI

BASE_URL = os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8080/v1")
API_KEY = os.environ.get("OPENAI_API_KEY", "sk-example")

# The same request twice: the second is answered from sluice's cache.
PLAIN = [{"role": "user", "content": "Say hello to sluice from Python."}]


def plain_chat(client: OpenAI) -> tuple[str, str]:
    """A chat completion: its answer and the `x-sluice-cache` header."""
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=PLAIN
    )
    completion = raw.parse()
    return completion.choices[0].message.content or "", raw.headers.get(
        "x-sluice-cache", ""
    )


def main() -> int:
    client = OpenAI(base_url=BASE_URL, api_key=API_KEY)

    # 1. A chat completion.
    answer, first = plain_chat(client)
    print(f"chat: {answer}")

    # 2. A streamed chat completion, printed as the deltas arrive.
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Stream a short greeting from Python."}],
        stream=True,
    )
    print("stream: ", end="", flush=True)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
    print()

    # 3. An embedding.
    embedding = client.embeddings.create(
        model="text-embedding-3-small", input="sluice caches answers"
    )
    print(f"embedding: {len(embedding.data[0].embedding)} dimensions")

    # 4. The first chat completion again: a cache hit.
    _, repeat = plain_chat(client)
    print(f"x-sluice-cache: first={first} repeat={repeat}")
    if repeat != "hit":
        print(f"expected the repeated request to be a cache hit, got {repeat!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
