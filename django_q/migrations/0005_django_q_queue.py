from django.db import migrations

from django_q.migrations._adopt import requeue_legacy


class Migration(migrations.Migration):
    """The tasks django-q or django-q2 left queued in the database, re-signed as ours (see _adopt.py)."""

    dependencies = [
        ('django_q', '0004_task_lifecycle'),
    ]

    operations = [
        migrations.RunPython(requeue_legacy, migrations.RunPython.noop, atomic=False),  # DDL: see 0002
    ]
