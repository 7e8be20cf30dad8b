"""RFC 9457 problem details: every error of the API is ``application/problem+json``.

``{"type", "title", "status", "detail"}`` plus, where the problem is about parts of the
request, ``errors``: a list of ``{"field" | "row" | "index", "detail"}``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

__all__ = [
    "MEDIA_TYPE",
    "Problem",
    "field_of",
    "problem_response",
    "register_handlers",
]

MEDIA_TYPE = "application/problem+json"

_TITLES = {
    400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
    405: "Method not allowed", 409: "Conflict", 413: "Content too large",
    415: "Unsupported media type", 422: "Unprocessable content", 429: "Too many requests",
    500: "Internal server error", 503: "Service unavailable",
}


class Problem(Exception):
    """Raise to answer with a problem document."""

    def __init__(self, status: int, detail: str, *, errors: Sequence[dict[str, Any]] = (),
                 headers: dict[str, str] | None = None, title: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = list(errors)
        self.headers = headers or {}
        self.title = title or _TITLES.get(status, "Error")


def problem_response(status: int, detail: str, *, title: str | None = None,
                     errors: Sequence[dict[str, Any]] = (), instance: str | None = None,
                     headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title or _TITLES.get(status, "Error"),
                            "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = list(errors)
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


_FIELD = re.compile(r"field '([^']+)'")


def field_of(message: str) -> str | None:
    """The field an :class:`~config.errors.InputError` message names (``field 'x'``), if
    any: the same messages as ``bulkmail send``, with the field pulled out for clients."""
    m = _FIELD.search(message)
    return m.group(1) if m else None


def _loc(loc: Sequence[Any]) -> str:
    # ("body", 0, "to") -> "[0].to"; ("query", "limit") -> "limit"
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "body"


def register_handlers(app: Any) -> None:
    """Answer FastAPI's own errors (validation, 404, 405) as problem documents too."""

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(exc.status, exc.detail, title=exc.title, errors=exc.errors,
                                instance=request.url.path, headers=exc.headers)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [{"field": _loc(e.get("loc", ())), "detail": str(e.get("msg", ""))}
                  for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['detail']}" for e in errors) or "invalid request"
        return problem_response(422, detail, errors=errors, instance=request.url.path)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return problem_response(exc.status_code, str(exc.detail), instance=request.url.path,
                                headers=dict(exc.headers or {}))

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
