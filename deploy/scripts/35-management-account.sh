#!/usr/bin/env bash
# Part 3b, in the MANAGEMENT account, when MANAGEMENT_ACCOUNT_STACKS=true (5 minutes): the
# stacks the StackSets cannot put there (a service-managed StackSet never deploys to the
# management account: CloudFormation API Reference, DeploymentTargets). Management accounts
# often hold the oldest IAM users. The trade-off: a role in the management account,
# trusted by a pod in EKS, that can delete keys and write users' policies; the protected
# users' Deny is on it as on every member role.
source "$(dirname "$0")/lib.sh"
if [ "${MANAGEMENT_ACCOUNT_STACKS:-false}" != true ]; then
  echo "MANAGEMENT_ACCOUNT_STACKS is not true: the management account's users are not covered; nothing to do"
  exit 0
fi
in_account management "$MANAGEMENT_ACCOUNT"
load_stack_env
ensure_binary
ORGANIZATION_ID=$(aws organizations describe-organization --query Organization.Id --output text)

say "AWS Health's forwarding, us-east-1 and us-west-2"
for region in us-east-1 us-west-2; do
  stack_apply iam-key-revoker-health-forwarding "$REPO/deploy/aws/forwarding.cfn.json" "$region" \
    "SecurityEventBusArn=$SECURITY_EVENT_BUS_ARN" ForwardHealth=true ForwardGuardDuty=false \
    "AlarmTopicName=$ALARM_TOPIC_NAME" "AlarmTopicAccountId=$ALARM_TOPIC_ACCOUNT"
done

say "The member roles"
stack_apply iam-key-revoker-member-role "$REPO/deploy/aws/member-role.cfn.json" "$REGION" \
  "WorkerAccountId=$WORKER_ACCOUNT" "WorkerRoleRevision=${WORKER_ROLE_REVISION:-1}" \
  "OrganizationId=$ORGANIZATION_ID" \
  "ProtectedUserArns=$(protected_user_arns)" "PlannerPrincipalArns=$PLANNERS" \
  "RestorerPrincipalArns=$RESTORERS" \
  "RevokeRoleSessions=${REVOKE_ROLE_SESSIONS:-false}" "ProtectedRoleArns=$(protected_role_arns)"

say "Done. To check:"
echo "  aws iam get-role --role-name iam-key-revoker"
echo "Next: 40-guardduty-admin.sh, in the GuardDuty administrator account $GUARDDUTY_ADMIN_ACCOUNT."
