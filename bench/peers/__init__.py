"""Task modules of the peers that need their tasks declared (Celery, Huey, Dramatiq); RQ uses jobs.py."""
