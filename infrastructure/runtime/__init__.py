"""State-node runtime: entity hosting, group commit, sharding."""

from infrastructure.runtime.node import Router, StateNode
from infrastructure.runtime.registry import EntityTypes
from infrastructure.runtime.sharding import AllShards, StaticShards, shard_of

__all__ = ["AllShards", "EntityTypes", "Router", "StateNode", "StaticShards", "shard_of"]
