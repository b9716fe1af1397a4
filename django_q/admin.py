"""Admin pages: successful and failed tasks, the database broker's queue, schedules, dead letters.

Stored tasks, queued packages and dead letters are records: they can be looked
at and deleted, never edited. Actions that run code (resubmit a failure,
requeue a dead letter, run a schedule now) need the model's change permission,
so view-only staff get none of them.
"""

from __future__ import annotations

import time
from pprint import pformat
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.functional import Promise
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from .brokers.base import DELAYED, LEASED, RunningInfo, visible_state
from .conf import get_config
from .context import describe
from .dashboard import DashboardAdmin, PageAdmin
from .deadletters import requeue as send_back
from .enqueue import run_now as enqueue_now
from .exceptions import BrokerError, DjangoQError, PackageError, ScheduleError, TaskTypeError
from .guard import denied, offered
from .inflight import pending_tasks
from .models import Dashboard, DeadLetter, Failure, InFlight, OrmQ, Schedule, Success, Task
from .package import unpack, verify
from .status import look
from .tasks import async_task, cancel

SHORT = 80  # characters of a value shown in a list


def pre(value: Any) -> SafeString:
    """A value as escaped, pre-formatted text: strings as they are, anything else pretty-printed."""
    text = value if isinstance(value, str) else pformat(value, width=100, sort_dicts=False)
    return format_html('<pre style="white-space: pre-wrap; margin: 0; font-size: 12px">{}</pre>', text)


def short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= SHORT else text[: SHORT - 1] + "…"


def last_line(traceback: Any) -> str:
    """The line of a traceback that names the error."""
    lines = [line for line in str(traceback).splitlines() if line.strip()]
    return lines[-1] if lines else ""


class TaskAdmin(admin.ModelAdmin):
    """A stored task: shown readably, searchable and filterable; deletable, never editable."""
    search_fields = ("name", "func", "group", "id")
    list_filter = ("status", "started", "stopped", "func", "group")
    date_hierarchy = "stopped"
    fields = ("name", "id", "status", "func", "args_shown", "kwargs_shown", "result_shown", "exception", "group",
              "hook", "cluster", "worker", "priority", "enqueued", "started", "stopped", "time_taken",
              "attempt_count", "history_shown")
    readonly_fields = fields
    list_per_page = 50

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("time taken"))
    def time_taken(self, obj: Task) -> str:
        seconds = obj.time_taken()
        return "-" if seconds is None else f"{seconds:.3f} s"

    @admin.display(description=_("earlier attempts"))
    def history_shown(self, obj: Task) -> SafeString:
        return pre(obj.history or [])

    @admin.display(description=_("attempts"), ordering="attempt_count")
    def attempts(self, obj: Task) -> int:
        return obj.attempt_count

    @admin.display(description=_("args"))
    def args_shown(self, obj: Task) -> SafeString:
        return pre(obj.args if obj.args is not None else ())

    @admin.display(description=_("kwargs"))
    def kwargs_shown(self, obj: Task) -> SafeString:
        return pre(obj.kwargs if obj.kwargs is not None else {})

    @admin.display(description=_("result"))
    def result_shown(self, obj: Task) -> SafeString:
        return pre(obj.result)


@admin.register(Success)
class SuccessAdmin(TaskAdmin):
    list_display = ("name", "func", "group", "started", "time_taken", "attempts", "result_short")

    @admin.display(description=_("result"))
    def result_short(self, obj: Task) -> str:
        return short(repr(obj.result))


