#!/usr/bin/env bash
# Part 4, in the GUARDDUTY ADMINISTRATOR account (5 minutes a Region): GuardDuty delivers a
# finding in the Region where it was found, and a member's findings also reach the
# administrator in that Region; a forwarding stack in each of GUARDDUTY_REGIONS sends the
# access-key findings to the worker's bus. With UPDATE_FINDINGS=true, Security Hub is
# turned on for the organization's new accounts there too. Re-runnable.
source "$(dirname "$0")/lib.sh"
in_account "GuardDuty administrator" "$GUARDDUTY_ADMIN_ACCOUNT"
load_stack_env

for region in $GUARDDUTY_REGIONS; do
  say "GuardDuty's forwarding in $region"
  stack_apply iam-key-revoker-guardduty-forwarding "$REPO/deploy/aws/forwarding.cfn.json" "$region" \
    "SecurityEventBusArn=$SECURITY_EVENT_BUS_ARN" ForwardHealth=false ForwardGuardDuty=true \
    "DeliverSampleFindings=${DELIVER_SAMPLE_FINDINGS:-false}" \
    "AlarmTopicName=$ALARM_TOPIC_NAME" "AlarmTopicAccountId=$ALARM_TOPIC_ACCOUNT"
done

if [ "${UPDATE_FINDINGS:-false}" = true ]; then
  for region in $GUARDDUTY_REGIONS; do
    say "Security Hub in $region: on in every account, new ones too (intake.update_findings)"
    if [ "$(aws securityhub describe-organization-configuration --region "$region" --query AutoEnable --output text)" = True ]; then
      echo "New accounts: enabled already"
    else
      aws securityhub update-organization-configuration --region "$region" --auto-enable
      echo "New accounts: enabled from now on (existing members: Security Hub's console, Configuration)"
    fi
  done
fi

say "Done. To check:"
echo "  aws cloudformation describe-stacks --region REGION --stack-name iam-key-revoker-guardduty-forwarding"
echo "Next: 50-cluster.sh, in the worker account with the cluster's access."
