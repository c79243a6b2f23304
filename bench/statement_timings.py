"""The hand-written data statements against their ORM twins, in a process of its own as the
serving role (as the service runs them): ``python -m bench.statement_timings USER_ID
CONVERSATION_ID ROUNDS`` prints one JSON line (``bench.inprocess.statement_figures``)."""

import json
import logging
import os
import sys


def main() -> None:
    user_id, conversation_id, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()
    logging.getLogger("audit").setLevel(logging.WARNING)
    from django.db import connection

    from accounts.models import User
    from bench import inprocess

    user = User.objects.get(pk=user_id)
    figures = inprocess.statement_figures(user=user, conversation_id=conversation_id, rounds=rounds)
    figures["database_role"] = connection.settings_dict.get("USER")
    print("BENCH_STATEMENTS " + json.dumps(figures))


if __name__ == "__main__":
    main()
