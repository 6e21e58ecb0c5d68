"""An order's money: payments, credits for units taken off, refunds (pure transitions).

Called by the other order rules; same contract as :func:`agents.core.order_rules.decide`.
The ledger (docs/order-lifecycle.md, "Money"):

- **due** = total - credited - written off: what the customer pays for what it keeps;
- a **credit** takes units off the order at their value (:mod:`agents.core.money`),
  goods and, where the rule says so, their share of shipping;
- after every step that moves money, :func:`settle` refunds whatever was paid
  (and not refunded) beyond what is due, at once: so refunded <= paid always, and
  a finished order keeps exactly what is due;
- a payment in another currency than the order's is refunded whole, at once.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from agents.core import money
from agents.core.orders import ZERO, Order, Output, Payment, Refused, Result, with_line
from events.fulfillment import RefundCause, RefundIssued, RefundLine
from events.orders import PaymentConfirmed
from events.types import Money


def credit(order: Order, units: dict[str, int],
           with_shipping: bool) -> tuple[Order, list[RefundLine]]:
    """Take ``units`` (line id -> units) off the order at their value; returns the
    order and what each line was credited."""
    detail = []
    cur = order.currency
    for line_id, n in units.items():
        line = order.lines[line_id]
        n = min(n, line.quantity - line.credited_goods)
        if n <= 0:
            continue
        value = money.units_value(money.minor(line.goods, cur), line.quantity,
                                  line.credited_goods, n)
        shipping = min(n, line.quantity - line.credited_shipping) if with_shipping else 0
        value += money.units_value(money.minor(line.shipping, cur), line.quantity,
                                   line.credited_shipping, shipping)
        order = with_line(order, replace(line, credited_goods=line.credited_goods + n,
                                         credited_shipping=line.credited_shipping + shipping))
        detail.append(RefundLine(line_id=line_id, units=n, amount=money.major(value, cur),
                                 with_shipping=bool(shipping)))
    return order, detail


def settle(order: Order, now: datetime, cause: RefundCause, lines: list[RefundLine] | None = None,
           *, rma_id: str | None = None, payment_ref: str | None = None,
           reason: str | None = None) -> Result:
    """Refund what was paid beyond what is due (if anything), then mark the order paid
    if what was paid now covers what is due."""
    out: list[Output] = []
    excess = order.balance()
    if excess > 0:
        out.append(_refund(order, now, cause, Money(amount=excess, currency=order.currency),
                           lines or [], rma_id=rma_id, payment_ref=payment_ref, reason=reason))
        order = replace(order, refunded=order.refunded + excess, refunds=order.refunds + 1)
    return covered(order, now), out


def covered(order: Order, when: datetime) -> Order:
    """The order, paid as of ``when`` if its payments (net of refunds) now cover what is due."""
    if order.paid_at or order.cancelled or not order.paid_something:
        return order
    if order.paid() - order.refunded >= order.due():
        return replace(order, paid_at=when, short_since=None)
    return order


def _refund(order: Order, now: datetime, cause: RefundCause, amount: Money,
            lines: list[RefundLine], **refs: str | None) -> RefundIssued:
    reason = refs.pop("reason")
    return RefundIssued(order_id=order.order_id, shop_id=order.shop_id,
                        refund_id=order.refund_id(), cause=cause, amount=amount,
                        lines=tuple(lines), reason=reason[:500] if reason else None,
                        issued_at=now, **refs)


def pay(order: Order, m: PaymentConfirmed, now: datetime) -> Result:
    """A payment: recorded once per ``payment_ref``; another currency is refunded whole;
    what exceeds what is due is refunded (all of it for a cancelled order)."""
    seen = next((p for p in order.payments if p.payment_ref == m.payment_ref), None)
    if seen is not None:
        if (seen.amount, seen.currency) == (m.amount.amount, m.amount.currency):
            return order, []  # the same payment confirmed again
        return order, [Refused(f"payment {m.payment_ref} was already confirmed for "
                               f"{seen.amount} {seen.currency}")]
    order = replace(order, payments=(*order.payments, Payment(
        m.payment_ref, m.amount.amount, m.amount.currency, m.paid_at)))
    if m.amount.currency != order.currency:
        note = (f"payment {m.payment_ref} of {m.amount.amount} {m.amount.currency} refunded: "
                f"the order is in {order.currency}")
        refund = _refund(order, now, "wrong_currency", m.amount, [], rma_id=None,
                         payment_ref=m.payment_ref, reason=note)
        return replace(order, refunds=order.refunds + 1, note=note), [refund]
    cause: RefundCause = "late_payment" if order.cancelled else "overpayment"
    before = order.refunded
    order, out = settle(order, now, cause, payment_ref=m.payment_ref,
                        reason="payment for a cancelled order" if order.cancelled else None)
    if order.cancelled:
        order = replace(order, note=f"payment {m.payment_ref} for a cancelled order refunded")
    elif order.refunded > before:
        order = replace(order, note=f"paid {order.refunded - before} {order.currency} more "
                                    "than due: refunded")
    if order.short and order.short_since is None:
        order = replace(order, short_since=now)
    return order, out


def write_off(order: Order, now: datetime) -> Order:
    """Ops accept what was paid as payment in full: the outstanding amount is written off."""
    outstanding = max(ZERO, -order.balance())
    return covered(replace(order, written_off=order.written_off + outstanding), now)
