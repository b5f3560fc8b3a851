#!/usr/bin/env bash
# kind end to end: a real cluster on this machine's Docker, the real images, the Helm chart,
# in-cluster S3 (SeaweedFS), and the two tiny examples trained to Succeeded and verified.
#
#   hack/kind-e2e.sh                 # or: make kind-e2e
#   KEEP_CLUSTER=1 hack/kind-e2e.sh  # keep the cluster afterwards for poking around
#
# Needs: a running Docker daemon, kind, kubectl, helm, and this repository's Python env
# (`make setup`: provides kubepeft and the aws CLI). Every step is a command you could run by
# hand; docs/operations.md walks through the same steps.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CLUSTER_NAME="${CLUSTER_NAME:-kubepeft-e2e}"
KEEP_CLUSTER="${KEEP_CLUSTER:-0}"
KIND_NODE_IMAGE="${KIND_NODE_IMAGE:-}"
IMAGE_TAG="${IMAGE_TAG:-e2e}"
OPERATOR_IMAGE="kubepeft-operator:${IMAGE_TAG}"
TRAINER_CPU_IMAGE="kubepeft-trainer-cpu:${IMAGE_TAG}"
OPERATOR_NS="${OPERATOR_NS:-kubepeft-system}"
STORAGE_NS="kubepeft-storage"   # fixed by hack/kind/seaweedfs.yaml
JOBS_NS="${JOBS_NS:-kubepeft-e2e}"
BUCKET="kubepeft-demo"          # the bucket both tiny examples read from and write to
S3_IN_CLUSTER="http://seaweedfs.${STORAGE_NS}.svc:8333"
S3_LOCAL_PORT="${S3_LOCAL_PORT:-18333}"
S3_LOCAL="http://127.0.0.1:${S3_LOCAL_PORT}"
JOB_TIMEOUT_SECONDS="${JOB_TIMEOUT_SECONDS:-1800}"
JOBS=(tiny-lora tiny-lora-2node)
# Pod Security level enforced on the jobs namespace: worker pods must meet "restricted".
POD_SECURITY_LEVEL="${POD_SECURITY_LEVEL:-restricted}"

# Prefer the repository's virtual environment for kubepeft, python and aws.
if [[ -x "$ROOT/.venv/bin/kubepeft" ]]; then
  PATH="$ROOT/.venv/bin:$PATH"
fi

umask 077   # every file this run writes (keys, kubeconfig) is private
WORK="$(mktemp -d "${TMPDIR:-/tmp}/kubepeft-kind-e2e.XXXXXX")"
CREDS="$WORK/credentials"
export KUBECONFIG="$WORK/kubeconfig"   # never touch the user's kubeconfig
PORT_FORWARD_PID=""
CLUSTER_CREATED=0

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

diagnostics() {
  log "diagnostics"
  kubectl get peftjobs -A -o wide || true
  kubectl get pods -A -o wide || true
  kubectl -n "$JOBS_NS" describe peftjobs || true
  kubectl -n "$JOBS_NS" get events --sort-by=.lastTimestamp || true
  kubectl -n "$OPERATOR_NS" logs deployment/kubepeft --tail=200 || true
  local pod
  for pod in $(kubectl -n "$JOBS_NS" get pods -o name 2>/dev/null); do
    printf -- '--- %s\n' "$pod"
    kubectl -n "$JOBS_NS" logs "$pod" --all-containers --tail=80 || true
  done
}

