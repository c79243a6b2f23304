from django.apps import AppConfig


class CoreConfig(AppConfig):
    """The plumbing under the apps (audit, metrics, errors, middleware, row-level security), no
    models: connects the operational hooks once the app registry is ready, for every process
    (servers, the agent, management commands)."""

    name = "core"
    # The label the system checks' ids carry (operations.W001).
    label = "operations"
    verbose_name = "Operations"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_login_failed
        from django.db.backends.signals import connection_created

        from core import audit, checks, metrics  # noqa: F401 (checks registers itself)

        connection_created.connect(
            metrics.instrument_connection, dispatch_uid="metrics.instrument_connection"
        )
        user_login_failed.connect(audit.login_failed, dispatch_uid="audit.login_failed")
