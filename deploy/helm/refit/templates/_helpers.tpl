{{/*
The numbers of a server pod, from refit (src/refit/deploy/pod.py): `refit serve` drains for
DRAIN_SECONDS after SIGTERM; a preStop sleep keeps the pod answering while its endpoint is
removed; the grace period covers both, with a margin.
*/}}
{{- define "refit.drainSeconds" -}}25{{- end }}
{{- define "refit.preStopSeconds" -}}5{{- end }}
{{- define "refit.graceSeconds" -}}40{{- end }}
{{- define "refit.livePath" -}}/health/live{{- end }}
{{- define "refit.readyPath" -}}/health/ready{{- end }}
{{- define "refit.startupSeconds" -}}120{{- end }}

{{/* The release's name, short enough for every object's name and its suffix. */}}
{{- define "refit.name" -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end }}

{{- define "refit.secretName" -}}
{{- .Values.secret.existingSecret | default (include "refit.name" .) -}}
{{- end }}

{{- define "refit.labels" -}}
app.kubernetes.io/name: refit
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: {{ .Values.project }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* Selector labels of one role: (dict "root" $ "component" "server"). */}}
{{- define "refit.selectorLabels" -}}
app.kubernetes.io/name: refit
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "refit.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end }}

{{/* Whole cores of a CPU quantity ("2", "1500m", 1.5), at least 1. */}}
{{- define "refit.cores" -}}
{{- $cpu := toString . -}}
{{- if hasSuffix "m" $cpu -}}
{{- max 1 (div (trimSuffix "m" $cpu | atoi) 1000) -}}
{{- else -}}
{{- max 1 (floor (float64 $cpu) | int) -}}
{{- end -}}
{{- end }}

{{/* The environment of every refit container: the stores, credentials from the Secret. */}}
{{- define "refit.env" -}}
- name: REFIT_STORAGE__ARTIFACTS_URL
  value: {{ .Values.storage.artifactsUrl | quote }}
{{- with .Values.storage.s3.endpointUrl }}
- name: REFIT_STORAGE__S3__ENDPOINT_URL
  value: {{ . | quote }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
- name: REFIT_STORAGE__S3__REGION
  value: {{ .Values.storage.s3.region | quote }}
- name: AWS_REGION
  value: {{ .Values.storage.s3.region | quote }}
- name: REFIT_STORAGE__METADATA_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "refit.secretName" . }}
      key: REFIT_STORAGE__METADATA_URL
{{- range $name, $key := dict "REFIT_STORAGE__S3__ACCESS_KEY_ID" "REFIT_STORAGE__S3__ACCESS_KEY_ID" "AWS_ACCESS_KEY_ID" "REFIT_STORAGE__S3__ACCESS_KEY_ID" "REFIT_STORAGE__S3__SECRET_ACCESS_KEY" "REFIT_STORAGE__S3__SECRET_ACCESS_KEY" "AWS_SECRET_ACCESS_KEY" "REFIT_STORAGE__S3__SECRET_ACCESS_KEY" }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "refit.secretName" $ }}
      key: {{ $key }}
{{- end }}
{{- /* Optional: without the key in the Secret, versions are neither signed nor checked. */}}
- name: REFIT_SIGNING_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "refit.secretName" . }}
      key: REFIT_SIGNING_KEY
      optional: true
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* A refit pod's spec fields before its containers: identity, placement, security. */}}
{{- define "refit.podSecurity" -}}
serviceAccountName: {{ include "refit.name" . }}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  fsGroup: 10001
  seccompProfile:
    type: RuntimeDefault
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* A refit container's security: a read-only root, no privilege, no capability. */}}
{{- define "refit.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  privileged: false
  readOnlyRootFilesystem: true
  runAsNonRoot: true
  capabilities:
    drop:
      - ALL
{{- end }}

{{/* Where a refit container reads its spec and writes (its metrics and temporary files). */}}
{{- define "refit.volumeMounts" -}}
volumeMounts:
  - name: spec
    mountPath: /project/refit.yaml
    subPath: refit.yaml
    readOnly: true
  - name: tmp
    mountPath: /tmp
{{- end }}

{{- define "refit.volumes" -}}
volumes:
  - name: spec
    configMap:
      name: {{ include "refit.name" . }}-spec
  - name: tmp
    emptyDir:
      sizeLimit: 1Gi
{{- end }}

{{/*
A container of ingest, train, the monitor or the scheduler, after its name and args:
(dict "root" $ "resources" RESOURCES "env" MORE_ENV), MORE_ENV a list of {name, value}.
*/}}
{{- define "refit.jobContainer" -}}
image: {{ include "refit.image" .root }}
imagePullPolicy: {{ .root.Values.image.pullPolicy }}
env:
  - name: OMP_NUM_THREADS
    value: {{ include "refit.cores" .resources.limits.cpu | quote }}
  {{- with .env }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- include "refit.env" .root | nindent 2 }}
resources:
  {{- toYaml .resources | nindent 2 }}
{{ include "refit.containerSecurity" .root }}
{{ include "refit.volumeMounts" .root }}
{{- end }}