cleanup() {
  local rc=$?
  if [[ -n "$PORT_FORWARD_PID" ]]; then
    kill "$PORT_FORWARD_PID" 2>/dev/null || true
  fi
  if [[ $rc -ne 0 && $CLUSTER_CREATED -eq 1 ]]; then
    diagnostics
  fi
  if [[ $CLUSTER_CREATED -eq 1 ]]; then
    if [[ "$KEEP_CLUSTER" == "1" ]]; then
      log "keeping cluster ${CLUSTER_NAME}: kind export kubeconfig --name ${CLUSTER_NAME}; delete it with: kind delete cluster --name ${CLUSTER_NAME}"
    else
      log "deleting cluster ${CLUSTER_NAME}"
      kind delete cluster --name "$CLUSTER_NAME" || true
    fi
  fi
  rm -rf "$WORK"
  if [[ $rc -eq 0 ]]; then
    log "kind e2e passed"
  else
    printf '\nkind e2e FAILED (exit %s)\n' "$rc" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT

# Run a command with the S3 keys in its environment only (never on a command line or in a log).
with_s3_env() {
  AWS_ACCESS_KEY_ID="$(<"$CREDS/AWS_ACCESS_KEY_ID")" \
  AWS_SECRET_ACCESS_KEY="$(<"$CREDS/AWS_SECRET_ACCESS_KEY")" \
  AWS_DEFAULT_REGION=us-east-1 \
  "$@"
}

check_prerequisites() {
  log "checking prerequisites"
  local missing=0 tool
  for tool in docker kind kubectl helm python3; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      printf 'missing: %s\n' "$tool" >&2
      missing=1
    fi
  done
  for tool in kubepeft aws; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      printf 'missing: %s (run "make setup": it installs kubepeft and the aws CLI into .venv)\n' "$tool" >&2
      missing=1
    fi
  done
  [[ $missing -eq 0 ]] || die "install the missing tools (kind: https://kind.sigs.k8s.io, helm: https://helm.sh) and retry"
  docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable (docker info failed): start Docker and retry"
  if kind get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
    die "a kind cluster named ${CLUSTER_NAME} already exists: delete it (kind delete cluster --name ${CLUSTER_NAME}) or set CLUSTER_NAME"
  fi
}

create_cluster() {
  log "creating kind cluster ${CLUSTER_NAME}"
  local args=(create cluster --name "$CLUSTER_NAME" --config hack/kind/cluster.yaml --kubeconfig "$KUBECONFIG" --wait 180s)
  if [[ -n "$KIND_NODE_IMAGE" ]]; then
    args+=(--image "$KIND_NODE_IMAGE")
  fi
  CLUSTER_CREATED=1
  kind "${args[@]}"
  kubectl cluster-info
}

build_and_load_images() {
  log "building images"
  docker build -f operator/Dockerfile -t "$OPERATOR_IMAGE" .
  docker build -f trainer_image/Dockerfile.cpu -t "$TRAINER_CPU_IMAGE" .
  log "loading images into the cluster"
  kind load docker-image --name "$CLUSTER_NAME" "$OPERATOR_IMAGE" "$TRAINER_CPU_IMAGE"
}

generate_credentials() {
  log "generating S3 credentials"
  mkdir -p "$CREDS"
  python3 -c 'import secrets; print("KP" + secrets.token_hex(9).upper(), end="")' >"$CREDS/AWS_ACCESS_KEY_ID"
  python3 -c 'import secrets; print(secrets.token_urlsafe(30), end="")' >"$CREDS/AWS_SECRET_ACCESS_KEY"
  # SeaweedFS's identities file: one identity with the generated keys.
  python3 - "$CREDS" >"$WORK/s3.json" <<'PY'
import json, pathlib, sys
creds = pathlib.Path(sys.argv[1])
print(json.dumps({"identities": [{
    "name": "kubepeft",
    "credentials": [{
        "accessKey": (creds / "AWS_ACCESS_KEY_ID").read_text(),
        "secretKey": (creds / "AWS_SECRET_ACCESS_KEY").read_text(),
    }],
    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
}]}))
PY
}

deploy_storage() {
  log "deploying SeaweedFS in namespace ${STORAGE_NS}"
  kubectl create namespace "$STORAGE_NS"
  kubectl -n "$STORAGE_NS" create secret generic seaweedfs-s3-config --from-file=s3.json="$WORK/s3.json"
  kubectl apply -f hack/kind/seaweedfs.yaml
  kubectl -n "$STORAGE_NS" rollout status deployment/seaweedfs --timeout=300s
}

create_job_namespace() {
  log "creating namespace ${JOBS_NS} and its S3 credentials Secret"
  kubectl create namespace "$JOBS_NS"
  kubectl label namespace "$JOBS_NS" "pod-security.kubernetes.io/enforce=${POD_SECURITY_LEVEL}"
  # Keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, from the files of the same names.
  kubectl -n "$JOBS_NS" create secret generic s3-credentials --from-file="$CREDS"
}

install_chart() {
  log "installing the chart into ${OPERATOR_NS}"
  helm install kubepeft charts/kubepeft \
    --namespace "$OPERATOR_NS" --create-namespace \
    --set images.operator.repository=kubepeft-operator \
    --set images.operator.tag="$IMAGE_TAG" \
    --set images.operator.pullPolicy=Never \
    --set images.trainerCpu.repository=kubepeft-trainer-cpu \
    --set images.trainerCpu.tag="$IMAGE_TAG" \
    --set images.trainer.pullPolicy=Never \
    --set defaultStorage.endpoint="$S3_IN_CLUSTER" \
    --set defaultStorage.credentialsSecret=s3-credentials \
    --set trainer.defaultResources.cpu=1 \
    --set trainer.defaultResources.memory=2Gi \
    --set logLevel=DEBUG \
    --wait --timeout 5m
  kubectl -n "$OPERATOR_NS" rollout status deployment/kubepeft --timeout=180s
}

start_port_forward() {
  log "port-forwarding ${S3_LOCAL} to the in-cluster S3"
  kubectl -n "$STORAGE_NS" port-forward service/seaweedfs "${S3_LOCAL_PORT}:8333" >"$WORK/port-forward.log" 2>&1 &
  PORT_FORWARD_PID=$!
  # SeaweedFS can answer 500 for a moment after start: wait until a real request succeeds.
  for _ in $(seq 1 60); do
    if with_s3_env aws --endpoint-url "$S3_LOCAL" s3api head-bucket --bucket "$BUCKET" >/dev/null 2>&1; then
      return 0
    fi
    sleep 2
  done
  cat "$WORK/port-forward.log" >&2 || true
  die "S3 did not answer through the port-forward at ${S3_LOCAL} (bucket ${BUCKET})"
}

upload_model_and_data() {
  # Builds the tiny model and dataset and uploads them to exactly the URIs the examples name
  # (s3://kubepeft-demo/models/tiny-llama, s3://kubepeft-demo/data/tiny-chat.jsonl).
  log "building the tiny model and dataset and uploading them to s3://${BUCKET}"
  kubepeft demo --prepare-only --job examples/tiny-lora.yaml --workdir "$WORK/demo" \
    --endpoint "$S3_LOCAL" --credentials-dir "$CREDS"
  with_s3_env aws --endpoint-url "$S3_LOCAL" s3 ls --recursive "s3://${BUCKET}/"
}

submit_jobs() {
  log "submitting the examples to ${JOBS_NS}"
  kubepeft validate examples/tiny-lora.yaml examples/tiny-lora-2node.yaml
  kubectl -n "$JOBS_NS" apply -f examples/tiny-lora.yaml -f examples/tiny-lora-2node.yaml
}

# Poll the phase so a Failed job stops the run at once; then confirm with `kubectl wait`.
wait_for_job() {
  local job="$1" deadline phase
  deadline=$((SECONDS + JOB_TIMEOUT_SECONDS))
  log "waiting for peftjob/${job}"
  while ((SECONDS < deadline)); do
    phase="$(kubectl -n "$JOBS_NS" get peftjob "$job" -o jsonpath='{.status.phase}' 2>/dev/null || true)"
    case "$phase" in
      Succeeded) break ;;
      Failed) die "peftjob/${job} failed: $(kubectl -n "$JOBS_NS" get peftjob "$job" -o jsonpath='{.status.message}')" ;;
    esac
    kubectl -n "$JOBS_NS" get peftjob "$job" --no-headers 2>/dev/null || true
    sleep 10
  done
  kubectl -n "$JOBS_NS" wait --for=condition=Succeeded --timeout=60s "peftjob/${job}"
}

