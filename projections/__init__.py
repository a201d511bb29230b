"""Projections: read models built from the events entities store, for projection builders.

- :mod:`projections.events` — the public events topic: the versioned envelope downstream
  consumers see (contract: ``projections/EVENTS.md``), platform internals removed.
- :mod:`projections.projection`, :mod:`projections.changes` — the SDK: a projection names
  its read model and the categories it reads; handlers are pure functions of (event,
  current document) returning declared changes.
- :mod:`projections.engine` — how a batch of events becomes document writes, with the
  exactly-once bookkeeping shared by every store; :mod:`projections.testkit` — the sandbox
  (no server); :mod:`projections.mongo` — MongoDB read models.
- :mod:`projections.auction` — sample projections of the auction domain.

Layering: projections import domain and the infrastructure ports (persistence,
subscriptions, codec, testkit); infrastructure never imports projections.
"""
