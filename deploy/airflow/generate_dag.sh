#!/usr/bin/env bash
# Generate the Airflow DAG of the default pipeline with kedro-airflow (dev extra).
#
#   deploy/airflow/generate_dag.sh [ENV] [TARGET_DIR] [extra `kedro airflow create` options]
#
# One task per candidate namespace (training and quantization of that candidate) and one per
# other node, after a first task that creates the DAG run's MLflow run (MLFLOW_RUN_ID is passed
# to every task). Copy the generated file into Airflow's dags folder; the workers need this
# project installed, its conf/ in their working directory, and MLFLOW_TRACKING_URI (and S3
# access with --env s3). See docs/scaling.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
env_name="${1:-local}"
target="${2:-deploy/airflow/dags}"
shift $(( $# > 2 ? 2 : $# ))
kedro="${KEDRO:-kedro}"
"$kedro" airflow create \
  --env "$env_name" \
  --target-dir "$target" \
  --jinja-file deploy/airflow/eyecatcher_dag.j2 \
  --group-by namespace \
  "$@"
