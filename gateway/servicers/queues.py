"""QueueService: queue counts and state, from counters (never by scanning jobs)."""

from __future__ import annotations

import grpc

from conveyor.errors import FieldViolation, InvalidArgument
from conveyor.v1 import queue_service_pb2 as pb
from conveyor.v1 import queue_service_pb2_grpc
from gateway.mapping import queue_to_proto
from gateway.runtime import GatewayRuntime
from gateway.validation import QUEUE_NAME

MAX_PAGE = 1000


def _check_queue(name: str) -> str:
    if not QUEUE_NAME.match(name):
        raise InvalidArgument(FieldViolation("queue", "a queue name is required"))
    return name


class QueueServicer(queue_service_pb2_grpc.QueueServiceServicer):
    def __init__(self, rt: GatewayRuntime) -> None:
        self.rt = rt

    async def ListQueues(
        self, request: pb.ListQueuesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListQueuesResponse:
        if request.page_size < 0:
            raise InvalidArgument(FieldViolation("page_size", "must not be negative"))
        size = min(request.page_size or 100, MAX_PAGE)
        queues = await self.rt.store.list_queues(self.rt.settings.queue_concurrency)
        names = [q.name for q in queues]
        start = 0
        if request.page_token:
            if request.page_token not in names:
                raise InvalidArgument(FieldViolation("page_token", "not a token this server issued"))
            start = names.index(request.page_token) + 1
        page = queues[start : start + size]
        token = page[-1].name if start + size < len(queues) and page else ""
        return pb.ListQueuesResponse(queues=[queue_to_proto(q) for q in page], next_page_token=token)

    async def GetQueue(self, request: pb.GetQueueRequest, context: grpc.aio.ServicerContext) -> pb.GetQueueResponse:
        q = await self.rt.store.get_queue(_check_queue(request.queue), self.rt.settings.queue_concurrency)
        return pb.GetQueueResponse(queue=queue_to_proto(q))
