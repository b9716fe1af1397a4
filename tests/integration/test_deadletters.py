"""Dead letters: kept aside by the cluster, then purged or requeued once the key is right."""

from io import StringIO

from django.core.management import call_command
from django.test import override_settings

from django_q.brokers import get_broker
from django_q.models import DeadLetter
from django_q.names import new_id
from django_q.package import TaskPackage, pack
from django_q.tasks import result

from .conftest import wait_until


def run_command(*args) -> str:
    out = StringIO()
    call_command("qdeadletters", *args, stdout=out)
    return out.getvalue()


def test_letters_signed_with_a_rotated_key_are_requeued_once_it_is_a_fallback(cluster):
    old_cluster = cluster()
    task = TaskPackage(id=new_id(), name="rotated", func="math.copysign", args=(3, -1))
    with override_settings(SECRET_KEY="the-new-key"):
        signed_with_new_key = pack(task)
    get_broker().enqueue(signed_with_new_key)
    get_broker().enqueue(b"garbage that never verifies")
    wait_until(lambda: DeadLetter.objects.count() == 2)
    listing = run_command()
    assert "dead letters: 2" in listing and "signature" in listing

    assert "requeued: 0\nkept: 2" in run_command("--requeue")  # still the old key: nothing moves
    old_cluster.stop()
    with override_settings(SECRET_KEY="the-new-key", SECRET_KEY_FALLBACKS=["test-secret-key-not-for-production"]):
        assert "requeued: 1\nkept: 1" in run_command("--requeue")
        cluster()  # deployed with the new key
        assert result(task.id, wait=30_000) == -3.0
    assert DeadLetter.objects.count() == 1


def test_purge(cluster, q_cluster):
    cluster()
    get_broker().enqueue(b"junk")
    wait_until(lambda: DeadLetter.objects.count() == 1)
    assert "purged: 1" in run_command("--purge", "--queue", q_cluster["name"])
    assert not DeadLetter.objects.exists()



def test_an_oversized_package_is_kept_as_its_header_with_its_size(cluster, q_cluster):
    from django_q.package import HEADER_BYTES

    big = pack(TaskPackage(id=new_id(), name="too-big", func="math.copysign", args=("x" * 50_000,)))
    cluster(package_limit=10_000)
    get_broker().enqueue(big)
    wait_until(lambda: DeadLetter.objects.exists())
    letter = DeadLetter.objects.get()
    assert (bytes(letter.payload), letter.size) == (big[:HEADER_BYTES], len(big))
    assert "over package_limit 10000" in letter.reason


def test_the_store_keeps_at_most_dead_letter_limit(cluster, q_cluster):
    cluster(dead_letter_limit=2)
    for n in range(5):
        get_broker().enqueue(f"junk {n}".encode())
    wait_until(lambda: get_broker().size() == 0 and get_broker().leased() == 0)
    assert DeadLetter.objects.count() == 2
