#!/bin/sh
# Run once by the postgres image when it initialises an empty data directory
# (/docker-entrypoint-initdb.d), as the superuser. Makes the two roles of a deployment:
#   chat      owns the database and its tables, runs the migrations (DATABASE_URL); no superuser,
#             so row-level security binds it too
#   chat_app  serves requests (DATABASE_APP_URL): owns nothing, gets row privileges after
#             each migrate, cannot change the schema or switch row-level security off
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v owner_password="${CHAT_DB_PASSWORD:?}" -v app_password="${CHAT_APP_DB_PASSWORD:?}" <<'SQL'
CREATE ROLE chat LOGIN PASSWORD :'owner_password';
CREATE ROLE chat_app LOGIN PASSWORD :'app_password';
GRANT chat_app TO chat;
CREATE DATABASE chat OWNER chat;
SQL
