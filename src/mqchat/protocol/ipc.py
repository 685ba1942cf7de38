"""JSON-RPC 2.0 requests and replies, and the event schema (docs/ipc.md).

Pure and cheap to import: ``chatctl`` loads it on every command.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final, NamedTuple

from mqchat.errors import IpcError, RequestTooLarge

MAX_REQUEST_BYTES: Final = 256 * 1024
MAX_INT: Final = 2**63 - 1
"""Every integer param fits SQLite's signed 64-bit integers (and is at least 0)."""
MAX_HISTORY: Final = 100_000
MAX_SEND_TEXTS: Final = 256
"""Texts one ``send`` request may carry. chatd handles a request in one go, so this
bounds how long one request keeps it from its other clients and the broker."""
MAX_REKEY_REMOVALS: Final = 512
"""Names one ``rekey`` may leave out (a rekey reaches at most 512 members)."""

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
# Application errors (docs/ipc.md): the daemon refused, for the reason in "message".
REFUSED: Final = -32000
NOT_JOINED: Final = -32001
TOO_LONG: Final = -32002
BAD_PASSPHRASE: Final = -32003

# name -> (type, required, default). bool is checked before int: bool subclasses int.
_ParamSpec = dict[str, tuple[type, bool, Any]]
METHODS: Final[dict[str, _ParamSpec]] = {
    "status": {},
    "rooms": {},
    "identity": {},
    "join": {
        "room": (str, True, None),
        "passphrase": (str, True, None),
        "cipher": (str, False, None),  # None: the default for a new room (docs/ipc.md)
        "legacy": (bool, False, False),
        "weak": (bool, False, False),
    },
    "leave": {"room": (str, True, None)},
    "create": {"room": (str, True, None), "cipher": (str, False, None)},
    "invite": {"room": (str, True, None)},
    "join_invite": {"invite": (str, True, None)},
    "rekey": {
        "room": (str, True, None),
        "remove": (list, False, None),
        "admins": (list, False, None),
        "members": (list, False, None),
    },
    "members": {"room": (str, True, None)},
    "who": {"room": (str, True, None)},
    "send": {
        "room": (str, True, None),
        "text": (str, False, None),
        "texts": (list, False, None),
    },
    "read": {"follower": (str, True, None), "room": (str, True, None), "seq": (int, True, None)},
    "unfollow": {"follower": (str, True, None)},
    "history": {
        "room": (str, True, None),
        "limit": (int, False, None),
        "since": (int, False, None),
    },
    "trust": {
        "room": (str, True, None),
        "name": (str, True, None),
        "fingerprint": (str, False, None),
    },
}
INT_RANGES: Final[dict[tuple[str, str], tuple[int, int]]] = {
    ("history", "limit"): (0, MAX_HISTORY),
}
"""Integer params with a narrower range than 0..MAX_INT."""


# NamedTuples rather than dataclasses: importing dataclasses (and inspect) costs
# chatctl ~10 ms of start-up.
class Request(NamedTuple):
    id: str | int | None
    method: str
    params: dict[str, Any]


def _check_value(method: str, name: str, value: Any, kind: type) -> None:
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok:
        raise IpcError(INVALID_PARAMS, f"param {name!r} must be of type {kind.__name__}")
    if kind is list and method == "rekey":  # names to leave out, or whose role changes
        if len(value) > MAX_REKEY_REMOVALS:
            raise IpcError(INVALID_PARAMS, f"param {name!r} holds at most {MAX_REKEY_REMOVALS}")
        for item in value:
            _check_value(method, name, item, str)
    elif kind is list:  # send's texts
        if not 1 <= len(value) <= MAX_SEND_TEXTS:
            raise IpcError(INVALID_PARAMS, f"param {name!r} must hold 1 to {MAX_SEND_TEXTS} texts")
        for item in value:
            _check_value(method, name, item, str)
    elif kind is int:
        low, high = INT_RANGES.get((method, name), (0, MAX_INT))
        if not low <= value <= high:
            raise IpcError(INVALID_PARAMS, f"param {name!r} must be between {low} and {high}")
    elif kind is str:
        try:
            value.encode()
        except UnicodeEncodeError:
            # JSON lets "\ud800" through; nothing downstream can store or print it.
            raise IpcError(INVALID_PARAMS, f"param {name!r} is not valid Unicode") from None


