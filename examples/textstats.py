"""``textstats``: CPU-bound statistics of a text document fetched from a URL.

The handler runs in a child process per job (``isolation="process"``), so the worker's event
loop keeps its heartbeats flowing while the statistics are computed, and progress is reported
as the text is processed.

Run: ``sgw worker examples.textstats:worker --concurrency 2``
"""

from __future__ import annotations

import re
from collections import Counter

import httpx
from pydantic import BaseModel, Field, HttpUrl

from worker_sdk import HandlerError, JobContext, Worker

MAX_BYTES = 20 * 1024 * 1024
FETCH_TIMEOUT = 30.0
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?", re.UNICODE)
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")


class TextStatsInputs(BaseModel):
    url: HttpUrl = Field(description="The text document (UTF-8) to analyse.")
    top: int = Field(default=10, ge=1, le=1000, description="How many frequent words to list.")


class WordCount(BaseModel):
    word: str
    count: int


class TextStats(BaseModel):
    bytes: int
    lines: int
    words: int
    unique_words: int
    sentences: int
    mean_word_length: float
    top_words: list[WordCount]


worker = Worker("textstats", version="1.0.0")


def fetch(ctx: JobContext, url: str) -> str:
    """Download the document with a size and a time cap, reporting progress up to 30%."""
    chunks: list[bytes] = []
    size = 0
    with (
        httpx.Client(timeout=FETCH_TIMEOUT, follow_redirects=False) as client,
        client.stream("GET", url) as response,
    ):
        if response.status_code != 200:
            raise HandlerError(
                f"fetching {url} answered HTTP {response.status_code}", code="download_failed"
            )
        total = int(response.headers.get("content-length") or 0)
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_BYTES:
                raise HandlerError(
                    f"the document is larger than {MAX_BYTES} bytes", code="too_large"
                )
            chunks.append(chunk)
            if total:
                ctx.progress(min(30, 30 * size // total), "downloading")
    return b"".join(chunks).decode("utf-8", errors="replace")


@worker.handler(isolation="process")
def text_stats(ctx: JobContext, inputs: TextStatsInputs) -> TextStats:
    ctx.progress(0, "downloading")
    try:
        text = fetch(ctx, str(inputs.url))
    except httpx.HTTPError as exc:
        raise HandlerError(f"cannot fetch {inputs.url}: {exc}", code="download_failed") from exc
    lines = text.splitlines()
    counts: Counter[str] = Counter()
    letters = 0
    for number, line in enumerate(lines, start=1):
        words = [w.lower() for w in _WORD.findall(line)]
        counts.update(words)
        letters += sum(len(w) for w in words)
        if number % 2000 == 0:
            ctx.progress(30 + 69 * number // len(lines), "counting words")
    total_words = sum(counts.values())
    return TextStats(
        bytes=len(text.encode()),
        lines=len(lines),
        words=total_words,
        unique_words=len(counts),
        sentences=len(_SENTENCE_END.findall(text)),
        mean_word_length=round(letters / total_words, 3) if total_words else 0.0,
        top_words=[WordCount(word=w, count=c) for w, c in counts.most_common(inputs.top)],
    )
