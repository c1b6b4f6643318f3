#!/usr/bin/env bash
# Part 7a, in a MEMBER account with GuardDuty (any one; 1 minute, then up to 5
# for the finding to travel): the end-to-end check of the event path. GuardDuty makes a
# sample finding about an IAM user's access key (CreateSampleFindings; it names no real
# key); it travels the forwarding to the worker, which logs it and changes nothing
# (rejected/not_revocable, "sample"). Needs DELIVER_SAMPLE_FINDINGS=true on the stacks.
# Then run 75-check-sample-finding.sh in the worker account.
source "$(dirname "$0")/lib.sh"
REGION_OF_FINDING=${1:-$(printf '%s' "$GUARDDUTY_REGIONS" | cut -d' ' -f1)}
read -r account arn <<<"$(aws sts get-caller-identity --query '[Account,Arn]' --output text)"
printf 'Credentials: %s (account %s)\n' "$arn" "$account"
DETECTOR=$(aws guardduty list-detectors --region "$REGION_OF_FINDING" --query 'DetectorIds[0]' --output text)
if [ -z "$DETECTOR" ] || [ "$DETECTOR" = None ]; then
  echo "error: GuardDuty has no detector in $REGION_OF_FINDING for account $account" >&2
  exit 2
fi
aws guardduty create-sample-findings --region "$REGION_OF_FINDING" --detector-id "$DETECTOR" \
  --finding-types "Exfiltration:IAMUser/AnomalousBehavior"
echo "A sample finding (Exfiltration:IAMUser/AnomalousBehavior, High) was made in $account, $REGION_OF_FINDING."
echo "Next: 75-check-sample-finding.sh $account, in the worker account with the cluster's access."
