"""Settings read from the environment, with safe defaults for local use.

Unset ``DATABASE_URL`` means the embedded SQLite file, so a fresh clone runs with no
server. A ``postgres://`` URL switches to PostgreSQL through psycopg 3 with Django's
connection pool.
"""

import warnings
from datetime import timedelta
from pathlib import Path

import django_stubs_ext
import environ
from django.core.exceptions import ImproperlyConfigured

# Lets classes such as admin.ModelAdmin[Conversation] be subscripted at runtime, for mypy.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env")

INSECURE_DEFAULT_SECRET_KEY = "django-insecure-local-development-key-do-not-deploy"  # noqa: S105

DEBUG = env.bool("DJANGO_DEBUG", default=True)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default=INSECURE_DEFAULT_SECRET_KEY)
if not DEBUG and SECRET_KEY == INSECURE_DEFAULT_SECRET_KEY:
    raise ImproperlyConfigured("Set DJANGO_SECRET_KEY: the default key is for local development only.")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "accounts",
    "conversations",
]

MIDDLEWARE = [
    "config.middleware.RequestIdMiddleware",
    "config.middleware.ApiErrorMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def database_from_url(url: str) -> dict[str, object]:
    """Build the DATABASES entry for ``url``, tuned for the backend it names."""
    database: dict[str, object] = env.db_url_config(url)
    options: dict[str, object] = dict(database.get("OPTIONS", {}))  # type: ignore[call-overload]
    if database["ENGINE"] == "django.db.backends.postgresql":
        # Django's psycopg 3 pool replaces persistent connections; it needs CONN_MAX_AGE=0.
        options.setdefault(
            "pool",
            {
                "min_size": env.int("DATABASE_POOL_MIN_SIZE", default=2),
                "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=10),
                "timeout": env.float("DATABASE_POOL_TIMEOUT", default=10.0),
            },
        )
        database["CONN_MAX_AGE"] = 0
    elif database["ENGINE"] == "django.db.backends.sqlite3":
        # IMMEDIATE takes the write lock at BEGIN, so concurrent appends queue instead of
        # failing with "database is locked" half-way through a transaction.
        options.setdefault("transaction_mode", "IMMEDIATE")
        options.setdefault("timeout", 20)
        options.setdefault("init_command", "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
    database["OPTIONS"] = options
    return database


DATABASES = {
    "default": database_from_url(env.str("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")),
}

# A less privileged role for serving, optional: it owns no table and is no superuser, so
# row-level security binds it and it cannot alter the schema. Serving processes (config.wsgi,
# config.asgi) connect as it when it is configured; manage.py (migrations, maintenance
# commands) always connects as DATABASE_URL's role, which owns the tables. Migrating grants
# this role what it needs.
DATABASE_APP_URL = env.str("DATABASE_APP_URL", default="")
DATABASE_SERVING_ROLE = str(env.db_url_config(DATABASE_APP_URL)["USER"]) if DATABASE_APP_URL else ""
if DATABASE_APP_URL and env.str("DJANGO_DATABASE_ROLE", default="owner") == "app":
    DATABASES["default"] = database_from_url(DATABASE_APP_URL)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Docker images collect static files; development serves them from the packages (below),
# so the missing directory is expected there.
warnings.filterwarnings("ignore", message="No directory at")
# Serve the browsable API's and Swagger UI's assets straight from the installed packages,
# with DEBUG off too and without a collectstatic step; no CDN is ever involved.
WHITENOISE_USE_FINDERS = True

# Largest request body accepted; larger ones get 413 before they are read.
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = API_MAX_BODY_BYTES

ALLOW_REGISTRATION = env.bool("DJANGO_ALLOW_REGISTRATION", default=True)


def throttle_rate(name: str, default: str) -> str | None:
    """A DRF rate string from the environment; ``none`` switches the throttle off."""
    rate: str = env.str(name, default=default)
    return None if rate.strip().lower() == "none" else rate


# The browsable API with session login at /api-auth/: a development aid, on with DEBUG.
BROWSABLE_API = DEBUG

REST_FRAMEWORK = {
    # JWT first: DRF answers 401 with its WWW-Authenticate header only for the first class.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.JWTAuthentication",
        *(["rest_framework.authentication.SessionAuthentication"] if BROWSABLE_API else []),
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": [
        "config.renderers.SafeJSONRenderer",
        *(["rest_framework.renderers.BrowsableAPIRenderer"] if BROWSABLE_API else []),
    ],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.UserRateThrottle",
        "rest_framework.throttling.AnonRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "user": throttle_rate("API_THROTTLE_USER", "1200/minute"),
        "anon": throttle_rate("API_THROTTLE_ANON", "60/minute"),
    },
    "EXCEPTION_HANDLER": "config.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # The contract's timestamps: UTC, always with microseconds.
    "DATETIME_FORMAT": "%Y-%m-%dT%H:%M:%S.%fZ",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SIMPLE_JWT = {
    "ALGORITHM": "HS256",
    "SIGNING_KEY": env.str("JWT_SIGNING_KEY", default=SECRET_KEY),
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=env.int("JWT_ACCESS_TOKEN_LIFETIME", default=15 * 60)),
    "REFRESH_TOKEN_LIFETIME": timedelta(seconds=env.int("JWT_REFRESH_TOKEN_LIFETIME", default=7 * 24 * 3600)),
    "ROTATE_REFRESH_TOKENS": env.bool("JWT_ROTATE_REFRESH_TOKENS", default=False),
    "AUTH_HEADER_TYPES": ("Bearer",),
    "USER_ID_FIELD": "id",
    "USER_ID_CLAIM": "user_id",
    "UPDATE_LAST_LOGIN": False,
}

# Tokens of another service's identity provider; refused unless a key is configured.
JWT_EXTERNAL = {
    "KEY": env.str("JWT_EXTERNAL_KEY", default="") or None,
    "ALGORITHM": env.str("JWT_EXTERNAL_ALGORITHM", default="HS256"),
    "ISSUER": env.str("JWT_EXTERNAL_ISSUER", default="") or None,
    "AUDIENCE": env.str("JWT_EXTERNAL_AUDIENCE", default="") or None,
    "USER_ID_CLAIM": env.str("JWT_EXTERNAL_USER_ID_CLAIM", default="sub"),
    "LEEWAY_SECONDS": 30,
}
if JWT_EXTERNAL["ALGORITHM"] not in {"HS256", "RS256", "ES256"}:
    raise ImproperlyConfigured("JWT_EXTERNAL_ALGORITHM must be HS256, RS256 or ES256.")

SPECTACULAR_SETTINGS = {
    "TITLE": "Conversation history API",
    "DESCRIPTION": "Stores the conversations between users and an AI assistant.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # PATCH bodies keep their required fields (a rename needs its title).
    "COMPONENT_SPLIT_PATCH": False,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("DJANGO_LOG_LEVEL", default="INFO")},
}
