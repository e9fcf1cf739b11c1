"""The real local receivers (HTTP, SMTP) of the notifier tests, shared with the alert tests."""

from tests.scheduling.test_notify import receiver, silent_url, smtp

__all__ = ["receiver", "silent_url", "smtp"]
