"""The admin's live dashboard: a page that redraws itself from a JSON endpoint every few seconds.

Per queue it shows the last hour from the queue's history (django_q.history,
kept in the broker by the clusters' savers, never read from the Task table),
the running clusters and their workers from their published statuses
(django_q.status), the dead letters of the queue and the schedules due in the
next hour. The charts are drawn in the browser as SVG by the app's own
static/django_q/dashboard.js, in the admin's colours (its CSS variables, so
its dark mode too): no chart library, nothing from a CDN.

The page and its data are for active staff who may view successful or failed
tasks; anyone else gets the login page (anonymous) or 403 (staff without it).
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import HttpRequest, JsonResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .conf import Config, get_config
from .context import describe
from .exceptions import BrokerError
from .history import window
from .models import DeadLetter, Schedule
from .status import cluster_statuses

REFRESH = 5  # seconds between two redraws of the page
LISTED = 10  # dead letters and due schedules listed per queue
VIEW_PERMS = ("django_q.view_success", "django_q.view_failure", "django_q.change_success", "django_q.change_failure")


def may_view(request: HttpRequest) -> bool:
    """Whether the user is active staff who may view successful or failed tasks."""
    user = request.user
    return bool(user.is_active and user.is_staff and any(user.has_perm(p) for p in VIEW_PERMS))


def queue_data(queue: str, config: Config, now: float | None = None) -> dict[str, Any]:
    """Everything the dashboard shows of one queue, ready for JSON."""
    now = time.time() if now is None else now
    try:
        data = window(queue, config, now=now)
        statuses = cluster_statuses(queue, config)
        data["error"] = None
    except BrokerError as exc:
        data = {"queue": queue, "error": f"{config.broker_kind} broker did not answer: {exc}"}
        statuses = []
    data["clusters"] = [
        {"id": s.id, "host": s.host, "pid": s.pid, "state": s.state, "rate": s.rate, "done": s.done,
         "failed": s.failed, "queued": s.queued, "uptime": round(s.uptime), "rss": s.rss,
         "workers": [{"index": w.index, "pid": w.pid, "task": w.task_name, "task_id": w.task_id,
                      "running_for": round(now - w.started, 1) if w.task_name and w.started else None,
                      "progress": describe(w.progress) or None, "rss": w.rss, "cpu": w.cpu, "tasks": w.tasks}
                     for w in s.workers]}
        for s in statuses
    ]
    letters = DeadLetter.objects.filter(queue=queue)
    data["dead_letters"] = {
        "count": letters.count(),
        "latest": [{"id": d.pk, "reason": d.reason[:200], "created": d.created.isoformat()}
                   for d in letters.order_by("-created")[:LISTED]],
    }
    soon = Schedule.objects.filter(next_run__isnull=False, next_run__lte=timezone.now() + timedelta(hours=1))
    # A schedule without a cluster runs on the configured queue.
    mine = Q(cluster__in=("", queue)) | Q(cluster__isnull=True) if queue == config.name else Q(cluster=queue)
    soon = soon.filter(mine)
    data["schedules"] = [{"id": s.pk, "name": str(s), "func": s.func, "next_run": s.next_run.isoformat() if s.next_run else None}
                         for s in soon.order_by("next_run")[:LISTED]]
    return data


def queues(request: HttpRequest, config: Config) -> list[str]:
    """The configured queues (served_queues), then those the request names with ?queue= (any number)."""
    return list(dict.fromkeys([*config.served_queues, *(q for q in request.GET.getlist("queue") if q)]))


class PageAdmin(admin.ModelAdmin):
    """The admin of a page drawn from the broker, not of rows: nothing to add, change or delete."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class DashboardAdmin(PageAdmin):
    """The dashboard page (the model's changelist) and its data endpoint, `data/`."""

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return may_view(request)

    def get_urls(self) -> list:
        """The page and its data only: the proxy model's rows are tasks, shown by their own admin pages."""
        info = self.model._meta.app_label, self.model._meta.model_name
        return [
            path("data/", self.admin_site.admin_view(self.data_view), name="%s_%s_data" % info),
            path("", self.admin_site.admin_view(self.changelist_view), name="%s_%s_changelist" % info),
        ]

    def data_view(self, request: HttpRequest) -> JsonResponse:
        """The JSON the page draws: one entry per queue."""
        if not may_view(request):
            raise PermissionDenied
        config = get_config()
        return JsonResponse({"now": time.time(), "queues": [queue_data(q, config) for q in queues(request, config)]})

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> Any:
        if not may_view(request):
            raise PermissionDenied
        config = get_config()
        info = self.model._meta.app_label, self.model._meta.model_name
        query = request.GET.urlencode()
        context = {
            **self.admin_site.each_context(request),
            "title": _("Dashboard"),
            "opts": self.model._meta,
            "queues": queues(request, config),
            "refresh": REFRESH,
            "data_url": reverse("admin:%s_%s_data" % info) + (f"?{query}" if query else ""),
            "success_url": reverse("admin:django_q_success_changelist"),
            "failure_url": reverse("admin:django_q_failure_changelist"),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/django_q/dashboard.html", context)
