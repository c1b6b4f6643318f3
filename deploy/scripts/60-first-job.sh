#!/usr/bin/env bash
# Part 6, in the WORKER account, with access to the cluster (1 minute): a first job, for a
# key made for the purpose, on the priority queue. It is revoked within seconds, and a
# replica's audit line says so (every replica's log is read: KEDA keeps two or more).
source "$(dirname "$0")/lib.sh"
in_account worker "$WORKER_ACCOUNT"
export AWS_DEFAULT_REGION=$REGION
load_stack_env
USER_NAME=iam-key-revoker-first-job

say "A key to revoke"
if aws iam get-user --user-name "$USER_NAME" >/dev/null 2>&1; then
  echo "$USER_NAME is left from a run before: removing its keys and it"
  for key in $(aws iam list-access-keys --user-name "$USER_NAME" --query 'AccessKeyMetadata[].AccessKeyId' --output text); do
    aws iam delete-access-key --user-name "$USER_NAME" --access-key-id "$key"
  done
  aws iam delete-user --user-name "$USER_NAME"
fi
aws iam create-user --user-name "$USER_NAME" >/dev/null
KEY=$(aws iam create-access-key --user-name "$USER_NAME" --query AccessKey.AccessKeyId --output text)
echo "$USER_NAME holds $KEY"

say "The job"
iam-key-revoker enqueue --config "$REPO/deploy/kubernetes/worker.toml" --priority \
  --user-name "$USER_NAME" --access-key-id "$KEY" --reason "first job after deploying"
keys_gone() {
  [ -z "$(aws iam list-access-keys --user-name "$USER_NAME" --query 'AccessKeyMetadata[].AccessKeyId' --output text)" ]
}
if ! wait_for 120 "the revocation of $KEY" keys_gone; then
  echo "Read the worker's logs: kubectl -n security logs -l app.kubernetes.io/name=iam-key-revoker --prefix" >&2
  exit 1
fi
echo "$KEY: revoked"
job_logged() {
  kubectl -n security logs -l app.kubernetes.io/name=iam-key-revoker --prefix --tail=-1 |
    grep '"Job finished"' | grep "$KEY"
}
wait_for 30 "a replica's audit line for $KEY" job_logged
aws iam delete-user --user-name "$USER_NAME"

say "Done: the worker revokes."
echo "Next: 70-sample-finding.sh, in a member account with GuardDuty, for the event path."
