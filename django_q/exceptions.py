"""The one error tree of Django Q: every error it raises derives from DjangoQError."""

from django.core.exceptions import ImproperlyConfigured


class DjangoQError(Exception):
    """Base of every error Django Q raises."""


class ConfigurationError(DjangoQError, ImproperlyConfigured):
    """A Q_CLUSTER setting is unknown or has a value of the wrong kind."""


class UnsupportedBroker(ConfigurationError):
    """Q_CLUSTER selects a broker of django-q / django-q2 that Django Q does not have."""


class MissingExtra(ConfigurationError):
    """A feature is used whose optional package is not installed; the message names the pip line of its extra."""


class TaskTypeError(DjangoQError, TypeError):
    """A task's function or arguments cannot be sent to a worker."""


class InvalidPriority(TaskTypeError, ValueError):
    """A priority that is not a whole number from -100 to 100."""


class BatchMismatch(DjangoQError, ValueError):
    """A batch enqueue got a different number of keys than packages."""


class ScheduleError(DjangoQError, ValueError):
    """A schedule cannot be run as stored: a bad type, cron expression, interval or argument text."""


class PackageError(DjangoQError):
    """A package read from a broker cannot be trusted or read."""


class BadSignature(PackageError):
    """The package was not signed with this project's SECRET_KEY (or a fallback)."""


class PackageTooLarge(PackageError):
    """The package is over the configured package_limit."""


class CorruptPackage(PackageError):
    """The signature holds but the body does not decompress or deserialize."""


class BrokerError(DjangoQError):
    """The broker failed to carry out an operation."""


class BrokerConnectionError(BrokerError):
    """The broker cannot be reached."""


class WorkerLost(DjangoQError):
    """Names, in results, a failure the task did not raise: a timeout kill or a worker that died."""


class TaskCancelled(BaseException):
    """Raised inside a running task when cancel() asks it to stop.

    A BaseException, outside the DjangoQError tree, so that a task's own
    `except Exception` does not swallow it.
    """
