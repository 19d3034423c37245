"""Log filters that keep clinical text out of the server's own logs, whatever flags uvicorn was started with.

The gateway is started with uvicorn's access log off (``medgpt.sh``, the Docker image: ``--no-access-log``); its
own request log (:mod:`api.observability`) writes the route template, status and timing only. Should someone start
it with the access log on, :class:`DropQueryString` still keeps the query string out of every access line:
``GET /ask?prompt=...`` carries the question there. The path stays: no route of this API takes text in its path.

:class:`ExceptionTypesOnly` does the same for uvicorn's "Exception in ASGI application": an unexpected error's
message can quote its input (a pydantic error quotes ``input_value``), so the traceback keeps its frames (file,
line, code) and each exception's type, never its message.

Some libraries write what they send or stream at DEBUG: sse-starlette every SSE chunk (answers, and evidence
quoted from the note), the groq SDK its request options (the messages). :class:`NoDebug` drops their DEBUG records,
so turning the gateway's log level to DEBUG does not put clinical text in the log.

They sit on loggers, which are process-wide: :func:`install` adds each filter once per process (whether or not
the library is imported yet: its logger is the same object), and the filters hold no state.
"""

from __future__ import annotations

import logging
import traceback


class DropQueryString(logging.Filter):
    """Cuts the query string from uvicorn's access records (``'%s - "%s %s HTTP/%s" %d'``, the third argument
    being the path with its query). Records of any other shape pass unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (args[0], args[1], args[2].split("?", 1)[0], args[3], args[4])
        return True


class ExceptionTypesOnly(logging.Filter):
    """Replaces a record's exception text by its traceback without the messages: the frames of each exception in
    the chain and its type's name."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redacted_traceback(record.exc_info[1])
        return True


def redacted_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` and of its causes and contexts, oldest first, with each message left out."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = "".join(traceback.format_tb(current.__traceback__))
        parts.append(f"Traceback (most recent call last):\n{frames}{type(current).__module__}."
                     f"{type(current).__qualname__}: <message withheld: it may quote clinical text>")  # fmt: skip
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return "\n\nwhich led to:\n\n".join(reversed(parts))


class NoDebug(logging.Filter):
    """Drops DEBUG records: for the loggers of libraries that write payloads at that level."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


#: The loggers that write request or response bodies at DEBUG (the logger each library logs those lines on).
PAYLOAD_LOGGERS = ("sse_starlette.sse", "groq._base_client", "openai._base_client")

FILTERS: tuple[tuple[str, type[logging.Filter]], ...] = (
    ("uvicorn.access", DropQueryString),
    ("uvicorn.error", ExceptionTypesOnly),
    *((name, NoDebug) for name in PAYLOAD_LOGGERS),
)


def install() -> None:
    """Put each filter of :data:`FILTERS` on its logger (once per process)."""
    for name, cls in FILTERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, cls) for f in logger.filters):
            logger.addFilter(cls())
