#!/usr/bin/env bash
# One-shot initialisation of the Airflow metadata database (service `airflow-init`).
# Idempotent: `docker compose up airflow-init` may run again after every upgrade.
#   1. airflow db migrate            schema up to this image's Airflow version (FAB tables too)
#   2. admin user                    from AIRFLOW_ADMIN_USERNAME / _PASSWORD / _EMAIL (.env)
#   3. airflow pools import          gpu, lrclib, qdrant_local from /opt/airflow/pools.json
set -euo pipefail

: "${AIRFLOW_ADMIN_USERNAME:?}" "${AIRFLOW_ADMIN_PASSWORD:?}" "${AIRFLOW_ADMIN_EMAIL:?}"

echo "airflow-init: $(airflow version)"

airflow db migrate

# `airflow users create` reports an existing user and leaves it (and its password) unchanged;
# change a password with `airflow users reset-password` (docs/operations.md).
airflow users create \
  --username "${AIRFLOW_ADMIN_USERNAME}" \
  --password "${AIRFLOW_ADMIN_PASSWORD}" \
  --email "${AIRFLOW_ADMIN_EMAIL}" \
  --firstname Airflow \
  --lastname Admin \
  --role Admin

# A scheduler leaves a task queued forever when its pool does not exist.
airflow pools import /opt/airflow/pools.json

echo "airflow-init: done"
