from django.apps import AppConfig
from django.db.models.signals import post_migrate, post_save


class ConversationsConfig(AppConfig):
    name = "conversations"

    def ready(self) -> None:
        from core import metrics

        from . import checks, roles  # noqa: F401 (registers the system checks)
        from .models import Message

        post_migrate.connect(roles.grant_serving_role, sender=self, dispatch_uid="grant_serving_role")
        # Every committed insert, whoever appended it (REST API, agent API, import).
        post_save.connect(metrics.count_appended_message, sender=Message, dispatch_uid="metrics.messages")
