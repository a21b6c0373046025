{{/* PostgreSQL `differential` (pgBackRest): what runs next to the data directory. */}}

{{/* The folder shared by the sidecar (or restore Job) and the PostgreSQL container; Lifeboat
     writes pgbackrest.conf into pgbackrestDir inside it (a folder it creates, so that it owns it). */}}
{{- define "lifeboat.pgbackrestVolumePath" -}}/var/lib/lifeboat{{- end -}}
{{- define "lifeboat.pgbackrestDir" -}}/var/lib/lifeboat/pgbackrest{{- end -}}

{{/* The archive_command PostgreSQL must have: the one Lifeboat checks for before every backup. */}}
{{- define "lifeboat.archiveCommand" -}}
{{- $d := .Values.postgres.differential -}}
{{- printf "%s --config=%s/pgbackrest.conf --stanza=%s archive-push %%p" $d.postgres_pgbackrest (include "lifeboat.pgbackrestDir" .) $d.stanza -}}
{{- end -}}

{{/* The refusals of postgres.type differential. */}}
{{- define "lifeboat.validatePostgresDifferential" -}}
{{- $root := .root -}}
{{- $r := index $root.Values .role -}}
{{- $d := $root.Values.postgres.differential -}}
{{- if not $d.passphrase_secret.name -}}
{{- fail "postgres.differential.passphrase_secret.name is empty: name the Secret holding pgBackRest's repository passphrase (the same on the backup and restore sides)" -}}
{{- end -}}
{{- if not (or (eq $d.data_directory $d.data_mount_path) (hasPrefix (printf "%s/" (trimSuffix "/" $d.data_mount_path)) $d.data_directory)) -}}
{{- fail (printf "postgres.differential.data_directory %s is not inside postgres.differential.data_mount_path %s: the data directory must be on the mounted data volume" $d.data_directory $d.data_mount_path) -}}
{{- end -}}
{{- range $key := list "databases" "restore_jobs" -}}
{{- if not (kindIs "invalid" (index ($root.Values.postgres.config | default dict) $key)) -}}
{{- fail (printf "postgres.config.%s is for type dump: pgBackRest backs up and restores the whole cluster; remove it with postgres.type differential" $key) -}}
{{- end -}}
{{- end -}}
{{- if and (eq .role "backup") (not $r.cronjob) (not ($root.Values.legacy | default dict).import) -}}
{{- fail "postgres.type differential with backup.cronjob=false: a differential backup runs in the PostgreSQL pod's lifeboat sidecar, not in a Job; run it there (kubectl exec POD -c lifeboat -- lifeboat --config /etc/lifeboat/lifeboat.yaml backup --store postgres --type full), or set postgres.enabled=false for this manual run" -}}
{{- end -}}
{{- if eq .role "restore" -}}
{{- if $r.cronjob -}}
{{- fail "postgres.type differential with restore.cronjob=true: the restore replaces the whole cluster while PostgreSQL is stopped, so it is a one-off Job: scale the PostgreSQL StatefulSet to 0, then render with restore.cronjob=false (or set postgres.enabled=false for the nightly restores of the other stores)" -}}
{{- end -}}
{{- if not $d.data_claim -}}
{{- fail "postgres.differential.data_claim is empty: name the PersistentVolumeClaim of PostgreSQL's data volume, which the restore Job replaces" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A strategic merge patch for the PostgreSQL StatefulSet: the shared pgBackRest folder in the
     PostgreSQL container, and Lifeboat as a sidecar running the store's schedule. */}}
{{- define "lifeboat.postgresSidecarPatch" -}}
{{- $d := .Values.postgres.differential -}}
{{- $pod := include "lifeboat.volumes" (dict "root" . "role" "backup" "store" "postgres" "scratch" "" "mode" "sidecar") | fromYaml -}}
{{- $resources := $d.resources | default .Values.job.resources -}}
{{- $postgres := dict "name" $d.container "volumeMounts" (list (dict "name" "lifeboat-pgbackrest" "mountPath" (include "lifeboat.pgbackrestVolumePath" .))) -}}
{{- $sidecar := include "lifeboat.container" (dict "root" . "args" (list "daemon") "mounts" $pod.mounts "resources" $resources "uid" $d.run_as_user) | fromYaml -}}
{{- $podSpec := dict "containers" (list $postgres $sidecar) "volumes" $pod.volumes -}}
{{- /* a changed configuration changes the pod template, so applying the patch restarts the daemon with it */ -}}
{{- $checksum := include "lifeboat.config" (dict "root" . "store" "postgres") | sha256sum -}}
{{- $template := dict "metadata" (dict "annotations" (dict "lifeboat/config-sha256" $checksum)) "spec" $podSpec -}}
{{- toYaml (dict "spec" (dict "template" $template)) -}}
{{- end -}}

{{/* The archive settings, as postgresql.conf lines. */}}
{{- define "lifeboat.archiveConf" -}}
archive_mode = on
archive_command = '{{ include "lifeboat.archiveCommand" . | replace "'" "''" }}'
archive_timeout = {{ .Values.postgres.differential.archive_timeout }}
{{- end -}}
