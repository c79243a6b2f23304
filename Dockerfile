FROM python:3.11-slim

# The settings module the image runs with; collectstatic runs with it too, so the static
# files (browsable API, Swagger UI) are collected as they will be served (whitenoise).
ARG DJANGO_SETTINGS_MODULE=config.settings.production
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=${DJANGO_SETTINGS_MODULE}
WORKDIR /app

COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY . .
RUN DJANGO_SECRET_KEY=build-only-not-a-secret DJANGO_ALLOWED_HOSTS=build.invalid python manage.py collectstatic --noinput

RUN useradd --system --no-create-home app
USER app
EXPOSE 8000
# Ready when the database answers; python, since the slim image has no curl.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4).status != 200)"]
# Migrate as the owner role, then gunicorn's gthread workers on config.wsgi (deploy/start.sh).
CMD ["deploy/start.sh"]
