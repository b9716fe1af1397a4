"""A task that is safe to run twice: the row change is the claim, so only one run sends the mail."""

from django.contrib.auth import get_user_model
from django.core import mail


def activate_account(user_id):
    users = get_user_model().objects
    # One UPDATE that only matches an inactive user: a second run (a redelivery
    # after a crash) matches nothing and sends nothing.
    changed = users.filter(pk=user_id, is_active=False).update(is_active=True)
    if changed:
        user = users.get(pk=user_id)
        mail.send_mail("Welcome", "Your account is active.", None, [user.email])
    return bool(changed)


def send_invoice(invoice_id):
    # When a step cannot be made conditional, key it: Django Q holds a unique
    # key while the task is queued or running, so a double click sends one task.
    from django_q.tasks import async_task

    return async_task("billing.tasks.send_invoice", invoice_id, unique=f"invoice-{invoice_id}")
