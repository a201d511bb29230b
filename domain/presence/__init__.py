"""Second sample domain: presence for many users (small entities, 1M+ of them).

``UserState`` per user (status, text, last seen, the user's own devices as connections,
a small settings map), ``Room`` per room (its members' presence, told by their
``UserState`` entities). Serve it with ``XPLATFORM_ENTITIES=domain.presence:ENTITIES``.
"""

from domain.presence.room import Room
from domain.presence.user_state import UserState

ENTITIES = (UserState, Room)

__all__ = ["ENTITIES", "Room", "UserState"]
