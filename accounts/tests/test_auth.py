"""The Authentication section of the API contract: register, token, refresh, me, and the
Bearer tokens every other endpoint takes (own simplejwt tokens and external ones)."""

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from datetime import timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.contrib.auth.hashers import make_password
from django.db import connection, connections
from django.urls import reverse
from rest_framework import status
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken
from rest_framework_simplejwt.utils import get_md5_hash_password

from accounts.models import User
from conversations.tests.factories import TEST_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

WWW_AUTHENTICATE = 'Bearer realm="api"'
EXTERNAL_SECRET = "the-front-end-identity-providers-shared-secret"
ISSUER = "https://id.chat.example/"
AUDIENCE = "conversation-history"
THREADS = 8

# pytest-django's SQLite test database is in memory with a shared cache, where a writer
# meets "database table is locked" at once (SQLITE_LOCKED is not retried by the busy
# timeout), so concurrent requests fail there for reasons a real SQLite file does not have.
# The race paths are also tested without threads in test_services.py, on both databases.
real_concurrency = pytest.mark.skipif(
    connection.vendor == "sqlite",
    reason="SQLite's shared-cache in-memory test database cannot take concurrent writers",
)


# Helpers ----------------------------------------------------------------------------------


def get_me(token):
    return APIClient().get(reverse("auth-me"), HTTP_AUTHORIZATION=f"Bearer {token}")


def assert_refused(response):
    assert response.status_code == status.HTTP_401_UNAUTHORIZED
    assert response["WWW-Authenticate"] == WWW_AUTHENTICATE
    assert "detail" in response.json()


def configure_external(settings, **overrides):
    """JWT_EXTERNAL for an HS256 provider with no issuer or audience check, plus overrides.

    Every key is set, so JWT_EXTERNAL_* variables in the environment running the tests do
    not leak in.
    """
    settings.JWT_EXTERNAL = {
        "KEY": EXTERNAL_SECRET,
        "ALGORITHM": "HS256",
        "ISSUER": None,
        "AUDIENCE": None,
        "USER_ID_CLAIM": "sub",
        "LEEWAY_SECONDS": 30,
        **overrides,
    }


