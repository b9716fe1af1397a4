"""The Prometheus endpoint: `path("metrics/", include("django_q.urls"))` in a project's urls."""

from django.urls import path

from .metrics import metrics

app_name = "django_q"
urlpatterns = [path("", metrics, name="metrics")]
