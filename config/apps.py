from django.apps import AppConfig


class OperationsConfig(AppConfig):
    """Not an app of its own: connects the operational hooks (metrics, security log) once
    the app registry is ready, for every process (servers, the agent, management commands)."""

    name = "config"
    label = "operations"
    verbose_name = "Operations"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_login_failed
        from django.db.backends.signals import connection_created
        from django.db.models.signals import post_save

        from config import audit, checks, metrics  # noqa: F401 (checks registers itself)
        from conversations.models import Message

        connection_created.connect(
            metrics.instrument_connection, dispatch_uid="metrics.instrument_connection"
        )
        post_save.connect(metrics.count_appended_message, sender=Message, dispatch_uid="metrics.messages")
        user_login_failed.connect(audit.login_failed, dispatch_uid="audit.login_failed")
