"""Sample domain: a live auction house (``Lot`` shared by many, ``Bidder`` per user)."""

from domain.auction.bidder import Bidder
from domain.auction.lot import Lot

ENTITIES = (Lot, Bidder)

__all__ = ["ENTITIES", "Bidder", "Lot"]