verify_artifacts() {
  local job="$1" root manifest
  root="s3://${BUCKET}/runs/${JOBS_NS}/${job}"
  log "verifying ${root}"
  manifest="$(kubectl -n "$JOBS_NS" get peftjob "$job" -o jsonpath='{.status.artifacts.manifest}')"
  [[ "$manifest" == "${root}/manifest.json" ]] || die "peftjob/${job}: status.artifacts.manifest is '${manifest}', expected ${root}/manifest.json"
  # Every file listed in the manifest exists with its sha256 (the manifest is written last).
  kubepeft verify "$root" --endpoint "$S3_LOCAL" --credentials-dir "$CREDS"
  with_s3_env aws --endpoint-url "$S3_LOCAL" s3 ls "${root}/adapter/adapter_config.json" >/dev/null \
    || die "${root}/adapter/adapter_config.json is missing"
  with_s3_env aws --endpoint-url "$S3_LOCAL" s3 ls "${root}/adapter/adapter_model.safetensors" >/dev/null \
    || die "${root}/adapter/adapter_model.safetensors is missing"
}

main() {
  check_prerequisites
  create_cluster
  build_and_load_images
  generate_credentials
  deploy_storage
  create_job_namespace
  install_chart
  start_port_forward
  upload_model_and_data
  submit_jobs
  local job
  for job in "${JOBS[@]}"; do
    wait_for_job "$job"
  done
  for job in "${JOBS[@]}"; do
    verify_artifacts "$job"
  done
  log "jobs"
  kubectl -n "$JOBS_NS" get peftjobs -o wide
}

main "$@"
