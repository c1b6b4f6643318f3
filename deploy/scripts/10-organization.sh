#!/usr/bin/env bash
# Part 1, in the organization's MANAGEMENT account (a few minutes): what the other parts
# need of the organization. CloudFormation StackSets' trusted access with Organizations
# (without it a service-managed StackSet is refused: API Reference,
# ActivateOrganizationsAccess); a StackSets delegated administrator when STACKSETS_ACCOUNT
# is not this account; GuardDuty's delegated administrator in each of GUARDDUTY_REGIONS,
# and Security Hub's (the same account) with UPDATE_FINDINGS=true.
# Re-runnable: what is in place already is left as it is.
source "$(dirname "$0")/lib.sh"
in_account management "$MANAGEMENT_ACCOUNT"

say "CloudFormation StackSets: trusted access with Organizations"
if [ "$(aws cloudformation describe-organizations-access --query Status --output text 2>/dev/null || echo UNKNOWN)" = ENABLED ]; then
  echo "Trusted access: enabled already"
else
  aws cloudformation activate-organizations-access
  echo "Trusted access: enabled"
fi

if [ "$CALL_AS" = DELEGATED_ADMIN ]; then
  say "CloudFormation StackSets: delegated administrator $STACKSETS_ACCOUNT"
  if aws organizations list-delegated-administrators \
    --service-principal member.org.stacksets.cloudformation.amazonaws.com \
    --query 'DelegatedAdministrators[].Id' --output text | tr '\t' '\n' | grep -qx "$STACKSETS_ACCOUNT"; then
    echo "Registered already"
  else
    aws organizations register-delegated-administrator --account-id "$STACKSETS_ACCOUNT" \
      --service-principal member.org.stacksets.cloudformation.amazonaws.com
    echo "Registered"
  fi
fi

say "GuardDuty: delegated administrator $GUARDDUTY_ADMIN_ACCOUNT"
for region in $GUARDDUTY_REGIONS; do
  status=$(aws guardduty list-organization-admin-accounts --region "$region" \
    --query "AdminAccounts[?AdminAccountId=='$GUARDDUTY_ADMIN_ACCOUNT'].AdminStatus" --output text)
  if [ "$status" = ENABLED ]; then
    echo "$region: administrator already"
  else
    aws guardduty enable-organization-admin-account --region "$region" \
      --admin-account-id "$GUARDDUTY_ADMIN_ACCOUNT"
    echo "$region: administrator registered"
  fi
done

if [ "${UPDATE_FINDINGS:-false}" = true ]; then
  say "Security Hub: delegated administrator $GUARDDUTY_ADMIN_ACCOUNT (intake.update_findings)"
  for region in $GUARDDUTY_REGIONS; do
    status=$(aws securityhub list-organization-admin-accounts --region "$region" \
      --query "AdminAccounts[?AccountId=='$GUARDDUTY_ADMIN_ACCOUNT'].Status" --output text)
    if [ "$status" = ENABLED ]; then
      echo "$region: administrator already"
    else
      aws securityhub enable-organization-admin-account --region "$region" \
        --admin-account-id "$GUARDDUTY_ADMIN_ACCOUNT"
      echo "$region: administrator registered"
    fi
  done
fi

say "Done. To check:"
echo "  aws cloudformation describe-organizations-access        # Status ENABLED"
echo "  aws guardduty list-organization-admin-accounts --region REGION"
echo "Next: 20-worker-account.sh, in the worker account $WORKER_ACCOUNT."
