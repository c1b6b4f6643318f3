# shellcheck shell=bash
# Sourced by every deploy script (docs, "Deploying"): the settings in deploy.env,
# the check that the credentials are the account a part runs in, and stack operations a
# second run repeats without changing anything. Bash 3.2 or later (macOS's), POSIX tools.
set -euo pipefail
# The AWS CLI v2 pages long output through `less`, which would wait for a key.
export AWS_PAGER=""

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
DEPLOY_ENV=${DEPLOY_ENV:-$HERE/deploy.env}
if [ ! -f "$DEPLOY_ENV" ]; then
  echo "error: $DEPLOY_ENV is missing: copy deploy.env.example there and fill it in" >&2
  exit 2
fi
# shellcheck source=deploy.env.example
. "$DEPLOY_ENV"
STACK_ENV=$REPO/deploy/kubernetes/stack.env
# The worker's Region for calls that name none (a profile's own Region is overridden).
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-$REGION}
# StackSets run from the management account, or a registered delegated administrator
# (CloudFormation API Reference, CallAs).
if [ "${STACKSETS_ACCOUNT:-$MANAGEMENT_ACCOUNT}" = "$MANAGEMENT_ACCOUNT" ]; then
  CALL_AS=SELF
else
  CALL_AS=DELEGATED_ADMIN
fi
# Every account at once in every Region at once, and a failing account stops nothing
# until a tenth have failed (by default CloudFormation does one account at a time and
# stops at the first failure: API Reference, StackSetOperationPreferences).
OPERATION_PREFERENCES=RegionConcurrencyType=PARALLEL,MaxConcurrentPercentage=100,FailureTolerancePercentage=10,ConcurrencyMode=SOFT_FAILURE_TOLERANCE

say() { printf '\n== %s\n' "$*"; }

# in_account NAME ACCOUNT: stops unless the credentials are ACCOUNT's.
in_account() {
  local name=$1 want=$2 account arn
  read -r account arn <<<"$(aws sts get-caller-identity --query '[Account,Arn]' --output text)"
  printf 'Credentials: %s (account %s)\n' "$arn" "$account"
  if [ "$account" != "$want" ]; then
    echo "error: this part runs in the $name account, $want; these credentials are of $account" >&2
    exit 2
  fi
}

# The binary of this checkout's version on PATH, installed when it is not (Rust 1.95 or
# later; a release build of 10-20 minutes).
ensure_binary() {
  local want have
  want=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$REPO/Cargo.toml" | head -n 1)
  have=$(iam-key-revoker --version 2>/dev/null | cut -d' ' -f2 || true)
  if [ "$have" = "$want" ]; then
    echo "iam-key-revoker $have: $(command -v iam-key-revoker)"
  else
    echo "iam-key-revoker ${have:-none} installed, this checkout is $want: installing it"
    cargo install --locked --path "$REPO"
  fi
}

# The stacks' ProtectedUserArns: protect.users of the shipped worker.toml.
protected_user_arns() {
  iam-key-revoker protect-policy --config "$REPO/deploy/kubernetes/worker.toml" --format parameter
}

# The stacks' ProtectedRoleArns: protect.roles of the shipped worker.toml.
protected_role_arns() {
  iam-key-revoker protect-policy --config "$REPO/deploy/kubernetes/worker.toml" --format role-parameter
}

