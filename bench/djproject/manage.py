#!/usr/bin/env python
"""manage.py for the bench project; run from bench/ with DJANGO_SETTINGS_MODULE=djproject.settings.djq (or djq2)."""

import os
import sys

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djproject.settings.djq")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
