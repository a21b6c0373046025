{{/* The Job spec of one store's job (a CronJob's jobTemplate.spec, or a Job's spec). */}}
{{- define "lifeboat.jobSpec" -}}
{{- $root := .root -}}
{{- $job := $root.Values.job -}}
{{- $mode := ternary "pgrestore" "job" (.j.pg_restore | default false) -}}
{{- $pod := include "lifeboat.volumes" (dict "root" $root "role" .role "store" .j.store "scratch" .j.work_dir_size "mode" $mode) | fromYaml -}}
backoffLimit: {{ $job.backoffLimit }}
activeDeadlineSeconds: {{ $job.activeDeadlineSeconds }}
ttlSecondsAfterFinished: {{ $job.ttlSecondsAfterFinished }}
template:
  metadata:
    labels:
      app.kubernetes.io/name: lifeboat
      app.kubernetes.io/instance: {{ $root.Release.Name }}
      lifeboat/role: {{ .role }}
      lifeboat/store: {{ .j.store }}
  spec:
    restartPolicy: Never
    {{- with include "lifeboat.serviceAccountName" $root }}
    serviceAccountName: {{ . }}
    {{- end }}
    automountServiceAccountToken: false
    {{- with $root.Values.imagePullSecrets }}
    imagePullSecrets:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- with $job.nodeSelector }}
    nodeSelector:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- with $job.tolerations }}
    tolerations:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- if and (eq $mode "pgrestore") $root.Values.postgres.differential.pod_labels }}
    # Not while a PostgreSQL pod exists on any node, and none starts while this runs (the
    # scheduler applies a running pod's anti-affinity to newcomers): the cluster is never started
    # on the data volume this Job replaces.
    affinity:
      podAntiAffinity:
        requiredDuringSchedulingIgnoredDuringExecution:
          - topologyKey: kubernetes.io/os
            labelSelector:
              matchLabels:
                {{- toYaml $root.Values.postgres.differential.pod_labels | nindent 16 }}
    {{- end }}
    securityContext:
      runAsNonRoot: true
      {{- if eq $mode "pgrestore" }}
      # PostgreSQL's uid, which owns the data directory; no fsGroup: it would make the data volume
      # group-writable, which PostgreSQL refuses (the secret files are 0440, group root, instead)
      runAsUser: {{ $root.Values.postgres.differential.run_as_user }}
      runAsGroup: 0
      {{- else }}
      runAsUser: 65532
      runAsGroup: 65532
      # makes the 0400 secret files readable by the job's group
      fsGroup: 65532
      {{- end }}
      seccompProfile:
        type: RuntimeDefault
    containers:
      {{- /* as text, not through toYaml: that would write an argument like 2026-11-20 14:30:00+00 unquoted, a YAML timestamp */}}
      - {{ include "lifeboat.container" (dict "root" $root "args" .j.args "mounts" $pod.mounts "resources" $job.resources) | indent 8 | trim }}
    volumes:
      {{- toYaml $pod.volumes | nindent 6 }}
{{- end -}}

{{/* The Lifeboat container: of a job, or the PostgreSQL pod's sidecar (with .uid: that pod is not the chart's, so the user is set here). */}}
{{- define "lifeboat.container" -}}
{{- $root := .root -}}
name: lifeboat
image: {{ printf "%s:%s" $root.Values.image.repository $root.Values.image.tag | quote }}
imagePullPolicy: {{ $root.Values.image.pullPolicy }}
args: {{ concat (list "--config" "/etc/lifeboat/lifeboat.yaml") .args | toJson }}
env:
  - name: TMPDIR
    value: /tmp
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  runAsNonRoot: true
  {{- if .uid }}
  runAsUser: {{ .uid }}
  runAsGroup: 0
  seccompProfile:
    type: RuntimeDefault
  {{- end }}
  capabilities:
    drop: ["ALL"]
resources:
  {{- toYaml .resources | nindent 2 }}
volumeMounts:
  {{- toYaml .mounts | nindent 2 }}
{{- end -}}

