#!/usr/bin/env bash
# Part 7b, in the WORKER account, with access to the cluster (up to 5 minutes): waits for a
# replica to log the sample finding 70-sample-finding.sh made in ACCOUNT, ended
# rejected/not_revocable as a sample (nothing changed). When it does not come: the
# forwarding stacks' alarms and dead-letter queue (FailedInvocations), the bus policy, an
# SCP on events:PutEvents, DELIVER_SAMPLE_FINDINGS.
source "$(dirname "$0")/lib.sh"
ACCOUNT=${1:?usage: 75-check-sample-finding.sh ACCOUNT (where 70-sample-finding.sh made it)}
in_account worker "$WORKER_ACCOUNT"
sample_logged() {
  line=$(kubectl -n security logs -l app.kubernetes.io/name=iam-key-revoker --prefix --tail=-1 |
    grep '"Job finished"' | grep '"not_revocable"' | grep 'sample' | grep "$ACCOUNT" | tail -n 1 || true)
  [ -n "$line" ]
}
wait_for 300 "a replica's log of the sample finding of $ACCOUNT" sample_logged
echo "The sample finding reached the worker, which changed nothing:"
printf '%s\n' "$line"
echo "Its message waits in the priority dead-letter queue (revoker-reason not_revocable), which"
echo "IamKeyRevokerDeadLetterQueueNotEmpty warns of: delete it there (console, or receive and delete)."
say "Done: the event path works from $ACCOUNT."
