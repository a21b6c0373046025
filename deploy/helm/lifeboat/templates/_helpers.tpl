{{/* The prefix of every object's name. */}}
{{- define "lifeboat.fullname" -}}
{{- if contains "lifeboat" .Release.Name -}}
{{- .Release.Name | trunc 30 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-lifeboat" .Release.Name | trunc 30 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "lifeboat.labels" -}}
app.kubernetes.io/name: lifeboat
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The datastores, in backup order. */}}
{{- define "lifeboat.storeNames" -}}postgres mongodb influxdb minio{{- end -}}

{{/* "backup", "restore" or "" (nothing enabled); refuses both. */}}
{{- define "lifeboat.role" -}}
{{- if and .Values.backup.enabled .Values.restore.enabled -}}
{{- fail "backup.enabled and restore.enabled are both true: a release is either backup (production) or restore (staging), never both; set one of them to false" -}}
{{- else if .Values.backup.enabled -}}backup
{{- else if .Values.restore.enabled -}}restore
{{- end -}}
{{- end -}}

{{/* The folder on the backup server of a store: its own server_dir, else the role's backup_server_dir. */}}
{{- define "lifeboat.storeDir" -}}
{{- $r := index .root.Values .role -}}
{{- $s := index .root.Values .store -}}
{{- $s.server_dir | default $r.server.backup_server_dir | trimSuffix "/" -}}
{{- end -}}

{{/* A schedule: a cron string, or a map looked up by key; fallback when absent. */}}
{{- define "lifeboat.schedule" -}}
{{- if kindIs "map" .sched -}}
{{- index .sched .key | default .fallback -}}
{{- else -}}
{{- .sched | default .fallback -}}
{{- end -}}
{{- end -}}