def external_token(sub, *, key=EXTERNAL_SECRET, algorithm="HS256", expires_in=300, **claims):
    payload = {"sub": sub, **claims}
    if expires_in is not None:
        payload["exp"] = int(time.time()) + expires_in
    return jwt.encode(payload, key, algorithm=algorithm)


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made_token(header, payload, hmac_key=None):
    """A token PyJWT would refuse to make: ``alg: none``, or HS256 keyed with a public key."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    signature = b""
    if hmac_key is not None:
        signature = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def public_pem(private_key):
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def mapped_id(sub, iss=""):
    return uuid.uuid5(uuid.NAMESPACE_URL, f"{iss}#{sub}")


def in_threads(count, action):
    """Run ``action(index)`` in ``count`` threads released at once; their results by index."""
    start = threading.Barrier(count)
    results = [None] * count
    failures = []

    def run(index):
        try:
            start.wait(timeout=10)
            results[index] = action(index)
        except BaseException as exc:
            failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures
    return results


def hold_inserts_until_all_arrive(monkeypatch, count):
    """Make ``count`` concurrent creations of a user insert at the same moment.

    Each waits just before its INSERT until all have got there, so none of them can have
    found the others' row first: on PostgreSQL one insert wins and the rest meet the unique
    violation, which is the path under test. PostgreSQL only: SQLite with IMMEDIATE
    transactions takes the write lock at BEGIN, so the waiting writers would deadlock.
    """
    inserts = threading.Barrier(count)
    save = User.save

    def save_when_all_arrived(self, *args, **kwargs):
        inserts.wait(timeout=10)
        return save(self, *args, **kwargs)

    monkeypatch.setattr(User, "save", save_when_all_arrived)


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


# POST register/ ---------------------------------------------------------------------------


def test_register_creates_user_and_answers_id_and_username(api_client):
    response = api_client.post(
        reverse("auth-register"), {"username": "ada", "password": "analytical-engine-1843"}
    )

    assert response.status_code == status.HTTP_201_CREATED
    body = response.json()
    assert set(body) == {"id", "username"}
    user = User.objects.get(id=body["id"])
    assert body["username"] == user.username == "ada"
    assert user.check_password("analytical-engine-1843")


def test_registered_user_can_obtain_a_token(api_client):
    credentials = {"username": "grace", "password": "compiling-cobol-1959"}
    api_client.post(reverse("auth-register"), credentials)

    response = api_client.post(reverse("auth-token"), credentials)

    assert response.status_code == status.HTTP_200_OK


def test_register_with_taken_username_is_400_naming_username(api_client, user):
    response = api_client.post(
        reverse("auth-register"), {"username": user.username, "password": "a-perfectly-good-passphrase"}
    )

    assert response.status_code == status.HTTP_400_BAD_REQUEST
    assert set(response.json()) == {"username"}
    assert User.objects.filter(username=user.username).count() == 1


@pytest.mark.parametrize("spelling", ["ALICE", "Alice"])
def test_register_of_a_taken_username_in_another_case_is_400_naming_username(api_client, spelling):
    UserFactory.create(username="alice")

    response = api_client.post(
        reverse("auth-register"), {"username": spelling, "password": "a-perfectly-good-passphrase"}
    )

    assert response.status_code == status.HTTP_400_BAD_REQUEST
    assert set(response.json()) == {"username"}
    assert list(User.objects.values_list("username", flat=True)) == ["alice"]


def test_logging_in_takes_the_exact_username(api_client):
    UserFactory.create(username="alice")

    response = api_client.post(reverse("auth-token"), {"username": "Alice", "password": TEST_PASSWORD})

    assert_refused(response)


@pytest.mark.parametrize("password", ["short1", "12345678901", "password123"])
def test_register_with_password_rejected_by_validators_is_400_naming_password(api_client, password):
    response = api_client.post(reverse("auth-register"), {"username": "newcomer", "password": password})

    assert response.status_code == status.HTTP_400_BAD_REQUEST
    assert set(response.json()) == {"password"}
    assert not User.objects.filter(username="newcomer").exists()


def test_register_checks_password_similarity_against_the_would_be_username(api_client):
    response = api_client.post(
        reverse("auth-register"), {"username": "bartholomew", "password": "bartholomew1"}
    )

    assert response.status_code == status.HTTP_400_BAD_REQUEST
    assert "password" in response.json()


def test_register_reports_taken_username_and_weak_password_together(api_client, user):
    response = api_client.post(reverse("auth-register"), {"username": user.username, "password": "123"})

    assert response.status_code == status.HTTP_400_BAD_REQUEST
    assert set(response.json()) == {"username", "password"}


def test_register_without_fields_is_400_naming_them(api_client):
    response = api_client.post(reverse("auth-register"), {})

    assert response.status_code == status.HTTP_400_BAD_REQUEST
    assert set(response.json()) == {"username", "password"}


def test_register_refuses_usernames_reserved_for_external_users(api_client):
    response = api_client.post(
        reverse("auth-register"), {"username": f"ext-{uuid.uuid4().hex}", "password": "a-good-passphrase"}
    )

    assert response.status_code == status.HTTP_400_BAD_REQUEST
    assert set(response.json()) == {"username"}


def test_register_is_403_when_registration_is_off(api_client, settings):
    settings.ALLOW_REGISTRATION = False

    response = api_client.post(
        reverse("auth-register"), {"username": "latecomer", "password": "a-perfectly-good-passphrase"}
    )

    assert response.status_code == status.HTTP_403_FORBIDDEN
    assert "detail" in response.json()
    assert not User.objects.filter(username="latecomer").exists()


def test_register_ignores_a_stale_bearer_token(api_client):
    api_client.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")

    response = api_client.post(
        reverse("auth-register"), {"username": "fresh", "password": "a-perfectly-good-passphrase"}
    )

    assert response.status_code == status.HTTP_201_CREATED


@real_concurrency
@pytest.mark.django_db(transaction=True)
def test_racing_registrations_of_one_username_create_one_user_and_no_500(monkeypatch):
    if connection.vendor == "postgresql":
        hold_inserts_until_all_arrive(monkeypatch, THREADS)

    def register(index):
        return (
            APIClient()
            .post(reverse("auth-register"), {"username": "racer", "password": f"distinct-passphrase-{index}"})
            .status_code
        )

    statuses = in_threads(THREADS, register)

    assert sorted(statuses) == [status.HTTP_201_CREATED] + [status.HTTP_400_BAD_REQUEST] * (THREADS - 1)
    assert User.objects.filter(username="racer").count() == 1


@real_concurrency
@pytest.mark.django_db(transaction=True)
def test_racing_registrations_of_one_username_in_different_cases_create_one_user(monkeypatch):
    hold_inserts_until_all_arrive(monkeypatch, THREADS)
    spellings = ["racer", "RACER", "Racer", "rAcEr"]

    def register(index):
        body = {"username": spellings[index % 4], "password": f"distinct-passphrase-{index}"}
        return APIClient().post(reverse("auth-register"), body).status_code

    statuses = in_threads(THREADS, register)

    assert sorted(statuses) == [status.HTTP_201_CREATED] + [status.HTTP_400_BAD_REQUEST] * (THREADS - 1)
    assert User.objects.filter(username__iexact="racer").count() == 1


# POST token/ and token/refresh/ -------------------------------------------------------------


def test_token_with_correct_credentials_returns_a_working_access_and_a_refresh(api_client, user):
    response = api_client.post(reverse("auth-token"), {"username": user.username, "password": TEST_PASSWORD})

    assert response.status_code == status.HTTP_200_OK
    assert set(response.json()) == {"access", "refresh"}
    assert get_me(response.json()["access"]).json()["id"] == str(user.id)


@pytest.mark.parametrize(
    ("username", "password"), [("{user}", "wrong-password"), ("nobody-by-this-name", TEST_PASSWORD)]
)
def test_token_with_bad_credentials_is_401(api_client, user, username, password):
    response = api_client.post(
        reverse("auth-token"), {"username": username.format(user=user.username), "password": password}
    )

    assert_refused(response)


def test_token_for_inactive_user_is_401(api_client):
    inactive = UserFactory.create(is_active=False)

    response = api_client.post(
        reverse("auth-token"), {"username": inactive.username, "password": TEST_PASSWORD}
    )

    assert_refused(response)


def test_refresh_returns_only_a_new_access_token_when_rotation_is_off(api_client, user):
    response = api_client.post(reverse("auth-token-refresh"), {"refresh": str(RefreshToken.for_user(user))})

    assert response.status_code == status.HTTP_200_OK
    assert set(response.json()) == {"access"}
    assert get_me(response.json()["access"]).json()["id"] == str(user.id)


@pytest.mark.usefixtures("refresh_rotation_on")
def test_refresh_also_returns_a_new_refresh_token_when_rotation_is_on(api_client, user):
    old_refresh = RefreshToken.for_user(user)

    response = api_client.post(reverse("auth-token-refresh"), {"refresh": str(old_refresh)})

    assert response.status_code == status.HTTP_200_OK
    assert set(response.json()) == {"access", "refresh"}
    new_refresh = response.json()["refresh"]
    assert RefreshToken(new_refresh)["jti"] != old_refresh["jti"]
    again = api_client.post(reverse("auth-token-refresh"), {"refresh": new_refresh})
    assert again.status_code == status.HTTP_200_OK


def test_refresh_with_an_access_token_is_401(api_client, user):
    response = api_client.post(reverse("auth-token-refresh"), {"refresh": str(AccessToken.for_user(user))})

    assert_refused(response)


@pytest.mark.parametrize("refresh", ["garbage", "a.b.c", ""])
def test_refresh_with_an_invalid_token_is_refused(api_client, refresh):
    response = api_client.post(reverse("auth-token-refresh"), {"refresh": refresh})

    if refresh == "":
        assert response.status_code == status.HTTP_400_BAD_REQUEST  # a missing field
    else:
        assert_refused(response)


def test_refresh_of_an_expired_refresh_token_is_401(api_client, user):
    refresh = RefreshToken.for_user(user)
    refresh.set_exp(lifetime=timedelta(seconds=-1))

    assert_refused(api_client.post(reverse("auth-token-refresh"), {"refresh": str(refresh)}))


def test_refresh_of_a_deleted_users_token_is_401(api_client, user):
    refresh = str(RefreshToken.for_user(user))
    user.delete()

    assert_refused(api_client.post(reverse("auth-token-refresh"), {"refresh": refresh}))


def test_refresh_of_an_inactive_users_token_is_401(api_client, user):
    refresh = str(RefreshToken.for_user(user))
    User.objects.filter(pk=user.pk).update(is_active=False)

    assert_refused(api_client.post(reverse("auth-token-refresh"), {"refresh": refresh}))


# GET me/ and the Bearer token of every endpoint ----------------------------------------------


def test_me_answers_the_token_users_id_and_username(auth_client, user, other_user):
    response = auth_client.get(reverse("auth-me"))

    assert response.status_code == status.HTTP_200_OK
    assert response.json() == {"id": str(user.id), "username": user.username}


def test_me_without_a_token_is_401_with_www_authenticate(api_client):
    assert_refused(api_client.get(reverse("auth-me")))


@pytest.mark.parametrize(
    "authorization",
    ["Bearer", "Bearer not-a-jwt", "Bearer a.b.c", "Bearer one two", "Token abc", "garbage", "Bearer ..."],
)
def test_garbage_authorization_header_is_401_with_www_authenticate(authorization):
    response = APIClient().get(reverse("auth-me"), HTTP_AUTHORIZATION=authorization)

    assert_refused(response)


def test_token_with_tampered_payload_is_401(user, other_user):
    header, _payload, signature = str(AccessToken.for_user(user)).split(".")
    forged = AccessToken.for_user(other_user)
    forged_payload = str(forged).split(".")[1]

    assert_refused(get_me(f"{header}.{forged_payload}.{signature}"))


def test_token_signed_with_another_key_is_401(user):
    payload = AccessToken.for_user(user).payload
    payload["user_id"] = str(payload["user_id"])

    assert_refused(get_me(jwt.encode(payload, "not-the-service-signing-key-at-all", algorithm="HS256")))


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # HS512 wants 64 bytes
def test_token_whose_header_names_another_algorithm_is_401(user, settings):
    payload = AccessToken.for_user(user).payload
    payload["user_id"] = str(payload["user_id"])

    token = jwt.encode(payload, settings.SIMPLE_JWT["SIGNING_KEY"], algorithm="HS512")

    assert_refused(get_me(token))


def test_expired_token_is_401(user):
    token = AccessToken.for_user(user)
    token.set_exp(lifetime=timedelta(seconds=-1))

    assert_refused(get_me(str(token)))


def test_alg_none_token_is_401(user):
    payload = AccessToken.for_user(user).payload
    payload["user_id"] = str(payload["user_id"])

    assert_refused(get_me(hand_made_token({"alg": "none", "typ": "JWT"}, payload)))


def test_refresh_token_used_as_access_token_is_401(user):
    assert_refused(get_me(str(RefreshToken.for_user(user))))


def test_token_of_a_deleted_user_is_401(user):
    token = str(AccessToken.for_user(user))
    user.delete()

    assert_refused(get_me(token))


def test_token_of_an_inactive_user_is_401(user):
    token = str(AccessToken.for_user(user))
    User.objects.filter(pk=user.pk).update(is_active=False)

    assert_refused(get_me(token))


def test_with_revocation_on_a_token_from_before_a_password_change_is_401(user, settings):
    settings.SIMPLE_JWT = {**settings.SIMPLE_JWT, "CHECK_REVOKE_TOKEN": True}
    access = AccessToken.for_user(user)
    # What for_user adds with revocation on (its module keeps the settings it imported).
    access["hash_password"] = get_md5_hash_password(user.password)
    token = str(access)
    assert get_me(token).status_code == status.HTTP_200_OK
    user.set_password("a brand new passphrase 7")
    user.save()

    assert_refused(get_me(token))


def test_correctly_signed_token_with_a_non_uuid_user_id_is_401(user, settings):
    payload = AccessToken.for_user(user).payload
    payload["user_id"] = "not-a-uuid"

    assert_refused(get_me(jwt.encode(payload, settings.SIMPLE_JWT["SIGNING_KEY"], algorithm="HS256")))


# External tokens ----------------------------------------------------------------------------


def test_external_hs256_token_with_uuid_claim_creates_that_user(settings):
    configure_external(settings)
    user_id = uuid.uuid4()

    response = get_me(external_token(str(user_id)))

    assert response.status_code == status.HTTP_200_OK
    assert response.json() == {"id": str(user_id), "username": f"ext-{user_id.hex}"}
    created = User.objects.get(id=user_id)
    assert not created.has_usable_password()
    assert created.is_active


def test_external_uuid_claim_in_upper_case_is_the_same_id(settings):
    configure_external(settings)
    user_id = uuid.uuid4()

    response = get_me(external_token(str(user_id).upper()))

    assert response.json()["id"] == str(user_id)


def test_external_rs256_token_is_accepted_with_a_pem_public_key(settings, rsa_key):
    configure_external(settings, KEY=public_pem(rsa_key), ALGORITHM="RS256")
    user_id = uuid.uuid4()

    response = get_me(external_token(str(user_id), key=rsa_key, algorithm="RS256"))

    assert response.status_code == status.HTTP_200_OK
    assert response.json()["id"] == str(user_id)


def test_external_es256_token_is_accepted_with_a_pem_public_key(settings, ec_key):
    configure_external(settings, KEY=public_pem(ec_key), ALGORITHM="ES256")
    user_id = uuid.uuid4()

    response = get_me(external_token(str(user_id), key=ec_key, algorithm="ES256"))

    assert response.status_code == status.HTTP_200_OK
    assert response.json()["id"] == str(user_id)


def test_external_rs256_token_signed_by_another_key_is_401(settings, rsa_key):
    configure_external(settings, KEY=public_pem(rsa_key), ALGORITHM="RS256")
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    assert_refused(get_me(external_token(str(uuid.uuid4()), key=stranger, algorithm="RS256")))


def test_external_hs256_token_keyed_with_the_rs256_public_key_is_401(settings, rsa_key):
    """The classic algorithm confusion: the header may not switch RS256 to HS256."""
    pem = public_pem(rsa_key)
    configure_external(settings, KEY=pem, ALGORITHM="RS256")
    user_id = uuid.uuid4()
    claims = {"sub": str(user_id), "exp": int(time.time()) + 300}

    token = hand_made_token({"alg": "HS256", "typ": "JWT"}, claims, hmac_key=pem.encode())

    assert_refused(get_me(token))
    assert not User.objects.filter(id=user_id).exists()


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # HS512 wants 64 bytes
def test_external_token_with_a_configured_but_other_algorithm_in_header_is_401(settings):
    configure_external(settings)

    assert_refused(get_me(external_token(str(uuid.uuid4()), algorithm="HS512")))


def test_external_alg_none_token_is_401(settings):
    configure_external(settings)
    user_id = uuid.uuid4()
    claims = {"sub": str(user_id), "exp": int(time.time()) + 300}

    assert_refused(get_me(hand_made_token({"alg": "none", "typ": "JWT"}, claims)))
    assert not User.objects.filter(id=user_id).exists()


def test_external_token_signed_with_another_secret_is_401(settings):
    configure_external(settings)

    assert_refused(get_me(external_token(str(uuid.uuid4()), key="some-other-secret-of-32-bytes-or-more")))


def test_external_non_uuid_claim_maps_to_uuid5_and_creates_the_user_once(settings):
    configure_external(settings)
    expected = mapped_id("auth0|5f1c", iss=ISSUER)
    token = external_token("auth0|5f1c", iss=ISSUER)

    first = get_me(token)
    second = get_me(external_token("auth0|5f1c", iss=ISSUER))

    assert first.status_code == second.status_code == status.HTTP_200_OK
    assert first.json() == second.json() == {"id": str(expected), "username": f"ext-{expected.hex}"}
    assert User.objects.filter(id=expected).count() == 1


def test_external_non_uuid_claim_without_iss_maps_with_an_empty_issuer(settings):
    configure_external(settings)

    response = get_me(external_token("opaque-subject"))

    assert response.json()["id"] == str(mapped_id("opaque-subject", iss=""))


def test_external_hex_claim_that_is_not_in_canonical_uuid_form_is_mapped(settings):
    configure_external(settings)
    hex_subject = uuid.uuid4().hex

    response = get_me(external_token(hex_subject))

    assert response.json()["id"] == str(mapped_id(hex_subject))


def test_external_user_id_claim_is_configurable(settings):
    configure_external(settings, USER_ID_CLAIM="uid")
    user_id = uuid.uuid4()

    response = get_me(external_token("ignored-subject", uid=str(user_id)))

    assert response.json()["id"] == str(user_id)


@pytest.mark.parametrize("claim_value", [None, "", 42, ["a"]])
def test_external_token_without_a_usable_user_id_claim_is_401(settings, claim_value):
    configure_external(settings, USER_ID_CLAIM="uid")
    claims = {} if claim_value is None else {"uid": claim_value}

    assert_refused(get_me(external_token("subject", **claims)))


def test_external_token_with_the_configured_issuer_is_accepted(settings):
    configure_external(settings, ISSUER=ISSUER)

    assert get_me(external_token(str(uuid.uuid4()), iss=ISSUER)).status_code == status.HTTP_200_OK


@pytest.mark.parametrize("claims", [{"iss": "https://evil.example/"}, {}])
def test_external_token_with_wrong_or_missing_issuer_is_401(settings, claims):
    configure_external(settings, ISSUER=ISSUER)
    user_id = uuid.uuid4()

    assert_refused(get_me(external_token(str(user_id), **claims)))
    assert not User.objects.filter(id=user_id).exists()


def test_external_token_with_the_configured_audience_is_accepted(settings):
    configure_external(settings, AUDIENCE=AUDIENCE)

    response = get_me(external_token(str(uuid.uuid4()), aud=["another-api", AUDIENCE]))

    assert response.status_code == status.HTTP_200_OK


@pytest.mark.parametrize("claims", [{"aud": "another-api"}, {"aud": "payroll-app"}, {}])
def test_external_token_with_wrong_or_missing_audience_is_401(settings, claims):
    configure_external(settings, AUDIENCE=AUDIENCE)

    assert_refused(get_me(external_token(str(uuid.uuid4()), **claims)))


def test_external_audience_is_not_checked_when_unset(settings):
    configure_external(settings)

    response = get_me(external_token(str(uuid.uuid4()), aud="whatever-api"))

    assert response.status_code == status.HTTP_200_OK


def test_external_token_without_exp_is_401(settings):
    configure_external(settings)

    assert_refused(get_me(external_token(str(uuid.uuid4()), expires_in=None)))


def test_external_token_expired_by_10_seconds_is_accepted(settings):
    configure_external(settings)

    response = get_me(external_token(str(uuid.uuid4()), expires_in=-10))

    assert response.status_code == status.HTTP_200_OK


def test_external_token_expired_beyond_30_seconds_is_401(settings):
    configure_external(settings)

    assert_refused(get_me(external_token(str(uuid.uuid4()), expires_in=-45)))


def test_external_leeway_is_capped_at_30_seconds(settings):
    configure_external(settings, LEEWAY_SECONDS=3600)

    assert_refused(get_me(external_token(str(uuid.uuid4()), expires_in=-45)))


def test_external_token_issued_in_the_future_is_401(settings):
    configure_external(settings)

    assert_refused(get_me(external_token(str(uuid.uuid4()), nbf=int(time.time()) + 3600)))


@pytest.mark.parametrize(
    "local_account",
    [{}, {"is_staff": True}, {"is_superuser": True, "is_staff": True}],
    ids=["registered user", "staff user", "superuser"],
)
def test_external_token_naming_a_local_accounts_id_is_401(settings, local_account):
    configure_external(settings)
    account = UserFactory.create(**local_account)

    assert_refused(get_me(external_token(str(account.id))))
    assert User.objects.count() == 1


@pytest.mark.parametrize(
    "promotion",
    [{"is_staff": True}, {"is_superuser": True}, {"password": make_password("an-operator-set-this-one")}],
    ids=["made staff", "made superuser", "given a password"],
)
def test_external_token_of_an_external_user_later_made_local_is_401(settings, promotion):
    """The issuer keeps only the users it created and nobody has turned into a local account."""
    configure_external(settings)
    user_id = uuid.uuid4()
    assert get_me(external_token(str(user_id))).status_code == status.HTTP_200_OK
    User.objects.filter(id=user_id).update(**promotion)

    assert_refused(get_me(external_token(str(user_id))))


def test_external_user_created_by_the_issuer_keeps_signing_in(settings):
    configure_external(settings)
    user_id = uuid.uuid4()

    first = get_me(external_token(str(user_id)))
    second = get_me(external_token(str(user_id)))

    assert first.status_code == second.status_code == status.HTTP_200_OK
    assert User.objects.get(id=user_id).is_external


def test_external_token_of_an_inactive_user_is_401(settings):
    configure_external(settings)
    user_id = uuid.uuid4()
    assert get_me(external_token(str(user_id))).status_code == status.HTTP_200_OK
    User.objects.filter(id=user_id).update(is_active=False)

    assert_refused(get_me(external_token(str(user_id))))


@pytest.mark.parametrize(
    "claims",
    [{"sub": "\ud800"}, {"sub": "auth0|\udfff-tail"}, {"sub": "opaque", "iss": "https://id.example/\ud83d"}],
    ids=["lone high surrogate sub", "lone low surrogate in sub", "lone surrogate in iss"],
)
def test_external_token_with_a_lone_surrogate_in_its_ids_is_401_not_500(settings, claims):
    configure_external(settings)

    assert_refused(get_me(external_token(**claims)))
    assert not User.objects.exists()


def test_external_user_whose_username_is_held_by_another_account_is_401_not_500(settings):
    configure_external(settings)
    user_id = uuid.uuid4()
    UserFactory.create(username=f"ext-{user_id.hex}")

    assert_refused(get_me(external_token(str(user_id))))
    assert not User.objects.filter(id=user_id).exists()


def test_external_tokens_are_refused_when_no_external_key_is_set(settings):
    configure_external(settings, KEY=None)
    user_id = uuid.uuid4()

    assert_refused(get_me(external_token(str(user_id))))
    assert not User.objects.filter(id=user_id).exists()


def test_external_tokens_are_refused_when_the_algorithm_setting_is_not_allowed(settings):
    configure_external(settings, ALGORITHM="none")

    assert_refused(get_me(external_token(str(uuid.uuid4()))))


def test_external_hs256_setting_with_a_pem_key_refuses_tokens(settings, rsa_key):
    configure_external(settings, KEY=public_pem(rsa_key), ALGORITHM="HS256")

    assert_refused(get_me(hand_made_token({"alg": "HS256"}, {"sub": "x", "exp": int(time.time()) + 60})))


def test_own_tokens_still_work_when_external_tokens_are_configured(settings, user):
    configure_external(settings)

    assert get_me(str(AccessToken.for_user(user))).json()["id"] == str(user.id)


def test_own_refresh_token_used_as_access_is_401_when_external_tokens_are_configured(settings, user):
    configure_external(settings, USER_ID_CLAIM="user_id")

    assert_refused(get_me(str(RefreshToken.for_user(user))))


def test_expired_own_token_does_not_get_the_external_leeway(settings, user):
    configure_external(settings, KEY=settings.SIMPLE_JWT["SIGNING_KEY"], USER_ID_CLAIM="user_id")
    token = AccessToken.for_user(user)
    token.set_exp(lifetime=timedelta(seconds=-5))

    assert_refused(get_me(str(token)))


def test_own_style_token_signed_with_the_external_key_is_401(settings, user):
    """A token shaped like ours is judged by our key only, whatever key signed it."""
    configure_external(settings, USER_ID_CLAIM="user_id")
    payload = AccessToken.for_user(user).payload
    payload["user_id"] = str(payload["user_id"])

    assert_refused(get_me(jwt.encode(payload, EXTERNAL_SECRET, algorithm="HS256")))


@real_concurrency
@pytest.mark.django_db(transaction=True)
def test_racing_first_requests_of_an_external_user_create_it_once(settings, monkeypatch):
    configure_external(settings)
    expected = mapped_id("racing-subject", iss=ISSUER)
    token = external_token("racing-subject", iss=ISSUER)
    if connection.vendor == "postgresql":
        hold_inserts_until_all_arrive(monkeypatch, THREADS)

    statuses = in_threads(THREADS, lambda _index: get_me(token).status_code)

    assert statuses == [status.HTTP_200_OK] * THREADS
    assert User.objects.filter(id=expected).count() == 1
    assert User.objects.filter(username__startswith="ext-").count() == 1
