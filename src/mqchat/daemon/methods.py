"""One table from IPC method name to the handler that serves it.

The parts that serve requests (queries, joining, the send path, trust, room admin,
rekeying, member lists, followers) are plain objects; ``method_table`` names, for
every method of the schema (mqchat.protocol.ipc.METHODS), the callable that
serves it, and checks at start that the two agree: every method has a handler,
no handler serves a method the schema does not have, and each handler takes
exactly the schema's params. A mismatch is a bug, found when chatd starts rather
than when a client first calls the method.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from mqchat.protocol.ipc import METHODS, Request

Handler = Callable[..., Any]


class MethodTable:
    def __init__(self, handlers: Mapping[str, Handler]) -> None:
        check_handlers(handlers)
        self._handlers = dict(handlers)

    def call(self, req: Request) -> Any | Awaitable[Any]:
        """Serve a decoded request (its method and params checked by the schema)."""
        return self._handlers[req.method](**req.params)


def check_handlers(handlers: Mapping[str, Handler]) -> None:
    missing = sorted(METHODS.keys() - handlers.keys())
    extra = sorted(handlers.keys() - METHODS.keys())
    if missing or extra:
        raise TypeError(f"IPC handlers do not match the schema: missing {missing}, extra {extra}")
    for name, handler in handlers.items():
        params = inspect.signature(handler).parameters
        takes = {p for p, spec in params.items() if spec.kind is not spec.KEYWORD_ONLY}
        if takes != set(METHODS[name]):
            raise TypeError(
                f"IPC method {name!r}: the handler takes {sorted(takes)}, "
                f"the schema has {sorted(METHODS[name])}"
            )