def _validate_params(method: str, params: Any) -> dict[str, Any]:
    spec = METHODS[method]
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise IpcError(INVALID_PARAMS, "params must be an object")
    unknown = set(params) - set(spec)
    if unknown:
        raise IpcError(INVALID_PARAMS, f"unknown params: {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    for name, (kind, required, default) in spec.items():
        if name not in params or params[name] is None:
            if required:
                raise IpcError(INVALID_PARAMS, f"param {name!r} is required")
            out[name] = default
            continue
        _check_value(method, name, params[name], kind)
        out[name] = params[name]
    if method == "send":
        if (out["text"] is None) == (out["texts"] is None):
            raise IpcError(INVALID_PARAMS, "send takes one of the params 'text' and 'texts'")
        del out["texts" if out["texts"] is None else "text"]  # the one given goes on
    return out


_LEADING_ID = re.compile(
    rb'\{\s*(?:"jsonrpc"\s*:\s*"2\.0"\s*,\s*)?"id"\s*:\s*(-?\d{1,19}|"[^"\\]{0,64}")'
)


def _leading_id(raw: bytes) -> str | int | None:
    """The id of a request too large to parse, if it comes first (as chatctl sends it).

    So the client that sent it learns at once why, instead of waiting for a reply.
    """
    found = _LEADING_ID.match(raw[:256])
    if found is None:
        return None
    value = found.group(1)
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    return parsed if isinstance(parsed, str | int) else None


def decode_request(raw: bytes) -> Request:
    """Parse one request, or raise IpcError with the JSON-RPC code and ``data`` = id."""
    if len(raw) > MAX_REQUEST_BYTES:
        raise IpcError(
            INVALID_REQUEST,
            f"request too large: {len(raw)} bytes, the limit is {MAX_REQUEST_BYTES}",
            _leading_id(raw),
        )
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise IpcError(PARSE_ERROR, "parse error: not valid UTF-8 JSON") from exc
    if not isinstance(obj, dict):
        raise IpcError(INVALID_REQUEST, "request must be a JSON object")
    req_id = obj.get("id")
    if req_id is not None and (isinstance(req_id, bool) or not isinstance(req_id, str | int)):
        raise IpcError(INVALID_REQUEST, "id must be a string, a number or null")
    if obj.get("jsonrpc") != "2.0":
        raise IpcError(INVALID_REQUEST, 'request must have "jsonrpc": "2.0"', req_id)
    method = obj.get("method")
    if not isinstance(method, str):
        raise IpcError(INVALID_REQUEST, "method must be a string", req_id)
    if method not in METHODS:
        raise IpcError(METHOD_NOT_FOUND, f"method not found: {method}", req_id)
    try:
        params = _validate_params(method, obj.get("params"))
    except IpcError as exc:
        raise IpcError(exc.code, exc.message, req_id) from None
    return Request(req_id, method, params)


def encode_request(req_id: int | str, method: str, params: dict[str, Any]) -> bytes:
    """One request, id first; refused here when chatd would refuse it for its size."""
    body = json.dumps(
        {"jsonrpc": "2.0", "id": req_id, "method": method, "params": params},
        separators=(",", ":"),
    ).encode()
    if len(body) > MAX_REQUEST_BYTES:
        raise RequestTooLarge(
            f"request too large: {method} would be {len(body)} bytes; "
            f"chatd takes at most {MAX_REQUEST_BYTES} (256 KiB)"
        )
    return body


def encode_result(req_id: str | int | None, result: Any) -> bytes:
    return json.dumps(
        {"jsonrpc": "2.0", "id": req_id, "result": result}, separators=(",", ":")
    ).encode()


def encode_error(req_id: str | int | None, code: int, message: str) -> bytes:
    return json.dumps(
        {"jsonrpc": "2.0", "id": req_id, "error": {"code": code, "message": message}},
        separators=(",", ":"),
    ).encode()


class Reply(NamedTuple):
    id: str | int | None
    result: Any = None
    error_code: int | None = None
    error_message: str = ""


def decode_reply(raw: bytes) -> Reply:
    """Parse a reply from chatd, or raise IpcError(INTERNAL_ERROR)."""
    try:
        obj = json.loads(raw)
    except ValueError as exc:
        raise IpcError(INTERNAL_ERROR, "chatd sent a reply that is not JSON") from exc
    if not isinstance(obj, dict) or obj.get("jsonrpc") != "2.0":
        raise IpcError(INTERNAL_ERROR, "chatd sent a reply that is not JSON-RPC 2.0")
    err = obj.get("error")
    if isinstance(err, dict):
        return Reply(
            obj.get("id"), None, int(err.get("code", INTERNAL_ERROR)), str(err.get("message", ""))
        )
    return Reply(obj.get("id"), obj.get("result"))