def resubmit(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
    """Enqueue the selected failed tasks again, with their arguments, hook and group."""
    count = 0
    for task in queryset:
        if why := denied(task.func):
            modeladmin.message_user(request, _("%(task)s cannot be resubmitted: %(error)s") % {"task": task,
                                                                                            "error": why}, messages.ERROR)
            continue
        try:
            async_task(task.func, *(task.args or ()), q_options={"hook": task.hook, "group": task.group,
                                                                  "cluster": task.cluster}, **(task.kwargs or {}))
        except (DjangoQError, TypeError) as exc:
            modeladmin.message_user(request, _("%(task)s cannot be resubmitted: %(error)s") % {"task": task,
                                                                                            "error": exc}, messages.ERROR)
            continue
        task.delete()
        count += 1
    if count:
        modeladmin.message_user(request, _("%(count)d task(s) resubmitted.") % {"count": count}, messages.SUCCESS)


resubmit.short_description = _("Resubmit selected tasks to queue")  # type: ignore[attr-defined]
resubmit.allowed_permissions = ("resubmit",)  # type: ignore[attr-defined]


@admin.register(Failure)
class FailureAdmin(TaskAdmin):
    list_display = ("name", "func", "status", "group", "started", "time_taken", "attempts", "error")
    actions = [resubmit]

    def has_resubmit_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("django_q.change_failure")

    @admin.display(description=_("error"))
    def error(self, obj: Task) -> str:
        return short(last_line(obj.result))


def run_now(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
    """Enqueue a run of each selected schedule now; their next run and repeats stay as they are."""
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


class ListedInput(forms.TextInput):
    """A text input that offers `options` in a <datalist>: pick one, or type (what validation allows)."""

    def __init__(self, options: list[str], attrs: dict | None = None) -> None:
        super().__init__(attrs)
        self.options = options

    def render(self, name: str, value: Any, attrs: dict | None = None, renderer: Any = None) -> SafeString:
        list_id = f"{(attrs or {}).get('id') or name}_options"
        html = super().render(name, value, {**(attrs or {}), "list": list_id}, renderer)
        options = format_html_join("", '<option value="{}"></option>', ((o,) for o in self.options))
        return format_html('{}<datalist id="{}">{}</datalist>', html, list_id, options)


class ScheduleForm(forms.ModelForm):
    """A schedule as `editor` may write it: Schedule.full_clean() applies the rules of django_q.guard to them."""

    editor: Any = None  # the requesting user, set by ScheduleAdmin.get_form

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.instance.editor = self.editor
        named = Schedule.objects.values_list("func", flat=True).distinct()
        options = offered(get_config().admin_funcs, named)
        for field in ("func", "hook"):
            if field in self.fields:
                self.fields[field].widget = ListedInput(options, self.fields[field].widget.attrs)


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "func", "schedule_type", "repeats", "cluster", "next_run", "last_run_link",
                    "last_result", "success")
    list_filter = ("next_run", "schedule_type", "cluster")
    search_fields = ("name", "func")
    list_display_links = ("id", "name")
    readonly_fields = ("last_run_link", "last_result", "success")
    actions = [run_now]
    form = ScheduleForm
    # The scheduler moves these while a change page is open. The page sends back
    # the values it showed, so that one left as shown is not saved: saving it
    # would put back a next run that has run already, and run it again.
    scheduler_fields = ("next_run", "repeats")

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if field is not None and db_field.name in self.scheduler_fields:
            field.show_hidden_initial = True
        return field

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        return type(form.__name__, (form,), {"editor": request.user})

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


def _decoded(payload: bytes) -> tuple[Any, str | None]:
    """The task in a package whose signature verifies with the current keys, or why there is none."""
    try:
        return unpack(bytes(payload), get_config().package_limit), None
    except PackageError as exc:
        return None, str(exc)


class PackageAdmin(admin.ModelAdmin):
    """Rows holding a package: its task is shown only when its signature verifies (nothing else is unpickled)."""
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def _task(self, obj: Any) -> tuple[Any, str | None]:
        if getattr(obj, "_decoded_pk", None) != obj.pk:
            obj._decoded, obj._decoded_pk = _decoded(obj.payload), obj.pk
        return obj._decoded

    @admin.display(description=_("task"))
    def task_name(self, obj: Any) -> str:
        task, problem = self._task(obj)
        return task.name if task else f"({problem})"

    @admin.display(description=_("func"))
    def task_func(self, obj: Any) -> str:
        task = self._task(obj)[0]
        return task.func_name if task else "-"

    @admin.display(description=_("group"))
    def task_group(self, obj: Any) -> str:
        task = self._task(obj)[0]
        return (task.group or "-") if task else "-"

    @admin.display(description=_("args"))
    def task_args(self, obj: Any) -> SafeString:
        task, problem = self._task(obj)
        return pre(task.args) if task else pre(f"({problem})")

    @admin.display(description=_("kwargs"))
    def task_kwargs(self, obj: Any) -> SafeString:
        task, problem = self._task(obj)
        return pre(task.kwargs) if task else pre(f"({problem})")

    @admin.display(description=_("size"))
    def size(self, obj: Any) -> str:
        size = getattr(obj, "size", None)  # a dead letter over package_limit keeps only its header
        if size is not None and size != len(obj.payload):
            return f"{size} B ({len(obj.payload)} B kept)"
        return f"{len(obj.payload)} B"


@admin.register(OrmQ)
class QueueAdmin(PackageAdmin):
    """The database broker's queue. Deleting a row drops its task (a running one still finishes)."""
    list_display = ("id", "task_name", "task_func", "task_group", "queue", "priority", "state", "running_on",
                    "attempts", "created")
    list_filter = ("queue", "leased", "created")
    search_fields = ("key",)
    fields = ("queue", "key", "task_name", "task_func", "task_group", "task_args", "task_kwargs", "priority",
              "state", "running_on", "attempts", "created", "size")
    readonly_fields = fields

    @admin.display(description=_("state"))
    def state(self, obj: OrmQ) -> str | Promise:

        state = visible_state(obj.leased, obj.visible, time.time())
        if state == LEASED:
            return _("cancelling") if obj.cancel else _("running") if obj.running else _("fetched")
        return _("deferred") if state == DELAYED else _("queued")

    @admin.display(description=_("running on"))
    def running_on(self, obj: OrmQ) -> str:

        info = RunningInfo.decode(bytes(obj.running) if obj.running is not None else None)
        return f"{info.cluster} {info.worker}" if info else "-"


admin.site.register(Dashboard, DashboardAdmin)


@admin.register(InFlight)
class InFlightAdmin(PageAdmin):
    """Tasks still in the broker of each cluster, read from the broker (either kind): queued, deferred, running.

    Users with the change permission of failed tasks may cancel them here.
    """

    LIMIT = 200  # tasks listed per cluster

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> Any:


        if not self.has_view_permission(request):
            raise PermissionDenied
        may_cancel = request.user.has_perm("django_q.change_failure")
        config = get_config()
        clusters = [config.name, *config.served_queues, *sorted(c for c in request.GET.getlist("cluster") if c)]
        if request.method == "POST" and "cancel" in request.POST:
            if not may_cancel:
                raise PermissionDenied
            task_id, cluster = request.POST["cancel"], request.POST.get("cluster") or None
            try:
                done = cancel(task_id, cluster)
            except BrokerError as exc:
                self.message_user(request, _("cannot cancel: %(error)s") % {"error": exc}, messages.ERROR)
            else:
                level = messages.SUCCESS if done else messages.WARNING
                text = _("cancelled task %(id)s") if done else _("task %(id)s is not queued or running any more")
                self.message_user(request, text % {"id": task_id}, level)
            return HttpResponseRedirect(request.get_full_path())
        listing, errors = [], []
        for cluster in dict.fromkeys(clusters):
            try:
                tasks = pending_tasks(cluster, self.LIMIT)
            except BrokerError as exc:
                errors.append(f"{cluster}: {exc}")
                continue
            for task in tasks:
                task.progress_text = describe(task.progress)
            size, statuses = look(cluster, config)
            summary = _("%(queued)s waiting, %(leased)s handed out; served by %(clusters)d cluster(s)") % {
                "queued": size.queued, "leased": size.leased, "clusters": len(statuses)}
            listing.append((cluster, tasks, summary))
        context = {
            **self.admin_site.each_context(request),
            "title": _("Queued and running tasks"),
            "opts": self.model._meta,
            "clusters": listing,
            "errors": errors,
            "may_cancel": may_cancel,
            "limit": self.LIMIT,
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/django_q/inflight.html", context)


def purge(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
    """Delete the selected dead letters for good."""
    count = queryset.delete()[0]
    modeladmin.message_user(request, _("%(count)d dead letter(s) purged.") % {"count": count}, messages.SUCCESS)


purge.short_description = _("Purge selected dead letters")  # type: ignore[attr-defined]
purge.allowed_permissions = ("delete",)  # type: ignore[attr-defined]


def requeue(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
    """Enqueue again the selected dead letters whose signature verifies with the current keys.

    A package whose signature still fails stays a dead letter: nothing the
    keys do not vouch for ever reaches a worker.
    """

    done, kept = send_back(queryset)
    for letter, reason in kept:
        modeladmin.message_user(request, _("%(letter)s not requeued: %(error)s") % {"letter": letter,
                                                                                 "error": reason}, messages.WARNING)
    if done:
        modeladmin.message_user(request, _("%(count)d dead letter(s) requeued.") % {"count": done}, messages.SUCCESS)


requeue.short_description = _("Requeue selected dead letters that verify now")  # type: ignore[attr-defined]
requeue.allowed_permissions = ("requeue",)  # type: ignore[attr-defined]


@admin.register(DeadLetter)
class DeadLetterAdmin(PackageAdmin):
    list_display = ("id", "queue", "task_name", "task_func", "reason_short", "verifies", "size", "created")
    list_filter = ("queue", "created")
    search_fields = ("queue", "broker_id", "reason")
    date_hierarchy = "created"
    fields = ("queue", "broker_id", "reason_shown", "created", "verifies", "size", "task_name", "task_func",
              "task_group", "task_args", "task_kwargs")
    readonly_fields = fields
    actions = [requeue, purge]

    def has_requeue_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("django_q.change_deadletter")

    def get_actions(self, request: HttpRequest, action_location: Any = None) -> dict:
        # Django 6.1 says where the actions show (action_location); Django 5.2 has no such argument.
        where = {} if action_location is None else {"action_location": action_location}
        actions = super().get_actions(request, **where)
        actions.pop("delete_selected", None)  # purge does the same without the extra page
        return actions

    @admin.display(description=_("reason"))
    def reason_short(self, obj: DeadLetter) -> str:
        return short(obj.reason)

    @admin.display(description=_("reason"))
    def reason_shown(self, obj: DeadLetter) -> SafeString:
        return pre(obj.reason)

    @admin.display(boolean=True, description=_("verifies now"))
    def verifies(self, obj: DeadLetter) -> bool:
        """Whether the signature holds with the current SECRET_KEY or its fallbacks."""
        try:
            verify(bytes(obj.payload), get_config().package_limit)
        except PackageError:
            return False
        return True