{{/* Every refusal that needs more than the schema can say. */}}
{{- define "lifeboat.validate" -}}
{{- $role := include "lifeboat.role" . -}}
{{- if $role -}}
{{- $r := index .Values $role -}}
{{- if not $r.server.host -}}
{{- if ($r.secrets.ssh_key_secret | default dict).name -}}
{{- fail (printf "%s.server.host is empty: set the backup server's host name; the chart does not read it from Secret %s (it is rendered into the configuration): kubectl get secret %s -o jsonpath='{.data.host}' | base64 -d" $role $r.secrets.ssh_key_secret.name $r.secrets.ssh_key_secret.name) -}}
{{- end -}}
{{- fail (printf "%s.server.host is empty: set the backup server's host name" $role) -}}
{{- end -}}
{{- $keySecret := $r.secrets.ssh_key_secret | default dict -}}
{{- if and (not $r.secrets.existing_secret) (not $r.secrets.ssh_key) (not $keySecret.name) -}}
{{- fail (printf "%s.secrets: no SSH key: set %s.secrets.ssh_key_secret.name (an existing Secret holding it, e.g. the original chart's backup-server-ssh-credentials), %s.secrets.existing_secret (a Secret with ssh_key and known_hosts) or %s.secrets.ssh_key" $role $role $role $role) -}}
{{- end -}}
{{- if and $keySecret.name $r.secrets.ssh_key -}}
{{- fail (printf "%s.secrets.ssh_key and %s.secrets.ssh_key_secret.name are both set: give the SSH key one way; remove %s.secrets.ssh_key to use the key of Secret %s" $role $role $role $keySecret.name) -}}
{{- end -}}
{{- if and (not $r.secrets.existing_secret) (not $r.secrets.known_hosts) -}}
{{- fail (printf "%s.secrets.known_hosts is empty: the backup server's host key must be verified; set it (ssh-keyscan -p PORT HOST, checked) or %s.secrets.existing_secret with a known_hosts key" $role $role) -}}
{{- end -}}
{{- if and (eq $role "backup") (not $r.secrets.existing_secret) (not $r.secrets.signing_key) -}}
{{- fail "backup.secrets.signing_key is empty: every backup's manifest is signed; make a key (ssh-keygen -t ed25519 -N '') or set backup.secrets.existing_secret with a signing_key key" -}}
{{- end -}}
{{- if and (eq $role "restore") (not $r.secrets.existing_secret) (not $r.secrets.allowed_signers) -}}
{{- fail "restore.secrets.allowed_signers is empty: a restore checks who signed each backup; give the production signing key's line (lifeboat@production namespaces=\"lifeboat\" ssh-ed25519 ...) or restore.secrets.existing_secret with an allowed_signers key" -}}
{{- end -}}
{{- if and (eq $role "backup") (eq $r.encryption.mode "age") (not $r.encryption.recipients) -}}
{{- fail "backup.encryption.recipients is empty: give the age public key(s) (lifeboat keygen) that may decrypt the backups" -}}
{{- end -}}
{{- if and (eq $role "restore") (eq $r.encryption.mode "age") (not $r.secrets.existing_secret) (not $r.secrets.age_identity) -}}
{{- fail "restore.secrets.age_identity is empty: a restore needs the age identity (or restore.secrets.existing_secret with an age_identity key)" -}}
{{- end -}}
{{- if and (eq $r.encryption.mode "passphrase") (not $r.secrets.existing_secret) (not $r.secrets.passphrase) -}}
{{- fail (printf "%s.secrets.passphrase is empty while %s.encryption.mode is passphrase" $role $role) -}}
{{- end -}}
{{- if and (eq $role "restore") $r.from $r.cronjob -}}
{{- fail "restore.from is set but restore.cronjob is true: a chosen backup is restored by a one-off Job; set restore.cronjob=false" -}}
{{- end -}}
{{- if and (eq $role "restore") $r.target_time (not (and .Values.postgres.enabled (eq .Values.postgres.type "differential"))) -}}
{{- fail "restore.target_time is set but postgres is not enabled with type differential: only a pgBackRest restore reaches a point in time; unset restore.target_time" -}}
{{- end -}}
{{- $legacy := .Values.legacy | default dict -}}
{{- if $legacy.import -}}
{{- if ne $role "backup" -}}
{{- fail "legacy.import is true but this release is a restore: importing writes signed runs with production's signing key, so it runs on the backup side (backup.enabled=true)" -}}
{{- end -}}
{{- if $r.cronjob -}}
{{- fail "legacy.import is true but backup.cronjob is true: an import runs once, as one-off Jobs; render it apart with --set backup.cronjob=false,legacy.import=true (and a release name of its own)" -}}
{{- end -}}
{{- if not ($legacy.passphrase_secret | default dict).name -}}
{{- fail "legacy.import is true but legacy.passphrase_secret.name is empty: name the original chart's encryption Secret (backup-encryption-secret, key backup_encryption_key)" -}}
{{- end -}}
{{- if not (include "lifeboat.jobs" . | fromYaml).jobs -}}
{{- fail "legacy.import is true but no enabled store is of type dump: import makes dump runs (a differential store keeps its own repository); enable a dump store" -}}
{{- end -}}
{{- end -}}
{{- $text := .Values.monitoring.textfile -}}
{{- if and $text.enabled (eq (empty $text.host_path) (empty $text.claim_name)) -}}
{{- fail "monitoring.textfile.enabled is true: set exactly one of monitoring.textfile.host_path (node_exporter's textfile folder on the node) and monitoring.textfile.claim_name (a PersistentVolumeClaim)" -}}
{{- end -}}
{{- if and .Values.monitoring.webhook.on_success (not .Values.monitoring.webhook.secret.name) -}}
{{- fail "monitoring.webhook.on_success is true but monitoring.webhook.secret.name is empty: name the Secret holding the webhook URL" -}}
{{- end -}}
{{- $production := $r.server.production_dir | default $r.server.backup_server_dir | trimSuffix "/" -}}
{{- range $store := splitList " " (include "lifeboat.storeNames" $) -}}
{{- $s := index $.Values $store -}}
{{- if $s.enabled -}}
{{- $dir := include "lifeboat.storeDir" (dict "root" $ "role" $role "store" $store) -}}
{{- if and (eq $role "restore") (not $r.server.read_only_key) (eq $dir $production) -}}
{{- fail (printf "restore of %s reads %s, the folder production writes to, with a key that may write (restore.server.read_only_key=false): use a read-only restore key (sftp-server -R) or a copy of the backups" $store $dir) -}}
{{- end -}}
{{- range $key := list "enabled" "type" "schedule" "server_dir" "password_file" "access_key_file" "secret_key_file" "data_directory" "pgbackrest_dir" "passphrase_file" "socket_directory" "stanza" -}}
{{- if not (kindIs "invalid" (index ($s.config | default dict) $key)) -}}
{{- fail (printf "%s.config.%s is set by the chart (from %s's own values: enabled, type, schedule, server_dir, the secrets, differential); remove it from %s.config" $store $key $store $store) -}}
{{- end -}}
{{- end -}}
{{- if and (eq $store "postgres") (eq $s.type "differential") -}}
{{- include "lifeboat.validatePostgresDifferential" (dict "root" $ "role" $role) -}}
{{- end -}}
{{- if and (eq $store "minio") (not $s.credentials_secret.name) -}}
{{- fail "minio.credentials_secret.name is empty: name the Secret holding MinIO's access and secret keys" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The jobs of this release as YAML: {jobs: [{name, store, schedule, args, work_dir_size, pg_restore}]}.
     A differential PostgreSQL backup has none: its sidecar (_postgres.tpl) runs it. */}}
{{- define "lifeboat.jobs" -}}
{{- $role := include "lifeboat.role" . -}}
jobs:
{{- if $role }}
{{- $r := index .Values $role }}
{{- range $store := splitList " " (include "lifeboat.storeNames" $) }}
{{- $s := index $.Values $store }}
{{- $pgDifferential := and (eq $store "postgres") (eq $s.type "differential") }}
{{- $import := and (eq $role "backup") ($.Values.legacy | default dict).import }}
{{- if and $s.enabled $import }}
{{- if eq $s.type "dump" }}
  - name: {{ $store }}-import
    store: {{ $store }}
    schedule: ""
    args: ["import", "--store", {{ $store | quote }}]
    work_dir_size: {{ $.Values.legacy.import_work_dir_size | quote }}
{{- end }}
{{- else if and $s.enabled (not (and $pgDifferential (eq $role "backup"))) }}
{{- if eq $role "restore" }}
{{- $args := concat (list "restore" "--store" $store "--yes") (ternary (list "--from" $r.from) (list) (not (empty $r.from))) }}
{{- if and $pgDifferential $r.target_time }}
{{- $args = concat $args (list "--target-time" $r.target_time) }}
{{- end }}
  - name: {{ $store }}
    store: {{ $store }}
    schedule: {{ include "lifeboat.schedule" (dict "sched" $s.schedule "key" "restore" "fallback" $r.schedule) | quote }}
    args: {{ $args | toJson }}
    work_dir_size: {{ $r.work_dir_size | quote }}
    pg_restore: {{ $pgDifferential }}
{{- else }}
  - name: {{ $store }}
    store: {{ $store }}
    schedule: {{ include "lifeboat.schedule" (dict "sched" $s.schedule "key" (ternary "differential" "dump" (eq $s.type "differential")) "fallback" $r.schedule) | quote }}
    args: ["backup", "--store", {{ $store | quote }}]
    {{- if eq $store "influxdb" }}
    work_dir_size: {{ $s.work_dir_size | quote }}
    {{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The Lifeboat configuration of one store's jobs (see the README's Configuration). */}}
{{- define "lifeboat.config" -}}
{{- $root := .root -}}
{{- $store := .store -}}
{{- $role := include "lifeboat.role" $root -}}
{{- $r := index $root.Values $role -}}
{{- $s := index $root.Values $store -}}
{{- $dir := include "lifeboat.storeDir" (dict "root" $root "role" $role "store" $store) -}}
{{- $storeCfg := deepCopy ($s.config | default dict) -}}
{{- $_ := set $storeCfg "enabled" true -}}
{{- $_ := set $storeCfg "type" $s.type -}}
{{- if and $s.password_secret $s.password_secret.name -}}
{{- $_ := set $storeCfg "password_file" (printf "/secrets/%s/password" $store) -}}
{{- end -}}
{{- if eq $store "minio" -}}
{{- $_ := set $storeCfg "access_key_file" "/secrets/minio/access_key" -}}
{{- $_ := set $storeCfg "secret_key_file" "/secrets/minio/secret_key" -}}
{{- end -}}
{{- if and (eq $store "postgres") (eq $s.type "differential") -}}
{{- $d := $s.differential -}}
{{- $_ := set $storeCfg "data_directory" $d.data_directory -}}
{{- $_ := set $storeCfg "pgbackrest_dir" (include "lifeboat.pgbackrestDir" .) -}}
{{- $_ := set $storeCfg "passphrase_file" "/secrets/pgbackrest/passphrase" -}}
{{- $_ := set $storeCfg "socket_directory" $d.socket_directory -}}
{{- $_ := set $storeCfg "stanza" $d.stanza -}}
{{- if eq $role "backup" -}}
{{- /* the sidecar's daemon runs the schedule (the restore key is the chart's own) */ -}}
{{- $sched := $s.schedule | default $r.schedule -}}
{{- if kindIs "map" $sched -}}
{{- $sched = omit $sched "dump" "restore" -}}
{{- end -}}
{{- if $sched -}}
{{- $_ := set $storeCfg "schedule" $sched -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $sshKey := ternary "/secrets/ssh/ssh_key" "/secrets/lifeboat/ssh_key" (not (empty ($r.secrets.ssh_key_secret | default dict).name)) -}}
{{- $server := dict "url" (printf "ssh://%s@%s:%d%s" $r.server.user $r.server.host (int $r.server.port) $dir) "ssh_key_file" $sshKey "known_hosts_file" "/secrets/lifeboat/known_hosts" "timeout" $r.server.timeout -}}
{{- $encryption := dict -}}
{{- if eq $r.encryption.mode "passphrase" -}}
{{- $_ := set $encryption "passphrase_file" "/secrets/lifeboat/passphrase" -}}
{{- else if eq $role "backup" -}}
{{- $_ := set $encryption "recipients" $r.encryption.recipients -}}
{{- else -}}
{{- $_ := set $encryption "identity_file" "/secrets/lifeboat/age_identity" -}}
{{- end -}}
{{- $signing := dict "key_file" "/secrets/lifeboat/signing_key" -}}
{{- if eq $role "restore" -}}
{{- $signing = dict "allowed_signers_file" "/secrets/lifeboat/allowed_signers" "restore_unsigned_backups_made_before_signing" $r.restore_unsigned_backups_made_before_signing -}}
{{- end -}}
{{- $cfg := dict "role" $role "timezone" $r.timezone "server" $server "encryption" $encryption "signing" $signing "retention" $root.Values.retention "stores" (dict $store $storeCfg) -}}
{{- $mon := $root.Values.monitoring -}}
{{- $monitoring := dict -}}
{{- if $mon.pushgateway_url -}}
{{- $_ := set $monitoring "pushgateway_url" $mon.pushgateway_url -}}
{{- end -}}
{{- if $mon.textfile.enabled -}}
{{- $_ := set $monitoring "textfile_dir" "/metrics" -}}
{{- end -}}
{{- if $mon.webhook.secret.name -}}
{{- $_ := set $monitoring "webhook_url_file" "/secrets/webhook/url" -}}
{{- $_ := set $monitoring "webhook_on_success" $mon.webhook.on_success -}}
{{- end -}}
{{- if $monitoring -}}
{{- $_ := set $cfg "monitoring" $monitoring -}}
{{- end -}}
{{- if eq (include "lifeboat.readsLegacy" (dict "root" $root "store" $store)) "true" -}}
{{- $_ := set $cfg "legacy" (dict "passphrase_file" "/secrets/legacy/passphrase") -}}
{{- end -}}
{{- if or (eq $role "restore") (eq $store "influxdb") (and (eq $role "backup") ($root.Values.legacy | default dict).import) -}}
{{- $_ := set $cfg "work_dir" "/work" -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* "true" when a store's jobs read the backups of OpenCRVS's original scripts, so get their passphrase:
     a dump store's restore jobs (a restore takes the newest of either kind) and its import Jobs
     (legacy.import). The nightly backups never read them, so production's pods do not hold a key
     that decrypts them; a differential store keeps its own repository and never reads them. */}}
{{- define "lifeboat.readsLegacy" -}}
{{- $root := .root -}}
{{- $role := include "lifeboat.role" $root -}}
{{- $legacy := $root.Values.legacy | default dict -}}
{{- $s := index $root.Values .store -}}
{{- if and ($legacy.passphrase_secret | default dict).name (eq $s.type "dump") (or (eq $role "restore") (and (eq $role "backup") $legacy.import)) -}}true{{- end -}}
{{- end -}}

{{/* The Secret holding the role's SSH key, known_hosts and age identity or passphrase. */}}
{{- define "lifeboat.secretName" -}}
{{- $r := index .Values (include "lifeboat.role" .) -}}
{{- $r.secrets.existing_secret | default (printf "%s-%s" (include "lifeboat.fullname" .) (include "lifeboat.role" .)) -}}
{{- end -}}

{{/* The ServiceAccount the jobs run as ("" with create: false and no name: the namespace's default). */}}
{{- define "lifeboat.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "lifeboat.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}
