"""Admin pages: successful and failed tasks, the database broker's queue, schedules, dead letters."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from .models import DeadLetter, Failure, OrmQ, Schedule, Success, Task

TASK_FIELDS = ("name", "func", "args", "kwargs", "result", "group", "hook", "cluster", "started", "stopped",
               "attempt_count")


class ReadOnlyTaskAdmin(admin.ModelAdmin):
    """Stored tasks are records of what ran: they can be looked at and deleted, not edited."""

    search_fields = ("name", "func", "group")
    list_filter = ("started", "func", "group")
    readonly_fields = TASK_FIELDS
    fields = TASK_FIELDS

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description=_("time taken"))
    def time_taken(self, obj: Task) -> str:
        return f"{obj.time_taken():.3f}s"


@admin.register(Success)
class SuccessAdmin(ReadOnlyTaskAdmin):
    list_display = ("name", "func", "started", "stopped", "time_taken", "group", "attempt_count")


def resubmit(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
    """Enqueue the selected failed tasks again, with their arguments, hook and group."""
    from .tasks import async_task

    count = 0
    for task in queryset:
        async_task(task.func, *(task.args or ()), q_options={"hook": task.hook, "group": task.group,
                                                              "cluster": task.cluster}, **(task.kwargs or {}))
        task.delete()
        count += 1
    modeladmin.message_user(request, _("%(count)d task(s) resubmitted.") % {"count": count}, messages.SUCCESS)


resubmit.short_description = _("Resubmit selected tasks to queue")  # type: ignore[attr-defined]
resubmit.allowed_permissions = ("change",)  # type: ignore[attr-defined]


@admin.register(Failure)
class FailureAdmin(ReadOnlyTaskAdmin):
    list_display = ("name", "func", "started", "stopped", "time_taken", "group", "attempt_count")
    actions = [resubmit]


def run_now(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
    """Enqueue a run of each selected schedule now; their next run and repeats stay as they are."""
    from .cluster.scheduler import run_now as enqueue_now
    from .exceptions import TaskTypeError
    from .schedules import ScheduleError

    count = 0
    for sched in queryset:
        try:
            enqueue_now(sched)
        except (ScheduleError, TaskTypeError) as exc:
            modeladmin.message_user(request, _("%(schedule)s cannot run: %(error)s") % {"schedule": sched,
                                                                                      "error": exc}, messages.ERROR)
            continue
        count += 1
    if count:
        modeladmin.message_user(request, _("%(count)d schedule(s) enqueued.") % {"count": count}, messages.SUCCESS)


run_now.short_description = _("Run selected schedules now")  # type: ignore[attr-defined]
run_now.allowed_permissions = ("change",)  # type: ignore[attr-defined]

RESULT_CHARS = 80  # of the last result, in the list


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "func", "schedule_type", "repeats", "cluster", "next_run", "last_run_link",
                    "last_result", "success")
    list_filter = ("next_run", "schedule_type", "cluster")
    search_fields = ("name", "func")
    list_display_links = ("id", "name")
    readonly_fields = ("last_run_link", "last_result", "success")
    actions = [run_now]
    # The scheduler moves these while a change page is open. The page sends back
    # the values it showed, so that one left as shown is not saved: saving it
    # would put back a next run that has run already, and run it again.
    scheduler_fields = ("next_run", "repeats")

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if field is not None and db_field.name in self.scheduler_fields:
            field.show_hidden_initial = True
        return field

    def save_model(self, request: HttpRequest, obj: Schedule, form: Any, change: bool) -> None:
        if not change:
            obj.save()
            return
        columns = {f.name for f in obj._meta.concrete_fields}
        changed = [name for name in form.changed_data if name in columns]
        if changed:
            obj.save(update_fields=changed)

    @staticmethod
    def _last_run(obj: Schedule) -> Task | None:
        # Three columns show the last run: read it once per row.
        if getattr(obj, "_last_run_for", object()) != obj.task:
            obj._last_run, obj._last_run_for = obj.last_run(), obj.task  # type: ignore[attr-defined]
        return obj._last_run  # type: ignore[attr-defined]

    @admin.display(description=_("last run"))
    def last_run_link(self, obj: Schedule) -> Any:
        from django.urls import reverse
        from django.utils.html import format_html

        task = self._last_run(obj)
        if task is None:
            return None
        model = "success" if task.success else "failure"
        url = reverse(f"admin:django_q_{model}_change", args=(task.id,))
        return format_html('<a href="{}">{}</a>', url, task.name)

    @admin.display(description=_("last result"))
    def last_result(self, obj: Schedule) -> str | None:
        task = self._last_run(obj)
        if task is None:
            return None
        text = str(task.result)
        return text if len(text) <= RESULT_CHARS else text[: RESULT_CHARS - 1] + "…"

    @admin.display(boolean=True, description=_("success"))
    def success(self, obj: Schedule) -> bool | None:
        task = self._last_run(obj)
        return None if task is None else task.success


@admin.register(OrmQ)
class QueueAdmin(admin.ModelAdmin):
    list_display = ("id", "queue", "priority", "leased", "attempts", "created")
    list_filter = ("queue", "leased")
    readonly_fields = ("queue", "priority", "leased", "attempts", "created", "visible")
    exclude = ("payload",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    list_display = ("id", "queue", "broker_id", "reason", "created")
    list_filter = ("queue", "created")
    readonly_fields = ("queue", "broker_id", "reason", "created")
    exclude = ("payload",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
