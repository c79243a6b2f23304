from django.apps import AppConfig
from django.db.models.signals import post_migrate


class ConversationsConfig(AppConfig):
    name = "conversations"

    def ready(self) -> None:
        from . import checks, roles  # noqa: F401 (registers the system checks)

        post_migrate.connect(roles.grant_serving_role, sender=self, dispatch_uid="grant_serving_role")
