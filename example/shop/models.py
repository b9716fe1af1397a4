from django.db import models


class Receipt(models.Model):
    """Written by the `shop.tasks.issue_receipt` hook once an order has been priced."""

    task_id = models.CharField(max_length=32, unique=True)
    order_id = models.IntegerField()
    total = models.DecimalField(max_digits=12, decimal_places=2, null=True)
    success = models.BooleanField()
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"receipt for order {self.order_id}: {self.total}"
