{{/*
Standard helpers: names, labels, selectors (never the chart version), the image, hardened security contexts,
the Secrets every component reads, and the env a modelloop process needs to reach MLflow.
*/}}

{{- define "modelloop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "modelloop.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "modelloop.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select a component's pods: stable across upgrades, so no chart or app version. */}}
{{- define "modelloop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelloop.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Every object's labels; call with (dict "root" $ "component" "mlflow"). */}}
{{- define "modelloop.labels" -}}
{{ include "modelloop.selectorLabels" . }}
app.kubernetes.io/part-of: modelloop
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ include "modelloop.chart" .root }}
{{- end }}

{{- define "modelloop.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if eq $tag "latest" }}
{{- fail "image.tag: pin a version; \"latest\" is not allowed" }}
{{- end }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}

{{- define "modelloop.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Pod Security "restricted": pod level. Call with (dict "uid" 10001). */}}
{{- define "modelloop.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Pod Security "restricted": container level, with a read-only root filesystem. */}}
{{- define "modelloop.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "modelloop.mlflow.fullname" -}}
{{- printf "%s-mlflow" (include "modelloop.fullname" .) }}
{{- end }}

{{/*
The tracking URI every modelloop process the chart runs uses: mlflow.external.url when set, else the bundled
server's Service DNS name.
*/}}
{{- define "modelloop.mlflow.url" -}}
{{- if .Values.mlflow.external.url }}
{{- .Values.mlflow.external.url | trimSuffix "/" }}
{{- else }}
{{- printf "http://%s.%s.svc:%d" (include "modelloop.mlflow.fullname" .) .Release.Namespace (int .Values.mlflow.port) }}
{{- end }}
{{- end }}

{{- define "modelloop.mlflow.authSecret" -}}
{{- default (printf "%s-mlflow-auth" (include "modelloop.fullname" .)) .Values.mlflow.auth.existingSecret }}
{{- end }}

{{- define "modelloop.mlflow.keysSecret" -}}
{{- default (printf "%s-mlflow-keys" (include "modelloop.fullname" .)) .Values.mlflow.keys.existingSecret }}
{{- end }}

{{- define "modelloop.postgresql.fullname" -}}
{{- printf "%s-postgresql" (include "modelloop.fullname" .) }}
{{- end }}

{{/* Secret with key `uri`: MLflow's database. */}}
{{- define "modelloop.mlflow.databaseSecret" -}}
{{- if .Values.postgresql.bundled.enabled }}
{{- printf "%s-mlflow-db" (include "modelloop.fullname" .) }}
{{- else }}
{{- required "postgresql.external.mlflowSecret is required when postgresql.bundled.enabled is false" .Values.postgresql.external.mlflowSecret }}
{{- end }}
{{- end }}

{{/* Secret with key `url`: the prediction log's database (the controller hands the name to scoring pods). */}}
{{- define "modelloop.predictionLogSecret" -}}
{{- if .Values.postgresql.bundled.enabled }}
{{- printf "%s-prediction-log" (include "modelloop.fullname" .) }}
{{- else }}
{{- required "postgresql.external.predictionLogSecret is required when postgresql.bundled.enabled is false" .Values.postgresql.external.predictionLogSecret }}
{{- end }}
{{- end }}

{{- define "modelloop.controller.fullname" -}}
{{- printf "%s-controller" (include "modelloop.fullname" .) }}
{{- end }}

{{- define "modelloop.webhookSecret" -}}
{{- default (printf "%s-webhook" (include "modelloop.fullname" .)) .Values.controller.webhookSecret }}
{{- end }}

{{/* The controller's webhook URL as MLflow calls it. */}}
{{- define "modelloop.webhookUrl" -}}
{{- printf "http://%s.%s.svc:%d/webhook" (include "modelloop.controller.fullname" .) .Release.Namespace (int .Values.controller.webhookPort) }}
{{- end }}

{{/*
A value kept across upgrades: the existing Secret's key when the release already has it, else a new random
string. Call with (dict "root" $ "secret" NAME "key" KEY "length" N).
*/}}
{{- define "modelloop.keptRandom" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .secret }}
{{- if and $existing (index $existing.data .key) }}
{{- index $existing.data .key | b64dec }}
{{- else }}
{{- randAlphaNum (int .length) }}
{{- end }}
{{- end }}

{{/*
The Secret (keys `username`, `password`) whose credentials modelloop processes send to MLflow: the bundled
server's admin Secret, or with an external server mlflow.external.authSecret (empty: no credentials).
*/}}
{{- define "modelloop.mlflow.clientSecret" -}}
{{- if .Values.mlflow.external.url }}
{{- .Values.mlflow.external.authSecret }}
{{- else }}
{{- include "modelloop.mlflow.authSecret" . }}
{{- end }}
{{- end }}

{{/*
Env of a modelloop process talking to MLflow (tracking URI, credentials, logging): as the bundled server's
admin user, or against mlflow.external.url with mlflow.external.authSecret's credentials when that is set
(no credential env at all otherwise).
*/}}
{{- define "modelloop.mlflowClientEnv" -}}
- name: MODELLOOP_TRACKING_URI
  value: {{ include "modelloop.mlflow.url" . | quote }}
{{- with include "modelloop.mlflow.clientSecret" . }}
- name: MLFLOW_TRACKING_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: username
- name: MLFLOW_TRACKING_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: password
{{- end }}
- name: MODELLOOP_DATA_DIR
  value: /tmp/modelloop
- name: OMP_NUM_THREADS
  value: "1"
{{- end }}

{{/* The bindings file the controller reads: every binding from values, in the release namespace, on Kubernetes. */}}
{{- define "modelloop.bindingsFile" -}}
{{- $bindings := list }}
{{- range .Values.bindings }}
{{- $bindings = append $bindings (merge (dict "target" "kubernetes" "namespace" $.Release.Namespace) .) }}
{{- end }}
{{- toYaml (dict "bindings" $bindings) }}
{{- end }}
