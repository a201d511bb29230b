"""Where a clustered state node sends entity-to-entity messages (its :class:`Router`)."""

from __future__ import annotations

import asyncio

from domain.messages import EntityMessage
from domain.refs import EntityRef
from infrastructure.cluster.ownership import Ownership
from infrastructure.runtime.node import StateNode
from infrastructure.transport.client import ClusterClient


class LocalFirstRouter:
    """Entity-to-entity messages: delivered in this process when we own the target, else
    sent to its owner over the transport."""

    def __init__(self, node: StateNode, ownership: Ownership, remote: ClusterClient) -> None:
        self.node, self.ownership, self.remote = node, ownership, remote

    def tell(self, to: EntityRef, message: EntityMessage) -> None:
        if self.ownership.is_mine(to):
            asyncio.get_running_loop().call_soon(self.node.deliver, to, message)
        else:
            self.remote.tell(to, message)
