from django.db import migrations, models
from django.db.models import Count
from django.db.models.functions import Lower


def refuse_usernames_that_differ_only_in_case(apps, schema_editor):
    """Name the accounts the new constraint would refuse, rather than fail on an IntegrityError.

    Which of two such accounts keeps its name is the operator's decision, so nothing is renamed
    here: rename one (or delete it, ``manage.py delete_user``) and migrate again.
    """
    User = apps.get_model("accounts", "User")
    clashes = (
        User.objects.using(schema_editor.connection.alias)
        .values(folded=Lower("username"))
        .annotate(accounts=Count("id"))
        .filter(accounts__gt=1)
        .values_list("folded", flat=True)
    )
    folded = sorted(clashes)
    if folded:
        raise RuntimeError(
            "Usernames must be unique regardless of case, and these are held by several accounts: "
            + ", ".join(repr(name) for name in folded)
            + ". Rename or delete (manage.py delete_user) all but one of each, then migrate again."
        )


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(refuse_usernames_that_differ_only_in_case, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="user",
            constraint=models.UniqueConstraint(
                Lower("username"),
                name="accounts_user_username_lower_unique",
                violation_error_message="A user with that username already exists.",
            ),
        ),
    ]
