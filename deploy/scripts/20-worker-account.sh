#!/usr/bin/env bash
# Part 2, in the WORKER account (10-20 minutes, most of it the image's release build): the
# binary, the cluster's OIDC provider, the worker stack (queues, roles, the security
# events' bus and rules, the outcome sinks), the operators' policies on their roles,
# deploy/kubernetes/stack.env from the stack's outputs, and the image in ECR.
# Re-runnable: an unchanged stack is left as it is, an image already pushed is kept.
source "$(dirname "$0")/lib.sh"
in_account worker "$WORKER_ACCOUNT"
export AWS_DEFAULT_REGION=$REGION
ORGANIZATION_ID=$(aws organizations describe-organization --query Organization.Id --output text)
REGISTRY=$WORKER_ACCOUNT.dkr.ecr.$REGION.amazonaws.com
IMAGE=$REGISTRY/iam-key-revoker:$VERSION

say "The binary (the commands and the worker)"
ensure_binary
PROTECTED_USER_ARNS=$(protected_user_arns)
PROTECTED_ROLE_ARNS=$(protected_role_arns)
echo "Protected users (IAM's Deny): ${PROTECTED_USER_ARNS:-none}"

say "The cluster's IAM OIDC provider (IRSA trusts it)"
OIDC_ISSUER=$(aws eks describe-cluster --name "$CLUSTER" --query cluster.identity.oidc.issuer --output text)
OIDC_PROVIDER=${OIDC_ISSUER#https://}
if aws iam list-open-id-connect-providers --output text | grep -qF "oidc-provider/$OIDC_PROVIDER"; then
  echo "OIDC provider: exists"
else
  aws iam create-open-id-connect-provider --url "$OIDC_ISSUER" --client-id-list sts.amazonaws.com >/dev/null
  echo "OIDC provider: created"
fi

say "The worker stack"
stack_apply iam-key-revoker "$REPO/deploy/aws/worker.cfn.json" "$REGION" \
  "OidcProvider=$OIDC_PROVIDER" "OrganizationId=$ORGANIZATION_ID" \
  "ProtectedUserArns=$PROTECTED_USER_ARNS" "ProducerPrincipalArns=$PRODUCERS" \
  "DeliverSampleFindings=${DELIVER_SAMPLE_FINDINGS:-false}" \
  "RevokeRoleSessions=${REVOKE_ROLE_SESSIONS:-false}" "ProtectedRoleArns=$PROTECTED_ROLE_ARNS"
{
  aws cloudformation describe-stacks --stack-name iam-key-revoker \
    --query 'Stacks[0].Outputs[].[Description,OutputValue]' --output text | tr '\t' '='
  echo "IMAGE=$IMAGE"
} >"$STACK_ENV.new"
mv "$STACK_ENV.new" "$STACK_ENV"
echo "Wrote $STACK_ENV"
load_stack_env

say "The operators' policies"
attach() {
  local role_arn=$1 policy=$2 role
  case $role_arn in
    "arn:aws:iam::$WORKER_ACCOUNT:role/aws-reserved/"*)
      echo "$role_arn is IAM Identity Center's: give its permission set ${policy##*/}'s rights"
      ;;
    "arn:aws:iam::$WORKER_ACCOUNT:role/"*)
      role=${role_arn##*/}
      if aws iam list-attached-role-policies --role-name "$role" \
        --query 'AttachedPolicies[].PolicyArn' --output text | tr '\t' '\n' | grep -qx "$policy"; then
        echo "$role: has ${policy##*/} already"
      else
        aws iam attach-role-policy --role-name "$role" --policy-arn "$policy"
        echo "$role: given ${policy##*/}"
      fi
      ;;
    *) echo "$role_arn is not of this account: give it ${policy##*/}'s rights in its own" ;;
  esac
}
for role in $PLANNERS; do attach "$role" "$PLAN_OPERATOR_POLICY_ARN"; done
for role in $RESTORERS; do attach "$role" "$RESTORE_OPERATOR_POLICY_ARN"; done
for role in ${BREAKER_OPERATORS:-}; do attach "$role" "$BREAKER_OPERATOR_POLICY_ARN"; done

say "The image, for $IMAGE_PLATFORM"
if aws ecr describe-repositories --repository-names iam-key-revoker >/dev/null 2>&1; then
  echo "Repository: exists"
else
  aws ecr create-repository --repository-name iam-key-revoker >/dev/null
  echo "Repository: created"
fi
if aws ecr describe-images --repository-name iam-key-revoker --image-ids "imageTag=$VERSION" >/dev/null 2>&1; then
  echo "$IMAGE: pushed already (a new VERSION builds a new one)"
else
  aws ecr get-login-password | docker login --username AWS --password-stdin "$REGISTRY"
  docker buildx build --platform "$IMAGE_PLATFORM" -t "$IMAGE" --push "$REPO"
  echo "$IMAGE: built and pushed"
fi

say "Done. To check:"
echo "  aws cloudformation describe-stacks --stack-name iam-key-revoker --query 'Stacks[0].StackStatus'"
echo "  aws ecr describe-images --repository-name iam-key-revoker --image-ids imageTag=$VERSION"
echo "Next: 30-stacksets.sh, in the StackSets account ${STACKSETS_ACCOUNT:-$MANAGEMENT_ACCOUNT}."
