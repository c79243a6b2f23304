"""The owner's all-rows policy in a form the planner takes to filter nothing.

PostgreSQL ORs the table owner's all-rows policy (migration 0004, ``rls.all_users``) with the
per-user one into every query of the owner: what ``DATABASE_URL`` names, so an agent's
process by default and all a single-role deployment has. For the serving role the per-user
clause and the query's own ``user_id = …`` merge into a one-time filter that leaves the row
estimate alone; the owner's OR cannot merge, and its estimate is what the OR'ed terms make of
it. Migration 0007's sub-select is an InitPlan whose boolean the planner guesses passes half
the rows, so on a conversation whose messages are spread over the table (as appends leave
them) walking ``(conversation_id, seq)`` backwards to the limit looked dearer than
intersecting two indexes and sorting the whole conversation: ``history_load(50)`` on a
1,000-message conversation of 1,000,000 messages took 2.7 ms as the owner against 0.19 ms as
the serving role in ``EXPLAIN ANALYZE``.

Written as a null test, ``(SELECT NULLIF(… = 'on', false)) IS NOT NULL``, the planner's guess
for it is that nearly every row passes (its default for a null test it has no statistics
for), which is the truth in both modes: the application's queries always filter by the user
whose rows the policy lets through, and with ``app.all_users`` on every row passes. The
owner's estimates are then the serving role's and so are its plans. What the policy allows
is unchanged: true only while ``app.all_users`` is exactly ``'on'``, and still one value per
statement.
"""

import importlib

from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

as_initplan = importlib.import_module("conversations.migrations.0007_all_rows_policy_as_initplan")

AS_A_NULL_TEST = "(SELECT NULLIF(current_setting('app.all_users', true) = 'on', false)) IS NOT NULL"


def forward(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    as_initplan.set_all_rows_policy(schema_editor, AS_A_NULL_TEST)


def backward(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    as_initplan.set_all_rows_policy(schema_editor, as_initplan.AS_AN_INITPLAN)


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0008_agent_history"),
    ]

    operations = [
        migrations.RunPython(forward, backward, elidable=False),
    ]
