#!/bin/sh
# The container's command: migrate as DATABASE_URL's role (the table owner; migrating also
# grants DATABASE_APP_URL's role its privileges), then serve config.wsgi under gunicorn with
# the worker class of deploy/gunicorn_conf.py (gthread: WEB_WORKERS x WEB_THREADS), whose
# workers connect as DATABASE_APP_URL's role when it is set (config/wsgi.py).
set -eu
python manage.py migrate --noinput
exec gunicorn -c deploy/gunicorn_conf.py config.wsgi:application
