"""cluster.channels: the names and encodings of what the cluster's processes share."""

from django_q.cluster.channels import (
    Notice, Wake, cancel_path, decode_cancels, decode_modules, decode_notices, encode_cancels, encode_module,
    encode_notice, folder_of, socket_path, state_path, task_modules_path,
)


def test_every_file_lives_in_the_clusters_folder():
    folder = "/tmp/django_q-abc"
    assert socket_path(folder) == "/tmp/django_q-abc/pusher.sock"
    assert folder_of(socket_path(folder)) == folder
    assert state_path(folder, 42) == "/tmp/django_q-abc/state-42"
    assert cancel_path(folder, 42) == "/tmp/django_q-abc/cancel-42"
    assert task_modules_path(folder) == "/tmp/django_q-abc/task-modules"


def test_notices_read_back_and_malformed_lines_are_skipped():
    data = encode_notice(Notice(3, 1234)) + b"junk\n-1 5\n" + encode_notice(Notice(0, 7))
    assert data.startswith(b"3 1234\n")
    assert decode_notices(data) == [Notice(3, 1234), Notice(0, 7)]


def test_only_whole_lines_of_the_task_modules_file_are_read():
    data = (encode_module("app.tasks") + encode_module("other.jobs") + "half.writ").encode()
    names, read = decode_modules(data)
    assert names == ["app.tasks", "other.jobs"]
    assert data[read:] == b"half.writ"


def test_cancel_files_read_back():
    assert decode_cancels(encode_cancels(["1", "22", "333"])) == {"1", "22", "333"}
    assert decode_cancels(encode_cancels([])) == set()


def test_each_wake_reason_is_one_distinct_byte():
    values = [reason.value for reason in Wake]
    assert all(len(v) == 1 for v in values) and len(set(values)) == len(values)
