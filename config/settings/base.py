"""Settings read from the environment, with safe defaults for local use.

Unset ``DATABASE_URL`` means the embedded SQLite file, so a fresh clone runs with no
server. A ``postgres://`` URL switches to PostgreSQL through psycopg 3 with Django's
connection pool.
"""

import ipaddress
import re
import warnings
from datetime import timedelta
from pathlib import Path

import django_stubs_ext
import environ
from corsheaders.defaults import default_headers as cors_default_headers
from django.core.exceptions import ImproperlyConfigured

from config.development_secret import development_secret_key
from core.rls import reset_identity

# Lets generic classes such as QuerySet[User] be subscripted at runtime, for mypy.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DJANGO_DEBUG", default=True)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("Set DJANGO_SECRET_KEY: only development (DEBUG on) makes its own key.")
    # A random key of this checkout's own, made on first run (config/development_secret.py).
    SECRET_KEY = development_secret_key(
        Path(env.str("DJANGO_DEV_SECRET_FILE", default=str(BASE_DIR / ".dev-secret-key")))
    )
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])

# No django.contrib.admin: the API is admin-free, operators use management commands
# (manage.py delete_user, changepassword, createsuperuser, …).
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    # Outstanding and revoked refresh tokens: logout, and rotation's used-up tokens.
    "rest_framework_simplejwt.token_blacklist",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "accounts",
    "conversations",
    "corsheaders",
    # Metrics and security-log hooks (core/apps.py); no models.
    "core.apps.CoreConfig",
]

