"""State-node runtime: entity hosting, group commit, sharding, hot mirrors."""

from infrastructure.runtime.mirrors import Mirror, MirrorFeed, state_digest
from infrastructure.runtime.node import Router, StateNode
from infrastructure.runtime.registry import EntityTypes
from infrastructure.runtime.sharding import AllShards, StaticShards, shard_of

__all__ = ["AllShards", "EntityTypes", "Mirror", "MirrorFeed", "Router", "StateNode", "StaticShards", "shard_of",
           "state_digest"]
