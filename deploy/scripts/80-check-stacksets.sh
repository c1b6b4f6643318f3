#!/usr/bin/env bash
# Part 8, in the STACKSETS account, now and then (a scheduled job, say daily; 1 minute):
# the StackSets deploy to each account that joins the organization on their own
# (automatic deployment, which no operation preferences govern), so a failure there shows
# only in the instances' status. Lists the instances that failed and those not current;
# exit 1 when any failed.
source "$(dirname "$0")/lib.sh"
in_account StackSets "${STACKSETS_ACCOUNT:-$MANAGEMENT_ACCOUNT}"
failed=0
for set in iam-key-revoker-health-forwarding iam-key-revoker-member-role; do
  say "$set"
  stackset_failures "$set" || failed=1
  outdated=$(aws cloudformation list-stack-instances --call-as "$CALL_AS" --stack-set-name "$set" \
    --query "Summaries[?Status!='CURRENT'].[Account,Region,Status,StatusReason]" --output text)
  if [ -n "$outdated" ] && [ "$outdated" != None ]; then
    echo "Not current (account, Region, status, reason): a later update did not reach them"
    printf '%s\n' "$outdated"
  else
    echo "Every instance is current"
  fi
done
exit "$failed"