{{/* A Lifeboat container's volumes and where it mounts them, as YAML {volumes, mounts}.
     .mode: "job"; "pgrestore" (a differential PostgreSQL restore: the data volume's claim, and
     room for the PostgreSQL it starts); "sidecar" (in the PostgreSQL pod: its data and socket
     volumes are that pod's own, and the chart's volume names get a "lifeboat-" prefix). */}}
{{- define "lifeboat.volumes" -}}
{{- $root := .root -}}
{{- $store := .store -}}
{{- $r := index $root.Values .role -}}
{{- $s := index $root.Values $store -}}
{{- $mon := $root.Values.monitoring -}}
{{- $p := ternary "lifeboat-" "" (eq .mode "sidecar") -}}
{{- /* 0400 (256) where the pod's fsGroup makes them the job's; 0440 (288), group root, in pods that must not have one */ -}}
{{- $secretMode := ternary 256 288 (eq .mode "job") -}}
{{- $volumes := list -}}
{{- $mounts := list -}}
{{- $keySecret := $r.secrets.ssh_key_secret | default dict -}}
{{- $items := list (dict "key" "known_hosts" "path" "known_hosts") -}}
{{- if not $keySecret.name -}}
{{- $items = prepend $items (dict "key" "ssh_key" "path" "ssh_key") -}}
{{- end -}}
{{- if eq .role "backup" -}}
{{- $items = append $items (dict "key" "signing_key" "path" "signing_key") -}}
{{- else -}}
{{- $items = append $items (dict "key" "allowed_signers" "path" "allowed_signers") -}}
{{- end -}}
{{- if eq $r.encryption.mode "passphrase" -}}
{{- $items = append $items (dict "key" "passphrase" "path" "passphrase") -}}
{{- else if eq .role "restore" -}}
{{- $items = append $items (dict "key" "age_identity" "path" "age_identity") -}}
{{- end -}}
{{- $volumes = append $volumes (dict "name" (print $p "config") "configMap" (dict "name" (printf "%s-%s-config" (include "lifeboat.fullname" $root) .role) "items" (list (dict "key" (print $store ".yaml") "path" "lifeboat.yaml")))) -}}
{{- $mounts = append $mounts (dict "name" (print $p "config") "mountPath" "/etc/lifeboat" "readOnly" true) -}}
{{- $volumes = append $volumes (dict "name" (print $p "server-secrets") "secret" (dict "secretName" (include "lifeboat.secretName" $root) "defaultMode" $secretMode "items" $items)) -}}
{{- $mounts = append $mounts (dict "name" (print $p "server-secrets") "mountPath" "/secrets/lifeboat" "readOnly" true) -}}
{{- if $keySecret.name -}}
{{- /* the SSH key of an existing Secret as it is, e.g. the original chart's backup-server-ssh-credentials (host, user, ssh_key) */ -}}
{{- $volumes = append $volumes (dict "name" (print $p "ssh-key") "secret" (dict "secretName" $keySecret.name "defaultMode" $secretMode "items" (list (dict "key" $keySecret.key "path" "ssh_key")))) -}}
{{- $mounts = append $mounts (dict "name" (print $p "ssh-key") "mountPath" "/secrets/ssh" "readOnly" true) -}}
{{- end -}}
{{- if eq (include "lifeboat.readsLegacy" (dict "root" $root "store" $store)) "true" -}}
{{- $l := $root.Values.legacy.passphrase_secret -}}
{{- $volumes = append $volumes (dict "name" (print $p "legacy") "secret" (dict "secretName" $l.name "defaultMode" $secretMode "items" (list (dict "key" $l.key "path" "passphrase")))) -}}
{{- $mounts = append $mounts (dict "name" (print $p "legacy") "mountPath" "/secrets/legacy" "readOnly" true) -}}
{{- end -}}
{{- if and $s.password_secret $s.password_secret.name -}}
{{- $volumes = append $volumes (dict "name" (print $p "store-secrets") "secret" (dict "secretName" $s.password_secret.name "defaultMode" $secretMode "items" (list (dict "key" $s.password_secret.key "path" "password")))) -}}
{{- $mounts = append $mounts (dict "name" (print $p "store-secrets") "mountPath" (printf "/secrets/%s" $store) "readOnly" true) -}}
{{- end -}}
{{- if eq $store "minio" -}}
{{- $c := $s.credentials_secret -}}
{{- $volumes = append $volumes (dict "name" (print $p "store-secrets") "secret" (dict "secretName" $c.name "defaultMode" $secretMode "items" (list (dict "key" $c.access_key_key "path" "access_key") (dict "key" $c.secret_key_key "path" "secret_key")))) -}}
{{- $mounts = append $mounts (dict "name" (print $p "store-secrets") "mountPath" "/secrets/minio" "readOnly" true) -}}
{{- end -}}
{{- if $mon.webhook.secret.name -}}
{{- $volumes = append $volumes (dict "name" (print $p "webhook") "secret" (dict "secretName" $mon.webhook.secret.name "defaultMode" $secretMode "items" (list (dict "key" $mon.webhook.secret.key "path" "url")))) -}}
{{- $mounts = append $mounts (dict "name" (print $p "webhook") "mountPath" "/secrets/webhook" "readOnly" true) -}}
{{- end -}}
{{- if $mon.textfile.enabled -}}
{{- if $mon.textfile.host_path -}}
{{- $volumes = append $volumes (dict "name" (print $p "metrics") "hostPath" (dict "path" $mon.textfile.host_path "type" "Directory")) -}}
{{- else -}}
{{- $volumes = append $volumes (dict "name" (print $p "metrics") "persistentVolumeClaim" (dict "claimName" $mon.textfile.claim_name)) -}}
{{- end -}}
{{- $mounts = append $mounts (dict "name" (print $p "metrics") "mountPath" "/metrics") -}}
{{- end -}}
{{- if ne .mode "job" -}}
{{- $d := $s.differential -}}
{{- $volumes = append $volumes (dict "name" (print $p "pgbackrest-secrets") "secret" (dict "secretName" $d.passphrase_secret.name "defaultMode" $secretMode "items" (list (dict "key" $d.passphrase_secret.key "path" "passphrase")))) -}}
{{- $mounts = append $mounts (dict "name" (print $p "pgbackrest-secrets") "mountPath" "/secrets/pgbackrest" "readOnly" true) -}}
{{- /* pgbackrest.conf and the key copies pgBackRest uses; the PostgreSQL container mounts it too */ -}}
{{- $volumes = append $volumes (dict "name" (print $p "pgbackrest") "emptyDir" (dict "sizeLimit" "1Gi")) -}}
{{- $mounts = append $mounts (dict "name" (print $p "pgbackrest") "mountPath" (include "lifeboat.pgbackrestVolumePath" .)) -}}
{{- if eq .mode "sidecar" -}}
{{- /* the pod's own volumes: pgBackRest only reads the data directory while PostgreSQL runs */ -}}
{{- $mounts = append $mounts (dict "name" $d.data_volume "mountPath" $d.data_mount_path "readOnly" true) -}}
{{- $mounts = append $mounts (dict "name" $d.socket_volume "mountPath" $d.socket_directory "readOnly" true) -}}
{{- else -}}
{{- $volumes = append $volumes (dict "name" "pgdata" "persistentVolumeClaim" (dict "claimName" $d.data_claim)) -}}
{{- $mounts = append $mounts (dict "name" "pgdata" "mountPath" $d.data_mount_path) -}}
{{- $volumes = append $volumes (dict "name" "pgsocket" "emptyDir" (dict "sizeLimit" "1Mi")) -}}
{{- $mounts = append $mounts (dict "name" "pgsocket" "mountPath" $d.socket_directory) -}}
{{- $volumes = append $volumes (dict "name" "shm" "emptyDir" (dict "medium" "Memory" "sizeLimit" $d.shm_size)) -}}
{{- $mounts = append $mounts (dict "name" "shm" "mountPath" "/dev/shm") -}}
{{- end -}}
{{- end -}}
{{- $volumes = append $volumes (dict "name" (print $p "tmp") "emptyDir" (dict "sizeLimit" $root.Values.job.tmp_size)) -}}
{{- $mounts = append $mounts (dict "name" (print $p "tmp") "mountPath" "/tmp") -}}
{{- if .scratch -}}
{{- $volumes = append $volumes (dict "name" (print $p "work") "emptyDir" (dict "sizeLimit" .scratch)) -}}
{{- $mounts = append $mounts (dict "name" (print $p "work") "mountPath" "/work") -}}
{{- end -}}
{{- toYaml (dict "volumes" $volumes "mounts" $mounts) -}}
{{- end -}}
