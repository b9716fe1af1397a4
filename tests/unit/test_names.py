"""Task ids and their readable names."""

import re
import uuid

from django_q.models import Task
from django_q.names import WORDS, humanize, new_id, new_ids


def test_an_id_is_32_lowercase_hex_characters():
    for _ in range(100):
        assert re.fullmatch(r"[0-9a-f]{32}", new_id())


def test_ids_are_distinct():
    assert len({new_id() for _ in range(10_000)}) == 10_000


def test_ids_made_together_are_version_4_uuids_like_single_ones():
    """new_ids replaces uuid.uuid4().hex: every id must read back as what uuid4 makes."""
    ids = new_ids(10_000)
    assert len(set(ids)) == 10_000
    for task_id in [*ids, *(new_id() for _ in range(100))]:
        assert re.fullmatch(r"[0-9a-f]{32}", task_id)
        parsed = uuid.UUID(hex=task_id)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    assert new_ids(0) == []


def test_humanize_is_deterministic():
    task_id = "3fa2c1d47e8b40a19c6d2e5f7a8b9c0d"
    assert humanize(task_id) == humanize(task_id) == "clay-magnet-parrot-radar-8b9c0d"


def test_a_name_is_four_words_and_the_last_six_hex_digits():
    task_id = new_id()
    *words, tail = humanize(task_id).split("-")
    assert len(words) == 4 and all(w in WORDS for w in words)
    assert tail == task_id[-6:]


def test_names_fit_the_name_column():
    longest = max(WORDS, key=len)
    task_id = "ff" * 16
    assert len(f"{longest}-" * 4) + 6 <= Task._meta.get_field("name").max_length
    assert len(humanize(task_id)) <= Task._meta.get_field("name").max_length


def test_distinct_random_ids_get_distinct_names():
    ids = {new_id() for _ in range(20_000)}
    assert len({humanize(i) for i in ids}) == len(ids)


def test_ids_differing_in_one_named_digit_get_distinct_names():
    base = "00000000" + "a" * 18 + "000000"
    names = {humanize(base)}
    for position in [*range(8), *range(26, 32)]:
        names.add(humanize(base[:position] + "1" + base[position + 1 :]))
    assert len(names) == 15


def test_async_iter_part_ids_get_distinct_names():
    """async_iter numbers its parts in the id's last eight digits; humanize must tell them apart."""
    parent = new_id()
    parts = [f"{parent[:24]}{i:08x}" for i in range(5000)]
    assert len({humanize(p) for p in parts}) == len(parts)


def test_a_name_is_the_words_of_the_ids_first_four_bytes_and_its_last_six_digits():
    """humanize's formatting, pinned to the plain rule it spells out."""
    for task_id in [*new_ids(1000), "ff" * 16, "00" * 16, "3FA2C1D47E8B40A19C6D2E5F7A8B9C0D"]:
        assert humanize(task_id) == "-".join(WORDS[b] for b in bytes.fromhex(task_id[:8])) + "-" + task_id[-6:]
