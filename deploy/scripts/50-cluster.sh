#!/usr/bin/env bash
# Part 5, in the WORKER account, with access to the cluster (5-10 minutes). kubectl is
# pointed at the cluster before anything touches it. KEDA (2.13 or later) is installed
# only where the cluster has none: an existing KEDA keeps its values and its operator's
# role (the ScaledObject's TriggerAuthentication names the stack's scaler role, which the
# operator takes with its own web identity, AssumeRoleWithWebIdentity; the scaler role
# trusts KedaNamespace/KedaServiceAccountName, keda/keda-operator by default). Then the
# worker (kubectl apply -k) and, with the Prometheus Operator, its monitoring.
source "$(dirname "$0")/lib.sh"
in_account worker "$WORKER_ACCOUNT"
export AWS_DEFAULT_REGION=$REGION
load_stack_env

say "kubectl: the cluster $CLUSTER"
aws eks update-kubeconfig --name "$CLUSTER" --region "$REGION"
echo "Context: $(kubectl config current-context)"

say "KEDA"
if kubectl get crd scaledobjects.keda.sh >/dev/null 2>&1; then
  echo "KEDA is installed already: left as it is (its values and its operator's role unchanged;"
  echo "the scaler role trusts the stack's KedaNamespace/KedaServiceAccountName: its operator's)"
else
  helm repo add kedacore https://kedacore.github.io/charts
  helm repo update kedacore
  helm upgrade --install keda kedacore/keda --namespace keda --create-namespace --version 2.20.2 \
    --set podIdentity.aws.irsa.enabled=true --set podIdentity.aws.irsa.roleArn="$KEDA_SCALER_ROLE_ARN"
  echo "KEDA: installed"
fi

say "The worker"
kubectl apply -k "$REPO/deploy/kubernetes/"
kubectl -n security rollout status deployment/iam-key-revoker --timeout=5m

say "Monitoring"
if [ -z "${BOOK_URL:-}" ]; then
  echo "error: BOOK_URL is empty: the alerts' runbook links would lead nowhere; publish the book (scripts/docs) and set it" >&2
  exit 2
fi
if kubectl get crd podmonitors.monitoring.coreos.com >/dev/null 2>&1; then
  kubectl kustomize "$REPO/deploy/prometheus/" |
    sed -e "s/release: kube-prometheus-stack/release: $PROMETHEUS_RELEASE/" -e "s#BOOK_URL/#${BOOK_URL%/}/#g" |
    kubectl apply -f -
  echo "Alerts' runbooks: ${BOOK_URL%/}/operate/runbooks.html"
else
  echo "No Prometheus Operator in the cluster: merge deploy/prometheus/scrape-config.yml and alerts.yml into your Prometheus,"
  echo "with BOOK_URL in alerts.yml replaced by ${BOOK_URL%/}"
fi

say "Done. To check:"
echo "  kubectl -n security get pods -l app.kubernetes.io/name=iam-key-revoker"
echo "Next: 60-first-job.sh."
