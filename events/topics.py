"""Names of the Kafka topics and what each is keyed by (DESIGN.md, "Flow")."""

from __future__ import annotations

from typing import Final

SHOP_ORDERS: Final = "shop.orders"
SUPPLIER_EVENTS: Final = "supplier.events"
SUPPLIER_CATALOG: Final = "supplier.catalog"
ALLOCATION: Final = "fulfillment.allocation"
DECISIONS: Final = "fulfillment.decisions"
SUPPLIER_ORDERS: Final = "fulfillment.supplier-orders"
ORDER_STATUS: Final = "fulfillment.order-status"
DLQ: Final = "fulfillment.dlq"

#: topic -> what its record key is.
KEYED_BY: Final[dict[str, str]] = {
    SHOP_ORDERS: "order_id",
    SUPPLIER_EVENTS: "order_id",
    SUPPLIER_CATALOG: "sku",
    ALLOCATION: "sku",
    DECISIONS: "order_id",
    SUPPLIER_ORDERS: "supplier_id",
    ORDER_STATUS: "order_id",
    DLQ: "original key",
}

ALL_TOPICS: Final[tuple[str, ...]] = tuple(KEYED_BY)

#: Topics written by parties outside the pipeline (shops, suppliers).
INPUT_TOPICS: Final[tuple[str, ...]] = (SHOP_ORDERS, SUPPLIER_EVENTS, SUPPLIER_CATALOG)
