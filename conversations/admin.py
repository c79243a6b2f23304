from django.contrib import admin

from .models import Conversation, Message


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin[Conversation]):
    list_display = ["id", "user", "title", "message_count", "updated_at"]
    list_select_related = ["user"]
    raw_id_fields = ["user"]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin[Message]):
    list_display = ["id", "conversation", "seq", "role", "created_at"]
    raw_id_fields = ["conversation", "user"]
    readonly_fields = ["seq", "created_at"]
