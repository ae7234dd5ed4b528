"""The one shape of the gateway's handler wrappers: each wraps a method's handler once,
and the server runs the wrapped handler. The error mapping (gateway/errors.py), the
metrics (gateway/metrics.py) and the submit span (gateway/submit_tracing.py) are such.

The gateway applies them where the services register their handlers (`WrappingServer`),
not as grpc.aio interceptors: an interceptor runs as a coroutine of its own on every
call, before the handler is found, even when all it does is hand back the handler it
wrapped the first time (~50-80 µs of the gateway's CPU per call here). A
`WrappingInterceptor` still serves as a plain interceptor, for a server that wants one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

import grpc

Wrap = Callable[[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler]


class _WrapOnce:
    """`wrap`, applied once per method and handler: the server asks for a method's
    handler on every call and gets the same wrapped one back."""

    def __init__(self, wrap: Wrap) -> None:
        self._wrap = wrap
        # Each method's handler, as registered and as wrapped.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def __call__(self, method: str, handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler | None:
        if handler is None:
            return None
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


class WrappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self) -> None:
        self._once = _WrapOnce(self.wrap)

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The handler of `method` that the server runs instead of `handler`."""
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        return self._once(details.method, await continuation(details))


class _WrappedGeneric(grpc.GenericRpcHandler):  # type: ignore[misc]
    """A generic handler whose handlers come wrapped (once per method and handler)."""

    def __init__(self, inner: grpc.GenericRpcHandler, wrap: Wrap) -> None:
        self._inner, self._once = inner, _WrapOnce(wrap)

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._once(details.method, self._inner.service(details))


class _MethodTable(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Every method the services registered by name, found by one dictionary lookup."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self.handlers.get(details.method)


class WrappingServer(grpc.aio.Server):  # type: ignore[misc]
    """A grpc.aio server whose handlers are wrapped by `wrappers` as the services register
    them, the first of them outermost (the order of a server's interceptors). Methods
    registered by name (the generated code's `add_registered_method_handlers`) are wrapped
    once; a generic handler's, the first time each method is asked for. Everything else
    is `server`'s own.

    Methods registered by name are served as generic ones, from one table (`_MethodTable`),
    not registered with grpc's core: grpc.aio's server keeps a pending request per
    registered method, and for every call it takes, it waits on all of them again
    (`asyncio.wait` over the gateway's ~40 methods: ~40 done-callbacks added and removed,
    in Python, per call). One generic request does the same work per call, whatever the
    number of methods."""

    def __init__(self, server: grpc.aio.Server, wrappers: Sequence[WrappingInterceptor]) -> None:
        self._server = server
        self._wrappers = tuple(reversed(wrappers))
        self._table = _MethodTable()
        # First among the generic handlers: a method in the table is found there.
        server.add_generic_rpc_handlers((self._table,))

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        for wrapper in self._wrappers:
            handler = wrapper.wrap(method, handler)
        return handler

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(tuple(_WrappedGeneric(h, self.wrap) for h in generic_rpc_handlers))

    def add_registered_method_handlers(self, service_name: str,
                                       method_handlers: Mapping[str, grpc.RpcMethodHandler]) -> None:
        for name, handler in method_handlers.items():
            method = f"/{service_name}/{name}"
            self._table.handlers[method] = self.wrap(method, handler)

    def add_insecure_port(self, address: str) -> int:
        return int(self._server.add_insecure_port(address))

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        return int(self._server.add_secure_port(address, server_credentials))

    async def start(self) -> None:
        await self._server.start()

    async def stop(self, grace: float | None) -> None:
        await self._server.stop(grace)

    async def wait_for_termination(self, timeout: float | None = None) -> bool:
        return bool(await self._server.wait_for_termination(timeout))
