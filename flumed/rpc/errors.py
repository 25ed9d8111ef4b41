"""The RPC and wire errors, one definition each, in the FlumedError tree.

Raised by the Avro and Thrift codecs and clients (`flumed.rpc.*`) and the byte-stream
layers (`flumed.rpc.stream`). All are retriable: a call that failed on the wire may
succeed on a new connection; an RPC sink maps them to DeliveryError.
"""

from __future__ import annotations

from flumed.errors import FlumedError


class RpcError(FlumedError):
    """A call failed: no connection, no answer in time, a protocol or remote error."""

    retriable = True


class ConnectFailed(RpcError):
    """The connection (TCP connect, TLS handshake) to the next hop could not be made."""


class ProtocolError(RpcError):
    """The peer sent bytes that are not a valid message of the protocol; the connection
    must close. The message names what was wrong."""


class RemoteError(RpcError):
    """The peer answered a call with an error (an Avro error response, a Thrift
    TApplicationException whose type is `kind`)."""

    def __init__(self, message: str, kind: int = 0) -> None:
        super().__init__(message)
        self.kind = kind


class StreamError(RpcError):
    """The peer's byte stream is not valid for a layer (bad zlib data, TLS failure)."""
