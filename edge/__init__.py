"""Edges: websocket (public) and device (internal) entry points. Built in the edge issue."""
