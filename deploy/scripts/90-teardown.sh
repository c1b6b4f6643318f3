#!/usr/bin/env bash
# The teardown, a part at a time, each in its own account, in this order:
#   90-teardown.sh cluster      the WORKER account, with the cluster's access
#   90-teardown.sh guardduty    the GUARDDUTY ADMINISTRATOR account
#   90-teardown.sh management   the MANAGEMENT account (its own stacks, if any)
#   90-teardown.sh stacksets    the STACKSETS account
#   90-teardown.sh worker       the WORKER account
# The worker stack goes last: the member roles trust its role. KEDA stays (another team's
# ScaledObjects may use it); the OIDC provider stays (other IRSA roles trust it). Each part
# is re-runnable: what is gone already is said and skipped.
source "$(dirname "$0")/lib.sh"
part=${1:?usage: 90-teardown.sh cluster|guardduty|management|stacksets|worker}
case $part in
  cluster)
    in_account worker "$WORKER_ACCOUNT"
    aws eks update-kubeconfig --name "$CLUSTER" --region "$REGION"
    echo "Context: $(kubectl config current-context)"
    # The worker's objects by name; the namespace stays (other tools may live there).
    kubectl -n security delete --ignore-not-found scaledobject/iam-key-revoker \
      triggerauthentication/iam-key-revoker-keda deployment/iam-key-revoker \
      poddisruptionbudget/iam-key-revoker serviceaccount/iam-key-revoker
    kubectl -n security delete --ignore-not-found configmap -l app.kubernetes.io/name=iam-key-revoker
    if kubectl get crd podmonitors.monitoring.coreos.com >/dev/null 2>&1; then
      kubectl -n security delete --ignore-not-found podmonitor/iam-key-revoker prometheusrule/iam-key-revoker
    fi
    echo "The worker's objects in the namespace security: deleted (the namespace stays)"
    ;;
  guardduty)
    in_account "GuardDuty administrator" "$GUARDDUTY_ADMIN_ACCOUNT"
    for region in $GUARDDUTY_REGIONS; do
      stack_remove iam-key-revoker-guardduty-forwarding "$region"
    done
    ;;
  management)
    in_account management "$MANAGEMENT_ACCOUNT"
    stack_remove iam-key-revoker-member-role "$REGION"
    for region in us-east-1 us-west-2; do
      stack_remove iam-key-revoker-health-forwarding "$region"
    done
    ;;
  stacksets)
    in_account StackSets "${STACKSETS_ACCOUNT:-$MANAGEMENT_ACCOUNT}"
    export AWS_DEFAULT_REGION=$REGION
    OUS=$(target_ous)
    stackset_remove iam-key-revoker-member-role "$OUS" "$REGION"
    stackset_remove iam-key-revoker-health-forwarding "$OUS" "us-east-1 us-west-2"
    ;;
  worker)
    in_account worker "$WORKER_ACCOUNT"
    # The operators' policies leave their roles first: CloudFormation deletes a managed
    # policy only once nothing it did not attach it to holds it.
    for role_arn in $PLANNERS $RESTORERS ${BREAKER_OPERATORS:-}; do
      case $role_arn in
        "arn:aws:iam::$WORKER_ACCOUNT:role/"*) ;;
        *) continue ;;
      esac
      role=${role_arn##*/}
      for policy in $(aws iam list-attached-role-policies --role-name "$role"         --query "AttachedPolicies[?PolicyName=='iam-key-revoker-plan' || PolicyName=='iam-key-revoker-restore' || PolicyName=='iam-key-revoker-breaker-operator'].PolicyArn"         --output text 2>/dev/null || true); do
        aws iam detach-role-policy --role-name "$role" --policy-arn "$policy"
        echo "$role: ${policy##*/} taken off"
      done
    done
    if aws ecr describe-repositories --region "$REGION" --repository-names iam-key-revoker >/dev/null 2>&1; then
      aws ecr delete-repository --region "$REGION" --repository-name iam-key-revoker --force >/dev/null
      echo "Repository iam-key-revoker: deleted"
    else
      echo "Repository iam-key-revoker: none"
    fi
    stack_remove iam-key-revoker "$REGION"
    rm -f "$STACK_ENV"
    ;;
  *)
    echo "usage: 90-teardown.sh cluster|guardduty|management|stacksets|worker" >&2
    exit 2
    ;;
esac
say "Teardown of $part: done"
