"""A project's urls.py with the Prometheus endpoint."""

from django.urls import include, path

urlpatterns = [
    path("metrics/", include("django_q.urls")),
]
