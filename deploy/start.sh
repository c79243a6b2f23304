#!/bin/sh
# The container's command: migrate as DATABASE_URL's role (the table owner; migrating also
# grants DATABASE_APP_URL's role its privileges), then serve under gunicorn with uvicorn
# workers, which connect as DATABASE_APP_URL's role when it is set (config/asgi.py).
set -eu
python manage.py migrate --noinput
exec gunicorn -c deploy/gunicorn_conf.py -k uvicorn.workers.UvicornWorker config.asgi:application
