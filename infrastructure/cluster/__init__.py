"""Cluster coordination: membership, the distribution layout, shard allocation with epochs,
and each node's ownership state machine (ZooKeeper through kazoo, behind our own port)."""
