"""The ``Allow`` header of a 405 answer (RFC 9110 section 15.5.6), for every route.

Tornado answers a method a handler does not implement with 405 but names no allowed method.
:func:`allow_header_transform` builds, from the route table, an output transform that adds
``Allow`` to any 405 with the methods the matching handler implements."""

from __future__ import annotations

import re
from typing import Any

import tornado.web

_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def implemented_methods(handler: type[tornado.web.RequestHandler]) -> list[str]:
    """The HTTP methods ``handler`` implements (those it overrides of RequestHandler's)."""
    base = tornado.web.RequestHandler
    return [m for m in _METHODS if m in handler.SUPPORTED_METHODS
            and getattr(handler, m.lower(), None) is not getattr(base, m.lower())]


def allow_header_transform(routes: list[tuple]) -> type[tornado.web.OutputTransform]:
    """An OutputTransform class adding ``Allow`` to 405 answers of ``routes``' handlers."""
    table = [(re.compile(pattern + "$"), ", ".join(implemented_methods(handler)))
             for pattern, handler, *_ in routes]

    class AllowOn405(tornado.web.OutputTransform):
        """Adds ``Allow`` to a 405 (Tornado's own answer to a method a handler lacks)."""

        def __init__(self, request: Any) -> None:
            super().__init__(request)
            self.request = request

        def transform_first_chunk(
            self, status_code: int, headers: Any, chunk: bytes, finishing: bool
        ) -> tuple[int, Any, bytes]:
            if status_code == 405 and "Allow" not in headers:
                path = self.request.path
                allowed = next((methods for rx, methods in table if rx.match(path)), None)
                if allowed is not None:
                    headers["Allow"] = allowed
            return status_code, headers, chunk

    return AllowOn405