MIDDLEWARE = [
    # Outside everything else: no answer to HEAD carries a body (gunicorn would send it).
    "core.middleware.HeadWithoutBodyMiddleware",
    # Counts and times every answer, including those of the middleware below.
    "core.metrics.MetricsMiddleware",
    "core.middleware.RequestIdMiddleware",
    # Before anything that reads the host: Django's own refusal, with DEBUG on, is its debug page.
    "core.middleware.AllowedHostMiddleware",
    # The security line of every 401, 403 and 429, whichever layer answers.
    "core.audit.RefusalLogMiddleware",
    # Before anything that can answer, so that errors and 413s carry CORS headers too.
    "corsheaders.middleware.CorsMiddleware",
    "core.middleware.ApiErrorMiddleware",
    # Reads of GET requests to a replica that has the caller's writes (DATABASE_REPLICA_URLS).
    "core.middleware.ReplicaReadsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# The debug page and error reports hide database and cache URLs too (core/debug_page.py).
DEFAULT_EXCEPTION_REPORTER_FILTER = "core.debug_page.ExceptionReporterFilter"

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
                # How long the pool retries a lost connection before it gives up on it;
                # psycopg_pool's default is 300 s. Its retries back off exponentially (1, 2,
                # 4, … s), so after an outage of T seconds it may next try up to T seconds
                # after the server is back, answering 503 all that while (measured after a
                # 90 s outage: 503s until 32 s after the restart). Giving up after 5 s (the
                # Retry-After of those 503s) lets the next request that finds no connection
                # start a fresh, immediate attempt (measured: serving again within 1 s of the
                # restart after 10, 40 and 90 s outages; see test_live_outage.py).
                "reconnect_timeout": 5.0,
                # Clears the row-level-security identity a request gave the connection
                # before the pool hands it to anyone else (core/rls.py).
                "reset": reset_identity,
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

# Hot standbys for reads (core/replicas.py), optional: reads of GET requests and of the
# selectors go to one that has replayed the reader's last write, else to the primary. Serving
# processes connect to them with the URLs' roles, so name the serving role there when
# DATABASE_APP_URL is used. Requires REDIS_URL: the writes' positions are shared there.
DATABASE_REPLICAS: list[str] = []
for number, replica_url in enumerate(env.list("DATABASE_REPLICA_URLS", default=[]), start=1):
    replica = database_from_url(replica_url)
    if replica["ENGINE"] != "django.db.backends.postgresql":
        raise ImproperlyConfigured("DATABASE_REPLICA_URLS must name PostgreSQL hot standbys.")
    # A replica that does not answer is skipped after this wait, its reads going to the primary.
    replica["OPTIONS"]["pool"]["timeout"] = env.float("DATABASE_REPLICA_POOL_TIMEOUT", default=1.0)  # type: ignore[index]
    # A replica cut off by the network (no refusal, no answer) fails a connection attempt, a
    # read or an idle pooled connection within seconds, not when TCP gives up minutes later.
    # (The URL's own query parameters win.)
    network_timeouts = {
        "connect_timeout": 2,
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": 10_000,  # ms
    }
    replica["OPTIONS"] = {**network_timeouts, **replica["OPTIONS"]}  # type: ignore[dict-item]
    # Never created or migrated as a database of its own, in tests either: it is the primary's.
    replica["TEST"] = {"MIRROR": "default"}
    DATABASES[f"replica{number}"] = replica
    DATABASE_REPLICAS.append(f"replica{number}")
# A replica further behind than this (seconds; core/replicas.py says how it is measured) serves no reads.
DATABASE_REPLICA_MAX_LAG = env.float("DATABASE_REPLICA_MAX_LAG", default=10.0)
if DATABASE_REPLICAS:
    DATABASE_ROUTERS = ["core.replicas.ReplicaRouter"]

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
# Largest answer body: a list page ends early (its next link goes on from there), a history
# window drops its oldest messages (conversations/sizes.py).
API_MAX_RESPONSE_BYTES = env.int("API_MAX_RESPONSE_BYTES", default=8 * 1024 * 1024)

ALLOW_REGISTRATION = env.bool("DJANGO_ALLOW_REGISTRATION", default=True)

# PostgreSQL's text search configuration for full-text search (conversations/search.py): the
# stemming and stop words of one language. Migration 0012 builds the stored vectors with it;
# changing it later means rebuilding them (README, Search).
SEARCH_CONFIG = env.str("CONVERSATIONS_SEARCH_CONFIG", default="english")
if not re.fullmatch(r"[a-z_][a-z0-9_]*", SEARCH_CONFIG):
    raise ImproperlyConfigured("CONVERSATIONS_SEARCH_CONFIG must be a text search configuration's name.")

# How many proxies in front of the service append to X-Forwarded-For (core/client.py);
# 0: the header is ignored and the client is the connection's peer.
API_TRUSTED_PROXIES = env.int("API_TRUSTED_PROXIES", default=0)
if API_TRUSTED_PROXIES < 0:
    raise ImproperlyConfigured("API_TRUSTED_PROXIES must be 0 or more.")


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
    # Deny by default; a user_id in a request must be the token's own (views that need no
    # token, such as registration, set their own permissions).
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "accounts.permissions.UserIdIsCaller",
    ],
    "DEFAULT_RENDERER_CLASSES": [
        "core.renderers.SafeJSONRenderer",
        *(["rest_framework.renderers.BrowsableAPIRenderer"] if BROWSABLE_API else []),
    ],
    "DEFAULT_PARSER_CLASSES": ["core.parsers.SafeJSONParser"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    # DRF's, knowing anonymous clients by core/client.py's address (core/throttling.py).
    "DEFAULT_THROTTLE_CLASSES": [
        "core.throttling.UserRateThrottle",
        "core.throttling.AnonRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "user": throttle_rate("API_THROTTLE_USER", "1200/minute"),
        "anon": throttle_rate("API_THROTTLE_ANON", "60/minute"),
        # POST auth/token/, per client address and per username, on top of "anon".
        "login": throttle_rate("API_THROTTLE_LOGIN", "10/minute"),
        # GET export/ per user, on top of "user": each one reads all of the user's messages.
        "export": throttle_rate("API_THROTTLE_EXPORT", "10/hour"),
    },
    "EXCEPTION_HANDLER": "core.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # The contract's timestamps: UTC, always with microseconds.
    "DATETIME_FORMAT": "%Y-%m-%dT%H:%M:%S.%fZ",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    # No ?format= renderer switch: the history's `format` names a model API, not a renderer.
    "URL_FORMAT_OVERRIDE": None,
}

