"""``textstats``: CPU-bound statistics of a text document fetched from a URL.

The handler runs in the worker's pool of child processes (``isolation="process"``), so the
worker's event loop keeps its heartbeats flowing while the statistics are computed, and
progress is reported as the document downloads and as the text is processed. The download
goes through ``ctx.fetch``: the worker's URL policy, a size cap and a time cap apply.

Run: ``sgw worker examples.textstats:worker --concurrency 2``
"""

from __future__ import annotations

import re
from collections import Counter

from pydantic import BaseModel

from examples.models import TextstatsInputs  # generated from services.yaml by `sgw models`
from worker_sdk import FetchError, HandlerError, JobContext, UrlRefused, Worker

MAX_BYTES = 20 * 1024 * 1024
FETCH_TIMEOUT = 30.0
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?", re.UNICODE)
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")


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


@worker.handler(isolation="process")
def text_stats(ctx: JobContext, inputs: TextstatsInputs) -> TextStats:
    ctx.progress(0, "downloading")
    try:
        body = ctx.fetch(
            str(inputs.url), max_bytes=MAX_BYTES, timeout=FETCH_TIMEOUT, progress=(0, 30)
        )
    except (FetchError, UrlRefused) as exc:
        raise HandlerError(str(exc), code="download_failed") from exc
    text = body.decode("utf-8", errors="replace")
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
        bytes=len(body),
        lines=len(lines),
        words=total_words,
        unique_words=len(counts),
        sentences=len(_SENTENCE_END.findall(text)),
        mean_word_length=round(letters / total_words, 3) if total_words else 0.0,
        top_words=[WordCount(word=w, count=c) for w, c in counts.most_common(inputs.top)],
    )
