#!/usr/bin/env bash
# Build the image with Cloud Build, {{ "run the migration job, " if cookiecutter.use_postgres else "" }}then deploy
# {{ "worker-pool.yaml and " if cookiecutter.use_worker else "" }}service.yaml to Cloud Run. Run it from anywhere in the project; each
# step stops the script on failure.
#
# Environment (defaults in brackets):
#   PROJECT_ID       Google Cloud project [gcloud's configured project]
#   REGION           Cloud Run region [europe-west1]
#   SERVICE          Cloud Run service name [{{ cookiecutter.project_slug }}]
#   REPOSITORY       Artifact Registry Docker repository [containers]
#   TAG              image tag [the git commit, or the time]
#   SERVICE_ACCOUNT  runtime service account [{{ (cookiecutter.project_slug ~ "-runtime")[:30].rstrip("-") }}@PROJECT_ID.iam.gserviceaccount.com]
{% if cookiecutter.use_postgres %}
#   SQL_INSTANCE     Cloud SQL instance name (required)
{% endif %}
{% if cookiecutter.use_redis %}
#   NETWORK, SUBNET  VPC network and subnet that reach Memorystore [default, default]
{% endif %}
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

PROJECT_ID=${PROJECT_ID:-$(gcloud config get-value project 2>/dev/null)}
: "${PROJECT_ID:?set PROJECT_ID or run: gcloud config set project PROJECT_ID}"
REGION=${REGION:-europe-west1}
SERVICE=${SERVICE:-{{ cookiecutter.project_slug }}}
REPOSITORY=${REPOSITORY:-containers}
TAG=${TAG:-$(git rev-parse --short=12 HEAD 2>/dev/null || date -u +%Y%m%d%H%M%S)}
SERVICE_ACCOUNT=${SERVICE_ACCOUNT:-{{ (cookiecutter.project_slug ~ "-runtime")[:30].rstrip("-") }}@${PROJECT_ID}.iam.gserviceaccount.com}
{% if cookiecutter.use_postgres %}
SQL_INSTANCE=${SQL_INSTANCE:?set SQL_INSTANCE to the Cloud SQL instance name}
{% endif %}
{% if cookiecutter.use_redis %}
NETWORK=${NETWORK:-default}
SUBNET=${SUBNET:-default}
{% endif %}
IMAGE=${REGION}-docker.pkg.dev/${PROJECT_ID}/${REPOSITORY}/${SERVICE}:${TAG}
PLACEHOLDERS=(SERVICE PROJECT_ID REGION IMAGE SERVICE_ACCOUNT{{ " SQL_INSTANCE" if cookiecutter.use_postgres else "" }}{{ " NETWORK SUBNET" if cookiecutter.use_redis else "" }})

# Print a YAML file with each ${NAME} placeholder replaced by that variable's value.
render() {
    local text name
    text=$(<"$1")
    for name in "${PLACEHOLDERS[@]}"; do
        text=${text//"\${$name}"/"${!name}"}
    done
    if [[ $text == *"\${"* ]]; then
        echo "error: $1 has a placeholder deploy.sh does not know" >&2
        return 1
    fi
    printf '%s\n' "$text"
}

rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT
{% if cookiecutter.use_postgres %}
render deploy/cloud-run/migrate-job.yaml >"$rendered/migrate-job.yaml"
{% endif %}
{% if cookiecutter.use_worker %}
render deploy/cloud-run/worker-pool.yaml >"$rendered/worker-pool.yaml"
{% endif %}
render deploy/cloud-run/service.yaml >"$rendered/service.yaml"

# Cloud Build builds the Dockerfile with its Docker builder (`docker build`, without
# BuildKit) and pushes the image to Artifact Registry.
echo "==> Building $IMAGE"
gcloud builds submit --project "$PROJECT_ID" --tag "$IMAGE" .
{% if cookiecutter.use_postgres %}

echo "==> Migrating the database (job $SERVICE-migrate)"
gcloud run jobs replace "$rendered/migrate-job.yaml" --project "$PROJECT_ID" --region "$REGION"
gcloud run jobs execute "$SERVICE-migrate" --project "$PROJECT_ID" --region "$REGION" --wait
{% endif %}
{% if cookiecutter.use_worker %}

# Before the service: the new revision may queue tasks only the new worker knows.
# `worker-pools replace` takes the region from the file's location label (it has no --region).
echo "==> Deploying the worker pool $SERVICE-worker"
gcloud run worker-pools replace "$rendered/worker-pool.yaml" --project "$PROJECT_ID"
{% endif %}

echo "==> Deploying $SERVICE"
gcloud run services replace "$rendered/service.yaml" --project "$PROJECT_ID" --region "$REGION"
gcloud run services describe "$SERVICE" --project "$PROJECT_ID" --region "$REGION" \
    --format 'value(status.url)'
