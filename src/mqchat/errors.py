"""One exception hierarchy for every failure a user can expect.

Each class's docstring is the sentence a user reads when no more specific
message was given. The CLI maps these to ``ERROR: ...`` and an exit status in
one place, so an expected failure never prints a traceback.
"""

from __future__ import annotations


class MqchatError(Exception):
    """mqchat failed."""

    exit_code = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or " ".join((self.__doc__ or "").split()))

    @property
    def message(self) -> str:
        return str(self)


class UsageError(MqchatError):
    """The command line is not valid."""

    exit_code = 2


class ConfigError(UsageError):
    """The configuration is not valid."""


class ProtocolError(MqchatError):
    """A payload could not be opened: it is malformed, tampered with or for another key."""


class PayloadTooLarge(ProtocolError):
    """The payload is larger than the protocol allows."""


class MessageTooLong(MqchatError):
    """The message is longer than 16 KiB of UTF-8."""


class InvalidRoomName(UsageError):
    """A room name must be 1 to 64 printable characters."""


class WeakPassphrase(MqchatError):
    """The passphrase is too short: use at least 12 characters, or --weak to accept the risk."""


class WeakKdfParameters(MqchatError):
    """The key-derivation parameters are weaker than mqchat allows."""


class SecretFileError(MqchatError):
    """A secret file must be a regular file owned by you with mode 0600."""


class IpcError(MqchatError):
    """A local request or reply is not valid JSON-RPC 2.0."""

    def __init__(self, code: int, message: str, data: object = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data


class DaemonRefused(MqchatError):
    """chatd refused the request."""

    def __init__(self, message: str, code: int = -32000) -> None:
        super().__init__(message)
        self.code = code


class DaemonUnavailable(MqchatError):
    """chatd is not running or not answering.

    Start it with `chatd &` or `systemctl --user start chatd`.
    """

    exit_code = 3


class RuntimeDirError(MqchatError):
    """The runtime directory is not private: it must be yours and mode 0700."""


class UnsafeRuntimeDir(RuntimeDirError):
    """chatctl refuses to connect through a runtime directory that is not private.

    Another user could have put their own socket there, to read what you send.
    """

    exit_code = 3


class AlreadyRunning(MqchatError):
    """Another chatd already serves this runtime directory."""


class NotAMember(MqchatError):
    """You are no longer a member of this room."""


class NotJoined(MqchatError):
    """You have not joined this room: run `chatctl join ROOM` first."""


class NothingToTrust(MqchatError):
    """There is no new key to trust for that name in that room."""


class RequestTooLarge(MqchatError):
    """The request is larger than chatd accepts (256 KiB)."""


class StoreError(MqchatError):
    """chatd cannot use its store."""