# json_parameters KEY=VALUE...: CloudFormation's parameter list as JSON (a value may hold
# spaces and commas, which the CLI's shorthand would split).
json_parameters() {
  local out="" pair key value
  for pair in "$@"; do
    key=${pair%%=*}
    value=${pair#*=}
    value=${value//\\/\\\\}
    value=${value//\"/\\\"}
    out="$out${out:+,}{\"ParameterKey\":\"$key\",\"ParameterValue\":\"$value\"}"
  done
  printf '[%s]' "$out"
}

# stack_apply NAME TEMPLATE REGION KEY=VALUE...: creates the stack, or updates it when the
# template or a parameter changed (the stack's tag iam-key-revoker-deploy holds their
# checksum); says which. A stack left in ROLLBACK_COMPLETE by a failed create is deleted
# and created again.
stack_apply() {
  local name=$1 template=$2 region=$3 status digest current out
  shift 3
  local parameters
  parameters=$(json_parameters "$@")
  digest=$({ cat "$template"; printf '%s\n' "$@"; } | cksum | cut -d' ' -f1)
  status=$(aws cloudformation describe-stacks --region "$region" --stack-name "$name" \
    --query 'Stacks[0].StackStatus' --output text 2>/dev/null || echo NONE)
  if [ "$status" = ROLLBACK_COMPLETE ]; then
    echo "Stack $name in $region failed to create before: deleting it to create it again"
    aws cloudformation delete-stack --region "$region" --stack-name "$name"
    aws cloudformation wait stack-delete-complete --region "$region" --stack-name "$name"
    status=NONE
  fi
  if [ "$status" = NONE ]; then
    aws cloudformation create-stack --region "$region" --stack-name "$name" \
      --template-body "file://$template" --capabilities CAPABILITY_IAM CAPABILITY_NAMED_IAM \
      --parameters "$parameters" --tags "Key=iam-key-revoker-deploy,Value=$digest" >/dev/null
    aws cloudformation wait stack-create-complete --region "$region" --stack-name "$name"
    echo "Stack $name in $region: created"
    return 0
  fi
  current=$(aws cloudformation describe-stacks --region "$region" --stack-name "$name" \
    --query "Stacks[0].Tags[?Key=='iam-key-revoker-deploy'].Value" --output text)
  if [ "$current" = "$digest" ]; then
    echo "Stack $name in $region: unchanged"
  elif out=$(aws cloudformation update-stack --region "$region" --stack-name "$name" \
    --template-body "file://$template" --capabilities CAPABILITY_IAM CAPABILITY_NAMED_IAM \
    --parameters "$parameters" --tags "Key=iam-key-revoker-deploy,Value=$digest" 2>&1); then
    aws cloudformation wait stack-update-complete --region "$region" --stack-name "$name"
    echo "Stack $name in $region: updated"
  elif printf '%s' "$out" | grep -q 'No updates are to be performed'; then
    # UpdateStack's answer when nothing would change (CloudFormation API Reference): the
    # stack predates the tag, or only the tag differs.
    echo "Stack $name in $region: unchanged"
  else
    printf '%s\n' "$out" >&2
    return 1
  fi
}

# stack_remove NAME REGION: deletes the stack if there is one.
stack_remove() {
  local name=$1 region=$2
  if aws cloudformation describe-stacks --region "$region" --stack-name "$name" >/dev/null 2>&1; then
    aws cloudformation delete-stack --region "$region" --stack-name "$name"
    aws cloudformation wait stack-delete-complete --region "$region" --stack-name "$name"
    echo "Stack $name in $region: deleted"
  else
    echo "Stack $name in $region: none"
  fi
}

# wait_for SECONDS WHAT COMMAND...: runs COMMAND every 2 seconds until it succeeds; after
# SECONDS, fails saying WHAT did not happen.
wait_for() {
  local limit=$1 what=$2 waited=0
  shift 2
  until "$@"; do
    if [ "$waited" -ge "$limit" ]; then
      echo "error: $what did not happen within $limit seconds" >&2
      return 1
    fi
    sleep 2
    waited=$((waited + 2))
  done
}

# wait_operation STACKSET OPERATION: until the StackSet operation ends; its status.
wait_operation() {
  local set=$1 operation=$2 status waited=0
  while :; do
    status=$(aws cloudformation describe-stack-set-operation --call-as "$CALL_AS" \
      --stack-set-name "$set" --operation-id "$operation" \
      --query StackSetOperation.Status --output text)
    case $status in
      SUCCEEDED | FAILED | STOPPED) break ;;
    esac
    if [ "$waited" -ge 3600 ]; then
      echo "StackSet $set: operation $operation still $status after an hour; check it with describe-stack-set-operation" >&2
      return 1
    fi
    sleep 15
    waited=$((waited + 15))
  done
  echo "StackSet $set: operation $operation $status"
}

# stackset_failures STACKSET: lists the instances that failed (FAILED, CANCELLED,
# INOPERABLE, FAILED_IMPORT); true when none. Suspended accounts (SKIPPED_SUSPENDED_ACCOUNT)
# and instances still deploying (PENDING, RUNNING: a new account) are said, not failures.
stackset_failures() {
  local set=$1 failed others
  # shellcheck disable=SC2016 # JMESPath's literals are in backquotes
  if ! failed=$(aws cloudformation list-stack-instances --call-as "$CALL_AS" --stack-set-name "$set" \
    --query 'Summaries[?contains(`["FAILED","CANCELLED","INOPERABLE","FAILED_IMPORT"]`, StackInstanceStatus.DetailedStatus)].[Account,Region,StackInstanceStatus.DetailedStatus,StatusReason]' \
    --output text); then
    echo "error: StackSet $set: its instances could not be listed" >&2
    return 1
  fi
  # shellcheck disable=SC2016 # JMESPath's literals are in backquotes
  others=$(aws cloudformation list-stack-instances --call-as "$CALL_AS" --stack-set-name "$set" \
    --query 'Summaries[?contains(`["PENDING","RUNNING","SKIPPED_SUSPENDED_ACCOUNT"]`, StackInstanceStatus.DetailedStatus)].[Account,Region,StackInstanceStatus.DetailedStatus]' \
    --output text) || others=""
  if [ -n "$others" ] && [ "$others" != None ]; then
    echo "StackSet $set: not failed, not done (account, Region, status):"
    printf '%s\n' "$others"
  fi
  if [ -n "$failed" ] && [ "$failed" != None ]; then
    echo "StackSet $set: these instances failed (account, Region, status, reason):" >&2
    printf '%s\n' "$failed" >&2
    return 1
  fi
  echo "StackSet $set: no instance failed"
}

# stackset_apply NAME TEMPLATE TARGET_OUS "REGIONS" KEY=VALUE...: a service-managed
# StackSet with automatic deployment to the organizational units' accounts (new accounts
# included), created, or updated when the template or a parameter changed (the
# description carries their checksum), and instances in each Region that has none.
stackset_apply() {
  local name=$1 template=$2 ous=$3 regions=$4 current digest description operation missing="" region count
  shift 4
  local parameters
  parameters=$(json_parameters "$@")
  digest=$({ cat "$template"; printf '%s\n' "$@"; } | cksum | cut -d' ' -f1)
  description="iam-key-revoker $name (template and parameters cksum $digest)"
  if current=$(aws cloudformation describe-stack-set --call-as "$CALL_AS" --stack-set-name "$name" \
    --query StackSet.Description --output text 2>/dev/null); then
    if [ "$current" = "$description" ]; then
      echo "StackSet $name: unchanged"
    else
      operation=$(aws cloudformation update-stack-set --call-as "$CALL_AS" --stack-set-name "$name" \
        --template-body "file://$template" --capabilities CAPABILITY_IAM CAPABILITY_NAMED_IAM \
        --parameters "$parameters" --description "$description" \
        --operation-preferences "$OPERATION_PREFERENCES" --query OperationId --output text)
      wait_operation "$name" "$operation"
    fi
  else
    aws cloudformation create-stack-set --call-as "$CALL_AS" --stack-set-name "$name" \
      --template-body "file://$template" --capabilities CAPABILITY_IAM CAPABILITY_NAMED_IAM \
      --permission-model SERVICE_MANAGED \
      --auto-deployment Enabled=true,RetainStacksOnAccountRemoval=false \
      --parameters "$parameters" --description "$description" >/dev/null
    echo "StackSet $name: created"
  fi
  for region in $regions; do
    count=$(aws cloudformation list-stack-instances --call-as "$CALL_AS" --stack-set-name "$name" \
      --stack-instance-region "$region" --query 'length(Summaries)' --output text)
    case $count in
      '' | *[!0-9]*)
        echo "error: StackSet $name: its instances in $region could not be counted ($count)" >&2
        return 1
        ;;
    esac
    if [ "$count" = 0 ]; then
      missing="$missing $region"
    fi
  done
  if [ -n "$missing" ]; then
    # shellcheck disable=SC2086 # one argument per Region
    operation=$(aws cloudformation create-stack-instances --call-as "$CALL_AS" --stack-set-name "$name" \
      --deployment-targets "OrganizationalUnitIds=${ous// /,}" --regions $missing \
      --operation-preferences "$OPERATION_PREFERENCES" --query OperationId --output text)
    wait_operation "$name" "$operation"
  else
    echo "StackSet $name: instances in $regions already"
  fi
}

# stackset_remove NAME TARGET_OUS "REGIONS": deletes its instances (and their stacks),
# then the StackSet.
stackset_remove() {
  local name=$1 ous=$2 regions=$3 operation
  if ! aws cloudformation describe-stack-set --call-as "$CALL_AS" --stack-set-name "$name" >/dev/null 2>&1; then
    echo "StackSet $name: none"
    return 0
  fi
  if [ "$(aws cloudformation list-stack-instances --call-as "$CALL_AS" --stack-set-name "$name" \
    --query 'length(Summaries)' --output text)" != 0 ]; then
    # shellcheck disable=SC2086 # one argument per Region
    operation=$(aws cloudformation delete-stack-instances --call-as "$CALL_AS" --stack-set-name "$name" \
      --deployment-targets "OrganizationalUnitIds=${ous// /,}" --regions $regions --no-retain-stacks \
      --operation-preferences "$OPERATION_PREFERENCES" --query OperationId --output text)
    wait_operation "$name" "$operation"
    if [ "$(aws cloudformation list-stack-instances --call-as "$CALL_AS" --stack-set-name "$name" \
      --query 'length(Summaries)' --output text)" != 0 ]; then
      echo "error: StackSet $name still has instances; their stacks could not all be deleted:" >&2
      stackset_failures "$name" || true
      return 1
    fi
  fi
  aws cloudformation delete-stack-set --call-as "$CALL_AS" --stack-set-name "$name"
  echo "StackSet $name: deleted"
}

# The organizational units the StackSets deploy to (separated by spaces): TARGET_OUS, or
# the organization's root.
target_ous() {
  if [ -n "${TARGET_OUS:-}" ]; then
    printf '%s' "$TARGET_OUS"
  else
    aws organizations list-roots --query 'Roots[0].Id' --output text
  fi
}

# The worker stack's outputs (20-worker-account.sh wrote them).
load_stack_env() {
  if [ ! -f "$STACK_ENV" ]; then
    echo "error: $STACK_ENV is missing: run 20-worker-account.sh first, from this checkout" >&2
    exit 2
  fi
  set -a
  # shellcheck source=/dev/null
  . "$STACK_ENV"
  set +a
}
