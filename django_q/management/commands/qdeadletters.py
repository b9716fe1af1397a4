"""manage.py qdeadletters: list the packages the cluster set aside, purge them or requeue them."""

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from django_q import deadletters
from django_q.models import DeadLetter


class Command(BaseCommand):
    help = "List dead letters (packages never run: bad signature, corrupt, too large); purge or requeue them."

    def add_arguments(self, parser: CommandParser) -> None:
        action = parser.add_mutually_exclusive_group()
        action.add_argument("--purge", action="store_true", help="delete every dead letter")
        action.add_argument(
            "--requeue", action="store_true", help="requeue the letters whose signature holds with the current keys"
        )
        parser.add_argument("--queue", help="only the dead letters of this queue (cluster name)")

    def handle(self, *args: Any, **options: Any) -> None:
        letters = DeadLetter.objects.all()
        if options["queue"]:
            letters = letters.filter(queue=options["queue"])
        if options["purge"]:
            self.stdout.write(f"purged: {deadletters.purge(letters)}")
        elif options["requeue"]:
            requeued, kept = deadletters.requeue(letters)
            for letter, reason in kept:
                self.stderr.write(f"kept {letter.id} ({letter.queue}): {reason}")
            self.stdout.write(f"requeued: {requeued}\nkept: {len(kept)}")
        else:
            for letter in letters.order_by("created"):
                self.stdout.write(f"{letter.id}\t{letter.queue}\t{letter.broker_id}\t{letter.created:%Y-%m-%d %H:%M:%S}\t{letter.reason}")
            self.stdout.write(f"dead letters: {letters.count()}")
