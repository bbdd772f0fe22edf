#!/bin/sh
# One-shot MinIO bootstrap (service `minio-init`, image minio/mc). Idempotent.
#   - bucket $LAKE_BUCKET (the lake: s3://aws_default@datalake) and bucket $MILVUS_BUCKET
#   - user $MINIO_AIRFLOW_ACCESS_KEY: read/write on the lake bucket only (connection aws_default)
#   - user $MINIO_MILVUS_ACCESS_KEY:  read/write on the Milvus bucket only
set -eu

: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}"
: "${MINIO_AIRFLOW_ACCESS_KEY:?}" "${MINIO_AIRFLOW_SECRET_KEY:?}"
: "${MINIO_MILVUS_ACCESS_KEY:?}" "${MINIO_MILVUS_SECRET_KEY:?}"
LAKE_BUCKET="${LAKE_BUCKET:-datalake}"
MILVUS_BUCKET="${MILVUS_BUCKET:-milvus}"
ALIAS=musicrec

mc alias set "$ALIAS" "${MINIO_URL:-http://minio:9000}" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc ready "$ALIAS"

mc mb --ignore-existing "$ALIAS/$LAKE_BUCKET"
mc mb --ignore-existing "$ALIAS/$MILVUS_BUCKET"

# bucket_user NAME ACCESS_KEY SECRET_KEY BUCKET: a user allowed everything inside one bucket
# (plus listing bucket names, which s3fs does to test a bucket's existence).
bucket_user() {
  policy="musicrec-$1-rw"
  file="/tmp/$policy.json"
  cat >"$file" <<JSON
{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": ["s3:ListAllMyBuckets", "s3:GetBucketLocation"], "Resource": ["arn:aws:s3:::*"]},
    {"Effect": "Allow", "Action": ["s3:*"], "Resource": ["arn:aws:s3:::$4", "arn:aws:s3:::$4/*"]}
  ]
}
JSON
  mc admin policy create "$ALIAS" "$policy" "$file"
  mc admin user add "$ALIAS" "$2" "$3"
  if ! out=$(mc admin policy attach "$ALIAS" "$policy" --user "$2" 2>&1); then
    case "$out" in
      *"already in effect"* | *"already attached"*) ;;
      *) echo "$out" >&2; exit 1 ;;
    esac
  fi
  echo "minio-init: user $2 -> $policy (bucket $4)"
}

bucket_user airflow "$MINIO_AIRFLOW_ACCESS_KEY" "$MINIO_AIRFLOW_SECRET_KEY" "$LAKE_BUCKET"
bucket_user milvus "$MINIO_MILVUS_ACCESS_KEY" "$MINIO_MILVUS_SECRET_KEY" "$MILVUS_BUCKET"

echo "minio-init: done"
