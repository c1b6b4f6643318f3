#!/usr/bin/env bash
# Part 3, in the STACKSETS account: the management account or a StackSets delegated
# administrator (10-20 minutes with 50 accounts: every account and Region at once). Two
# service-managed StackSets over TARGET_OUS (the whole organization by default), deployed
# to new accounts as they join: AWS Health's forwarding in us-east-1 and us-west-2 (IAM's
# events are global: us-east-1, us-west-2 as backup; AWS Health User Guide, "Creating
# EventBridge rules for AWS Region coverage"), and the member roles in REGION (IAM is
# global): the worker's, the planner's and the restorer's. Each operation is waited for
# and the instances that failed are listed; one failing account stops no other. A
# service-managed StackSet never deploys to the management account itself:
# 35-management-account.sh does. Re-runnable: an unchanged StackSet is left as it is.
source "$(dirname "$0")/lib.sh"
in_account StackSets "${STACKSETS_ACCOUNT:-$MANAGEMENT_ACCOUNT}"
export AWS_DEFAULT_REGION=$REGION
load_stack_env
ORGANIZATION_ID=$(aws organizations describe-organization --query Organization.Id --output text)
OUS=$(target_ous)
PROTECTED_USER_ARNS=$(protected_user_arns)
PROTECTED_ROLE_ARNS=$(protected_role_arns)
failed=0
ensure_binary

say "AWS Health's forwarding, every account, us-east-1 and us-west-2"
stackset_apply iam-key-revoker-health-forwarding "$REPO/deploy/aws/forwarding.cfn.json" "$OUS" "us-east-1 us-west-2" \
  "SecurityEventBusArn=$SECURITY_EVENT_BUS_ARN" ForwardHealth=true ForwardGuardDuty=false \
  "AlarmTopicName=$ALARM_TOPIC_NAME" "AlarmTopicAccountId=$ALARM_TOPIC_ACCOUNT"

say "The member roles, every account"
stackset_apply iam-key-revoker-member-role "$REPO/deploy/aws/member-role.cfn.json" "$OUS" "$REGION" \
  "WorkerAccountId=$WORKER_ACCOUNT" "WorkerRoleRevision=${WORKER_ROLE_REVISION:-1}" \
  "OrganizationId=$ORGANIZATION_ID" \
  "ProtectedUserArns=$PROTECTED_USER_ARNS" "PlannerPrincipalArns=$PLANNERS" \
  "RestorerPrincipalArns=$RESTORERS" \
  "RevokeRoleSessions=${REVOKE_ROLE_SESSIONS:-false}" "ProtectedRoleArns=$PROTECTED_ROLE_ARNS"

say "Failed instances"
stackset_failures iam-key-revoker-health-forwarding || failed=1
stackset_failures iam-key-revoker-member-role || failed=1

say "Done. To check:"
echo "  aws cloudformation list-stack-instances --call-as $CALL_AS --stack-set-name iam-key-revoker-member-role \\"
echo "    --query \"Summaries[?StackInstanceStatus.DetailedStatus!='SUCCEEDED']\""
echo "New accounts get both as they join (automatic deployment, which no operation preferences"
echo "govern: list the instances now and then)."
echo "Next: 35-management-account.sh (when MANAGEMENT_ACCOUNT_STACKS=true), then 40-guardduty-admin.sh."
exit "$failed"
