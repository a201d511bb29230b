"""Entity SDK for domain modellers (pure: no I/O) and the sample auction domain.

Import what you need from here::

    from domain import Entity, Context, Rejected, client_message, entity_message, timer, event
"""

from eventsourcing.domain import event

from domain.context import Context
from domain.dispatch import Outcome, handle
from domain.effects import Reply, Send, Tell, Terminate, ToAllConnections, ToClaims, ToConnection
from domain.entity import Entity, client_message, entity_message, timer
from domain.errors import (
    DomainError,
    HandlerFailed,
    InvalidEntityId,
    NotAuthorised,
    NotConnected,
    PayloadDecodeError,
    ProxyBusy,
    ProxyError,
    Rejected,
    RetryLater,
    UnknownCategory,
    UnknownMessageType,
)
from domain.messages import ClientMessage, Connect, EntityMessage, Inbound, RemoteResult, Terminated, TimerFired
from domain.proxy import ProxyAnswer, StateProxy, ask_command, ask_pull, ask_read
from domain.refs import EntityRef

__all__ = [
    "ClientMessage", "Connect", "Context", "DomainError", "Entity", "EntityMessage", "EntityRef",
    "HandlerFailed", "Inbound", "InvalidEntityId", "NotAuthorised", "NotConnected", "Outcome",
    "PayloadDecodeError", "ProxyAnswer", "ProxyBusy", "ProxyError", "Rejected", "RemoteResult", "Reply",
    "RetryLater", "Send", "StateProxy", "Tell", "Terminate", "Terminated", "TimerFired", "ToAllConnections",
    "ToClaims", "ToConnection", "UnknownCategory", "UnknownMessageType", "ask_command", "ask_pull", "ask_read",
    "client_message", "entity_message", "event", "handle", "timer",
]