SIMPLE_JWT = {
    "ALGORITHM": "HS256",
    "SIGNING_KEY": env.str("JWT_SIGNING_KEY", default=SECRET_KEY),
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=env.int("JWT_ACCESS_TOKEN_LIFETIME", default=15 * 60)),
    "REFRESH_TOKEN_LIFETIME": timedelta(seconds=env.int("JWT_REFRESH_TOKEN_LIFETIME", default=7 * 24 * 3600)),
    "ROTATE_REFRESH_TOKENS": env.bool("JWT_ROTATE_REFRESH_TOKENS", default=False),
    # Acts only when rotating: the refresh token just traded in is revoked, not left usable.
    "BLACKLIST_AFTER_ROTATION": True,
    # Tokens carry a digest of the password hash, compared with the user row the token check
    # loads anyway: changing the password revokes every earlier access and refresh token.
    "CHECK_REVOKE_TOKEN": True,
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
    # Operation ids and tags without the version: conversations_list, not v1_conversations_list.
    "SCHEMA_PATH_PREFIX": r"/api/v[0-9]+",
    # A message's role, in the messages and in the history's items alike (conversations/schema.py).
    "ENUM_NAME_OVERRIDES": {"RoleEnum": "conversations.models.Role"},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "config.schema.add_error_responses",
    ],
}
# Swagger UI's online validator badge would load an image from validator.swagger.io, handing it
# the schema's URL, on any host but localhost. drf-spectacular's BaseLayout shows no badge;
# switched off as well, so a change of layout cannot make the docs call out.
SPECTACULAR_SETTINGS["SWAGGER_UI_SETTINGS"] = {"deepLinking": True, "validatorUrl": None}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "core.audit.JsonFormatter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler"},
        "json_stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "json"},
    },
    "root": {"handlers": ["console"], "level": env.str("DJANGO_LOG_LEVEL", default="INFO")},
    # The audit trail and the security log (core/audit.py): JSON lines on stdout, only there.
    "loggers": {
        "audit": {"handlers": ["json_stdout"], "level": "INFO", "propagate": False},
        "security": {"handlers": ["json_stdout"], "level": "INFO", "propagate": False},
    },
}

# Django's cache, which the throttles count in: Redis when REDIS_URL is set (shared by every
# worker process, as throttling needs), else this process's memory.
REDIS_URL = env.str("REDIS_URL", default="")
if DATABASE_REPLICAS and not REDIS_URL:
    raise ImproperlyConfigured(
        "DATABASE_REPLICA_URLS needs REDIS_URL: every app server must see each user's last write there."
    )
if DATABASE_REPLICAS and any(separator in REDIS_URL for separator in ",;"):
    # Django's cache would read from the Redis replicas named after the first, which may not
    # have a user's last write position yet.
    raise ImproperlyConfigured("With DATABASE_REPLICA_URLS, REDIS_URL must name one Redis server.")
# A Redis that stops answering (a partition, not a refused connection) costs a request this
# many seconds and then a 503, instead of holding the worker until TCP gives up.
REDIS_TIMEOUT = env.float("REDIS_TIMEOUT", default=1.0)
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"socket_connect_timeout": REDIS_TIMEOUT, "socket_timeout": REDIS_TIMEOUT},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# CORS for the chat front end (django-cors-headers), under /api/ only. Bearer tokens, no
# cookies: credentials stay off.
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])
CORS_URLS_REGEX = r"^/api/.*$"
CORS_ALLOW_HEADERS = (*cors_default_headers, "idempotency-key", "if-none-match", "x-request-id")
CORS_EXPOSE_HEADERS = ["X-Request-ID", "Idempotent-Replayed", "ETag", "Retry-After"]

# /metrics (core/metrics.py): loopback clients, these networks, or this bearer token.
METRICS_ALLOW_LOOPBACK = env.bool("METRICS_ALLOW_LOOPBACK", default=True)
METRICS_ALLOWED_NETWORKS = env.list("METRICS_ALLOWED_NETWORKS", default=[])
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
for _network in METRICS_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError as _exc:
        raise ImproperlyConfigured(f"METRICS_ALLOWED_NETWORKS: {_network!r} is not a network.") from _exc
