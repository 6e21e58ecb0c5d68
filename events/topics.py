"""Names of the Kafka topics and what each is keyed by (DESIGN.md, "Flow")."""

from __future__ import annotations

from typing import Final

SHOP_ORDERS: Final = "shop.orders"
SUPPLIER_EVENTS: Final = "supplier.events"
SUPPLIER_CATALOG: Final = "supplier.catalog"
OPS_COMMANDS: Final = "ops.commands"
ALLOCATION: Final = "fulfillment.allocation"
DECISIONS: Final = "fulfillment.decisions"
SUPPLIER_ORDERS: Final = "fulfillment.supplier-orders"
ORDER_STATUS: Final = "fulfillment.order-status"
STOCK: Final = "fulfillment.stock"
DLQ: Final = "fulfillment.dlq"

#: topic -> what its record key is.
KEYED_BY: Final[dict[str, str]] = {
    SHOP_ORDERS: "order_id",
    SUPPLIER_EVENTS: "order_id",
    SUPPLIER_CATALOG: "sku",
    OPS_COMMANDS: "order_id",
    ALLOCATION: "sku",
    DECISIONS: "order_id",
    SUPPLIER_ORDERS: "supplier_id",
    ORDER_STATUS: "order_id",
    STOCK: "sku",
    DLQ: "original key",
}

ALL_TOPICS: Final[tuple[str, ...]] = tuple(KEYED_BY)

#: Topics written by parties outside the pipeline (shops, suppliers, operators).
INPUT_TOPICS: Final[tuple[str, ...]] = (SHOP_ORDERS, SUPPLIER_EVENTS, SUPPLIER_CATALOG,
                                        OPS_COMMANDS)


#: topic -> (what it carries, who writes it, who reads it): documentation, and
#: the source of the AsyncAPI document's channels.
TOPIC_DOCS: Final[dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]]] = {
    SHOP_ORDERS: ("Orders, payments, cancellations, returns and delivery confirmations "
                  "from shops.", ("shops",), ("order agent", "projector")),
    SUPPLIER_EVENTS: ("Acceptances, rejections, shipments, deliveries, delivery exceptions "
                      "and returns from suppliers.", ("suppliers",),
                      ("order agent", "projector")),
    SUPPLIER_CATALOG: ("Suppliers' offers and stock levels.", ("suppliers",),
                       ("allocation agent", "projector")),
    OPS_COMMANDS: ("Operators' commands about orders (release a held payment, cancel, "
                   "re-route a line, close a return), published by `dropship ops`.", ("ops",),
                   ("order agent", "projector")),
    ALLOCATION: ("Commands to reserve, commit or release stock for order lines.",
                 ("order agent",), ("allocation agent",)),
    DECISIONS: ("Allocation decisions per order line.", ("allocation agent",),
                ("order agent", "projector")),
    SUPPLIER_ORDERS: ("Orders routed to suppliers, and their cancellations.", ("order agent",),
                      ("suppliers",)),
    ORDER_STATUS: ("Order status changes, refunds, and the supplier facts the order agent "
                   "accepted (shipments with carrier and tracking, supplier-order answers, "
                   "return receipts).", ("order agent",),
                   ("shops", "projector")),
    STOCK: ("Per (supplier, sku) stock budgets after every change the allocation agent "
            "makes.", ("allocation agent",), ("projector",)),
    DLQ: ("Records an agent refused, with the reason.", ("every agent",),
          ("projector", "ops")),
}
