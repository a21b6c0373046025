{{/* The Job spec of one store's job (a CronJob's jobTemplate.spec, or a Job's spec). */}}
{{- define "lifeboat.jobSpec" -}}
{{- $root := .root -}}
{{- $job := $root.Values.job -}}
{{- $scratch := .j.work_dir_size -}}
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
    securityContext:
      runAsNonRoot: true
      runAsUser: 65532
      runAsGroup: 65532
      # makes the 0400 secret files readable by the job's group
      fsGroup: 65532
      seccompProfile:
        type: RuntimeDefault
    containers:
      - name: lifeboat
        image: {{ printf "%s:%s" $root.Values.image.repository $root.Values.image.tag | quote }}
        imagePullPolicy: {{ $root.Values.image.pullPolicy }}
        args: {{ concat (list "--config" "/etc/lifeboat/lifeboat.yaml") .j.args | toJson }}
        env:
          - name: TMPDIR
            value: /tmp
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          runAsNonRoot: true
          capabilities:
            drop: ["ALL"]
        resources:
          {{- toYaml $job.resources | nindent 10 }}
        volumeMounts:
          - name: config
            mountPath: /etc/lifeboat
            readOnly: true
          - name: server-secrets
            mountPath: /secrets/lifeboat
            readOnly: true
          {{- if and .s.password_secret .s.password_secret.name }}
          - name: store-secrets
            mountPath: /secrets/{{ .j.store }}
            readOnly: true
          {{- end }}
          {{- if eq .j.store "minio" }}
          - name: store-secrets
            mountPath: /secrets/minio
            readOnly: true
          {{- end }}
          - name: tmp
            mountPath: /tmp
          {{- if $scratch }}
          - name: work
            mountPath: /work
          {{- end }}
    volumes:
      - name: config
        configMap:
          name: {{ include "lifeboat.fullname" $root }}-{{ .role }}-config
          items:
            - key: {{ .j.store }}.yaml
              path: lifeboat.yaml
      - name: server-secrets
        secret:
          secretName: {{ include "lifeboat.secretName" $root }}
          defaultMode: 0400
          items:
            - { key: ssh_key, path: ssh_key }
            - { key: known_hosts, path: known_hosts }
            {{- if eq .r.encryption.mode "passphrase" }}
            - { key: passphrase, path: passphrase }
            {{- else if eq .role "restore" }}
            - { key: age_identity, path: age_identity }
            {{- end }}
      {{- if and .s.password_secret .s.password_secret.name }}
      - name: store-secrets
        secret:
          secretName: {{ .s.password_secret.name }}
          defaultMode: 0400
          items:
            - { key: {{ .s.password_secret.key }}, path: password }
      {{- end }}
      {{- if eq .j.store "minio" }}
      - name: store-secrets
        secret:
          secretName: {{ .s.credentials_secret.name }}
          defaultMode: 0400
          items:
            - { key: {{ .s.credentials_secret.access_key_key }}, path: access_key }
            - { key: {{ .s.credentials_secret.secret_key_key }}, path: secret_key }
      {{- end }}
      - name: tmp
        emptyDir:
          sizeLimit: {{ $job.tmp_size }}
      {{- if $scratch }}
      - name: work
        emptyDir:
          sizeLimit: {{ $scratch }}
      {{- end }}
{{- end -}}
