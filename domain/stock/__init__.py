"""Sample domain: stock levels held by a warehouse system (state proxies, :mod:`domain.proxy`).

``StockLevel`` stands for one SKU's stock in the warehouse's own system (the primary): the
warehouse pushes changes through the internal edge, clerks and orders reserve stock with
command + pull. ``Order`` is an entity that uses the proxy with request/response
messages. Served with ``XPLATFORM_ENTITIES=domain.stock:ENTITIES`` and
``XPLATFORM_PROXY_PRIMARIES=StockLevel=http://<warehouse>/stock``.
"""

from domain.stock.order import Order
from domain.stock.stock_level import StockLevel

ENTITIES = (StockLevel, Order)

__all__ = ["ENTITIES", "Order", "StockLevel"]
