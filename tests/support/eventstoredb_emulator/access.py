"""Optional access rules in front of every service: users (basic auth) and follower mode.

Both are off by default; the command line turns them on (``--user``, ``--follower-of``)
so client-side error handling can be tested against the real client over real gRPC.

* ``--user NAME:PASSWORD`` (repeatable): every call except ``Gossip.Read`` needs the
  ``authorization: Basic …`` header the client sends (only over TLS, see ``--tls-cert``).
  Wrong credentials fail with ``UNAUTHENTICATED`` (the server's authentication middleware
  rejects them before any handler runs); no credentials with ``PERMISSION_DENIED``
  ``Access Denied`` (anonymous access is not granted by the default ACLs).
* ``--follower-of HOST:PORT``: the node acts as a follower. Calls carrying
  ``requires-leader: true`` (the client's default with ``nodePreference=leader``) fail the
  way ``RpcExceptions.LeaderInfo`` does: ``NOT_FOUND`` ``Leader info available`` with
  ``leader-endpoint-host``/``-port`` trailing metadata, before anything is written. Gossip
  reports this node as Follower and HOST:PORT as Leader.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
import grpc.aio

GOSSIP_METHOD_PREFIX = "/event_store.client.gossip.Gossip/"

Check = Callable[[grpc.aio.ServicerContext], Awaitable[None]]


class AccessInterceptor(grpc.aio.ServerInterceptor):
    """Applies the rules in the module docstring to every call but gossip."""

    def __init__(self, users: Mapping[str, str], leader: tuple[str, int] | None) -> None:
        self._users = dict(users)
        self._leader = leader

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(GOSSIP_METHOD_PREFIX):
            return handler
        metadata = {k: v for k, v in (handler_call_details.invocation_metadata or ())}
        return _guarded(handler, lambda context: self._check(metadata, context))

    async def _check(self, metadata: Mapping[str, Any], context: grpc.aio.ServicerContext) -> None:
        if self._leader is not None and metadata.get("requires-leader") == "true":
            host, port = self._leader
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                "Leader info available",
                trailing_metadata=(("leader-endpoint-host", host), ("leader-endpoint-port", str(port))),
            )
        if not self._users:
            return
        header = metadata.get("authorization")
        if not header:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "Access Denied")
        scheme, _, encoded = str(header).partition(" ")
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user, password = "", ""
        if scheme.lower() != "basic" or self._users.get(user) != password or not user:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "Bad credentials")


def _guarded(handler: grpc.RpcMethodHandler, check: Check) -> grpc.RpcMethodHandler:
    """The same handler, with ``check`` run before its body (all four call shapes)."""
    kwargs = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
    if handler.unary_unary is not None:
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await check(context)
            return await inner_uu(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **kwargs)
    if handler.stream_unary is not None:
        inner_su = handler.stream_unary

        async def stream_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            await check(context)
            return await inner_su(requests, context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, **kwargs)
    if handler.unary_stream is not None:
        inner_us = handler.unary_stream

        async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await check(context)
            async for response in inner_us(request, context):
                yield response

        return grpc.unary_stream_rpc_method_handler(unary_stream, **kwargs)
    inner_ss = handler.stream_stream

    async def stream_stream(requests: Any, context: grpc.aio.ServicerContext) -> Any:
        await check(context)
        async for response in inner_ss(requests, context):
            yield response

    return grpc.stream_stream_rpc_method_handler(stream_stream, **kwargs)
