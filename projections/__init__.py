"""Projections: read models and hot mirrors fed by the event stream. Built in a later issue."""
