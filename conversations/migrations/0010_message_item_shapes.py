"""The shapes of the agent-framework items a message was stored from (the OpenAI Agents SDK
session of conversations/integrations): a nullable column, added and dropped in place on both
databases (no table rebuild on SQLite, so migration 0002's triggers stay)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0009_all_rows_policy_as_null_test"),
    ]

    operations = [
        migrations.AddField(
            model_name="message",
            name="item_shapes",
            field=models.JSONField(blank=True, null=True),
        ),
    ]
