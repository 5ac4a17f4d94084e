#!/usr/bin/env bash
# The deployer: the service account Terraform runs as (Cloud Build, and you by impersonation),
# with what `terraform apply` of infra/terraform needs and no more. Run once per project by
# someone who may create service accounts and set the project's IAM policy (README, Deploying,
# step 2). Re-running it changes nothing.
#
#   infra/deployer.sh PROJECT [USER_EMAIL]
#
# USER_EMAIL (optional) may then impersonate the deployer (Service Account Token Creator on it)
# for the first apply, and submit the deployment build as it (Service Account User on it).
#
# No roles/editor, no roles/owner, no roles/iam.securityAdmin: each role below names what in
# infra/terraform needs it. Project IAM grants go through resourcemanager.projectIamAdmin, but
# with a condition: the deployer may add or remove project-level bindings of the GRANTABLE roles
# only, which are exactly the roles iam.tf grants on the project (tests/unit/test_terraform.py
# keeps the two lists equal). It acts as the accounts Terraform makes through grants on each of
# them (iam.tf, var.deployer_service_account), not through a project-wide serviceAccountUser.
set -euo pipefail

PROJECT=${1:?usage: infra/deployer.sh PROJECT [USER_EMAIL]}
USER_EMAIL=${2:-}
DEPLOYER=tts-deployer@$PROJECT.iam.gserviceaccount.com

ROLES=(
  roles/serviceusage.serviceUsageAdmin # apis.tf; the Pub/Sub and Eventarc service identities
  roles/datastore.owner                # firestore.tf: both databases, TTL policies, indexes
  roles/storage.admin                  # storage.tf: buckets, their IAM, the source zips; the state
  roles/pubsub.admin                   # pubsub.tf: topics, subscriptions and their IAM
  roles/cloudfunctions.developer       # functions.tf
  roles/run.admin                      # run.invoker grants on the functions' Cloud Run services
  roles/eventarc.admin                 # the storage and topic triggers (unsure whether Cloud Functions makes them with the caller's rights or its agent's: kept to be safe)
  roles/secretmanager.admin            # secrets.tf: the containers and their IAM; secret values by hand
  roles/iam.serviceAccountAdmin        # the accounts, and grants on them (incl. its own act-as)
  roles/cloudscheduler.admin           # scheduler.tf
  roles/logging.configWriter           # monitoring.tf: log-based metrics
  roles/monitoring.editor              # monitoring.tf: dashboard, service and SLO, alert policies, channels
  roles/logging.logWriter              # the deployment build's own logs
)

GRANTABLE=(
  roles/artifactregistry.writer
  roles/cloudtrace.agent
  roles/datastore.user
  roles/eventarc.eventReceiver
  roles/eventarc.serviceAgent
  roles/logging.logWriter
  roles/pubsub.publisher
  roles/storage.objectAdmin
)

member=serviceAccount:$DEPLOYER
if ! gcloud iam service-accounts describe "$DEPLOYER" --project="$PROJECT" >/dev/null 2>&1; then
  gcloud iam service-accounts create tts-deployer --project="$PROJECT" \
    --display-name="TTS deployer (Terraform)"
fi
for role in "${ROLES[@]}"; do
  gcloud projects add-iam-policy-binding "$PROJECT" --member="$member" --role="$role" \
    --condition=None --quiet >/dev/null
done

quoted=$(printf "'%s', " "${GRANTABLE[@]}")
expression="api.getAttribute('iam.googleapis.com/modifiedGrantsByRole', []).hasOnly([${quoted%, }])"
# "^;^" makes ';' the separator of the condition's fields (the expression holds commas).
gcloud projects add-iam-policy-binding "$PROJECT" --member="$member" \
  --role=roles/resourcemanager.projectIamAdmin --quiet >/dev/null \
  --condition="^;^title=tts-grants-only;description=Only the roles infra/terraform grants on the project;expression=$expression"

if [[ -n $USER_EMAIL ]]; then
  for role in roles/iam.serviceAccountTokenCreator roles/iam.serviceAccountUser; do
    gcloud iam service-accounts add-iam-policy-binding "$DEPLOYER" --project="$PROJECT" \
      --member="user:$USER_EMAIL" --role="$role" --quiet >/dev/null
  done
fi
echo "$DEPLOYER"
