"""The shop's background work: functions the cluster runs, enqueued by dotted path."""

from __future__ import annotations

import hashlib
import json
import time
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

VAT = Decimal("0.20")
CENT = Decimal("0.01")


class PaymentDeclined(Exception):
    """The card issuer said no."""


def make_order(order_id: int) -> dict[str, Any]:
    """A deterministic sample order: a few lines of (sku, quantity, unit price)."""
    lines = []
    for n in range(1 + order_id % 4):
        sku = f"SKU-{(order_id * 7 + n * 13) % 97:03d}"
        quantity = 1 + (order_id + n) % 5
        unit_price = str(Decimal(199 + (order_id * 31 + n * 17) % 4800) / 100)
        lines.append({"sku": sku, "quantity": quantity, "unit_price": unit_price})
    return {"id": order_id, "lines": lines}


def order_total(order: dict[str, Any]) -> Decimal:
    """The order's price with VAT, rounded to the cent."""
    net = sum((Decimal(line["unit_price"]) * line["quantity"] for line in order["lines"]), Decimal(0))
    return (net * (1 + VAT)).quantize(CENT, rounding=ROUND_HALF_UP)


def price_order(order: dict[str, Any]) -> Decimal:
    """Price an order, as a pricing service call would (a few ms of latency)."""
    time.sleep(0.005)
    return order_total(order)


def checksum(order: dict[str, Any]) -> str:
    """SHA-256 of the order's canonical JSON form, e.g. to detect later edits."""
    time.sleep(0.002)
    return hashlib.sha256(json.dumps(order, sort_keys=True).encode()).hexdigest()


def charge_card(order_id: int, amount: str) -> str:
    """Fails on purpose: the demo shows how a failure is recorded."""
    raise PaymentDeclined(f"card declined for order {order_id} ({amount} EUR)")


def issue_receipt(task: Any) -> None:
    """A hook: runs in the cluster with the finished Task and stores a receipt."""
    from shop.models import Receipt

    order = task.args[0]
    Receipt.objects.create(
        task_id=task.id,
        order_id=order["id"],
        total=task.result if task.success else None,
        success=task.success,
    )
