"""``event_store.client.gossip.Gossip``: a one-node cluster whose leader is the emulator
(or, with ``--follower-of``, a follower plus the leader it names).

``kurrentdbclient`` reads gossip for ``kurrentdb+discover://`` URIs (and for
multi-target URIs) and picks the member in ``Leader`` state; with a single
member it keeps the connection it already has, so advertising our own
host/port as the only, always-alive leader makes discovery work.

ServerFeatures is not implemented: ``kurrentdbclient`` 1.3.5 never calls it and
does not ship its generated module.
"""

from __future__ import annotations

import time
import uuid

import grpc.aio
from kurrentdbclient.protos.v1 import gossip_pb2, gossip_pb2_grpc, shared_pb2


class GossipService(gossip_pb2_grpc.GossipServicer):
    """Answers ``Gossip.Read`` with a single leader member at ``host:port``."""

    def __init__(self, host: str, port: int, leader: tuple[str, int] | None = None) -> None:
        self._host = host
        self._port = port
        self._leader = leader
        self._instance_id = str(uuid.uuid4())
        self._leader_instance_id = str(uuid.uuid4())

    async def Read(  # noqa: N802 - gRPC method name
        self, request: shared_pb2.Empty, context: grpc.aio.ServicerContext
    ) -> gossip_pb2.ClusterInfo:
        """Return the cluster as seen by this node: itself as the leader, or (``--follower-of``)
        itself as a follower and the named leader."""
        state = gossip_pb2.MemberInfo.VNodeState
        me = self._member(self._instance_id, self._host, self._port,
                          state.Follower if self._leader else state.Leader)
        if self._leader is None:
            return gossip_pb2.ClusterInfo(members=[me])
        leader = self._member(self._leader_instance_id, *self._leader, state.Leader)
        return gossip_pb2.ClusterInfo(members=[me, leader])

    @staticmethod
    def _member(instance_id: str, host: str, port: int, state: int) -> gossip_pb2.MemberInfo:
        return gossip_pb2.MemberInfo(
            instance_id=shared_pb2.UUID(string=instance_id),
            time_stamp=time.time_ns() // 100,
            state=state,
            is_alive=True,
            http_end_point=gossip_pb2.EndPoint(address=host, port=port),
        )
