import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
# Serve as DATABASE_APP_URL's role when one is configured (see settings).
os.environ.setdefault("DJANGO_DATABASE_ROLE", "app")

application = get_wsgi_application()
