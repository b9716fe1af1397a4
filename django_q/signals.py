"""Signals sent around a task's life. Receivers get keyword arguments only."""

from django.dispatch import Signal

#: before a task is sent to the broker: task (TaskPackage)
pre_enqueue = Signal()
#: in the worker, before the function is called: func (the callable), task (TaskPackage)
pre_execute = Signal()
#: in the monitor, after the result is saved: task (the Task model instance)
post_execute = Signal()
#: after a failed task is saved (in the cluster; in the caller in sync mode): task (the Task model instance);
#: a failure is a task that raised, could not be imported, passed its timeout, lost its worker or reached
#: max_attempts (not a cancelled task, not an attempt its retry policy runs again)
task_failed = Signal()
#: in a cluster process once it started: proc_name (str)
post_spawn = Signal()
