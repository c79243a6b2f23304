"""The agent's figures (target 5, and the adapters' rows 11) in a process of their own, as an agent would run:
``python -m bench.agent USER_ID CONVERSATION_ID ROUNDS`` prints one JSON line.

The harness runs it once with the serving role (``DJANGO_DATABASE_ROLE=app``, as
``config.wsgi`` connects) and once with ``DATABASE_URL``'s role (the tables' owner, what a
process with the default settings gets), since row-level security's policies differ by role.
Control P always uses ``DATABASE_URL`` (its table is created there).
"""

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
    from accounts.models import User
    from bench import adapters, inprocess

    user = User.objects.get(pk=user_id)
    figures = inprocess.agent_comparison(
        database_url=os.environ["DATABASE_URL"], user=user, conversation_id=conversation_id, repeat=rounds
    )
    figures["adapters"] = adapters.adapter_comparison(
        database_url=os.environ["DATABASE_URL"], user=user, conversation_id=conversation_id, repeat=rounds
    )
    print("BENCH_AGENT " + json.dumps(figures))


if __name__ == "__main__":
    main()
