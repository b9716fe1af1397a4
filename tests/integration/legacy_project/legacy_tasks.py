"""The tasks of the project that moves over from django-q: importable by both the old and the new side."""

import os


def add(a, b):
    return a + b


def boom():
    raise ValueError("boom from django-q")


def mark(label):
    """Leave a file named `label` in DQ_LEGACY_MARKS, and return the label."""
    with open(os.path.join(os.environ["DQ_LEGACY_MARKS"], label), "a") as f:
        f.write("ran\n")
    return label
