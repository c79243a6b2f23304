from django.contrib.auth.hashers import UNUSABLE_PASSWORD_PREFIX
from django.db import migrations, models

BATCH = 500


def mark_existing_external_users(apps, schema_editor):
    """Accounts made for external tokens before this field: the ``ext-<id hex>`` name that
    registration refuses, and no usable password (staff and superusers stay local)."""
    User = apps.get_model("accounts", "User")
    candidates = User.objects.filter(
        username__startswith="ext-",
        password__startswith=UNUSABLE_PASSWORD_PREFIX,
        is_staff=False,
        is_superuser=False,
    ).values_list("id", "username")
    external_ids = [user_id for user_id, username in candidates.iterator() if username == f"ext-{user_id.hex}"]
    for start in range(0, len(external_ids), BATCH):  # within every backend's parameter limit
        User.objects.filter(id__in=external_ids[start : start + BATCH]).update(is_external=True)


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0002_username_unique_regardless_of_case'),
    ]

    operations = [
        migrations.AddField(
            model_name='user',
            name='is_external',
            field=models.BooleanField(default=False, editable=False, help_text='Created for a token of the external identity provider.'),
        ),
        # Backwards, removing the field is all there is to undo.
        migrations.RunPython(mark_existing_external_users, migrations.RunPython.noop),
    ]
