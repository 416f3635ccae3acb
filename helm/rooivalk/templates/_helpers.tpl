{{/*
Chart name, truncated to the 63 characters a label value may hold.
*/}}
{{- define "rooivalk.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name, with the chart name unless the release already holds it.
*/}}
{{- define "rooivalk.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, as used by the helm.sh/chart label.
*/}}
{{- define "rooivalk.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "rooivalk.labels" -}}
helm.sh/chart: {{ include "rooivalk.chart" . }}
{{ include "rooivalk.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: rooivalk
{{- end }}

{{/*
Selector labels.
*/}}
{{- define "rooivalk.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rooivalk.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of one component's objects: (list $ "mlflow").
*/}}
{{- define "rooivalk.componentLabels" -}}
{{ include "rooivalk.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/*
Selector labels of one component's pods: (list $ "mlflow").
*/}}
{{- define "rooivalk.componentSelectorLabels" -}}
{{ include "rooivalk.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/*
Name of one of the release's objects: (list $ "mlflow") -> <fullname>-mlflow, within 63 characters.
*/}}
{{- define "rooivalk.componentName" -}}
{{- printf "%s-%s" (include "rooivalk.fullname" (index . 0)) (index . 1) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
An image reference from {repository, tag}: (list $ .Values.image). An empty tag means the chart's
appVersion (the package version the rooivalk images are tagged with); "latest" fails the render, so
every pod names a fixed image.
*/}}
{{- define "rooivalk.image" -}}
{{- $image := index . 1 }}
{{- $tag := $image.tag | default (index . 0).Chart.AppVersion | toString }}
{{- if or (not $tag) (eq $tag "latest") }}
{{- fail (printf "%s: pin an image tag (got %q)" $image.repository $tag) }}
{{- end }}
{{- printf "%s:%s" $image.repository $tag }}
{{- end }}

{{/*
Pod-level security settings of every pod the chart runs: a non-root user (the rooivalk images' uid
10001), its group owning mounted volumes, and the runtime's default seccomp profile.
*/}}
{{- define "rooivalk.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Container-level security settings of every container the chart runs.
*/}}
{{- define "rooivalk.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Pod placement shared by the chart's pods: nodeSelector, tolerations and imagePullSecrets (PodSpec
fields), as YAML without a leading newline, or nothing. Call sites print it with `with` so that nothing
is left behind when it is empty.
*/}}
{{- define "rooivalk.podExtras" -}}
{{- $out := dict }}
{{- with .Values.nodeSelector }}{{ $_ := set $out "nodeSelector" . }}{{ end }}
{{- with .Values.tolerations }}{{ $_ := set $out "tolerations" . }}{{ end }}
{{- with .Values.imagePullSecrets }}
{{- $secrets := list }}
{{- range . }}{{ $secrets = append $secrets (dict "name" .) }}{{ end }}
{{- $_ := set $out "imagePullSecrets" $secrets }}
{{- end }}
{{- if $out }}{{ toYaml $out }}{{ end }}
{{- end }}

{{/*
The ConfigMap holding the plan (key plan.yaml): the chart's own when plan.content is set.
*/}}
{{- define "rooivalk.planConfigMap" -}}
{{- if .Values.plan.content }}
{{- include "rooivalk.componentName" (list . "plan") }}
{{- else }}
{{- required "plan.existingConfigMap or plan.content is required" .Values.plan.existingConfigMap }}
{{- end }}
{{- end }}

{{/*
The plan volume, mounted read-only at /etc/rooivalk (PodSpec volumes item).
*/}}
{{- define "rooivalk.planVolume" -}}
- name: plan
  configMap:
    name: {{ include "rooivalk.planConfigMap" . }}
    items:
      - key: plan.yaml
        path: plan.yaml
{{- end }}

{{/*
The S3 endpoint URL: s3.endpointUrl, else the chart's MinIO when it is enabled, else none (AWS S3).
*/}}
{{- define "rooivalk.s3Endpoint" -}}
{{- if .Values.s3.endpointUrl }}
{{- .Values.s3.endpointUrl }}
{{- else if .Values.minio.enabled }}
{{- printf "http://%s:9000" (include "rooivalk.componentName" (list . "minio")) }}
{{- end }}
{{- end }}

{{/*
Environment of a container that reads and writes S3: the endpoint under the names boto3
(AWS_ENDPOINT_URL_S3, also read by rooivalk.storage) and MLflow (MLFLOW_S3_ENDPOINT_URL) read, the
region, and the static keys from s3.existingSecret when one is named (none with IRSA). A YAML list
without a leading newline, or nothing.
*/}}
{{- define "rooivalk.s3Env" -}}
{{- $env := list }}
{{- with include "rooivalk.s3Endpoint" . }}
{{- $env = append $env (dict "name" "AWS_ENDPOINT_URL_S3" "value" .) }}
{{- $env = append $env (dict "name" "MLFLOW_S3_ENDPOINT_URL" "value" .) }}
{{- end }}
{{- with .Values.s3.region }}
{{- $env = append $env (dict "name" "AWS_DEFAULT_REGION" "value" .) }}
{{- end }}
{{- with .Values.s3.existingSecret }}
{{- range $key := list "AWS_ACCESS_KEY_ID" "AWS_SECRET_ACCESS_KEY" }}
{{- $env = append $env (dict "name" $key "valueFrom" (dict "secretKeyRef" (dict "name" $.Values.s3.existingSecret "key" $key))) }}
{{- end }}
{{- end }}
{{- if $env }}{{ toYaml $env }}{{ end }}
{{- end }}

{{/*
The namespace KFP runs go to: kfp.namespace, else the release namespace.
*/}}
{{- define "rooivalk.kfpNamespace" -}}
{{- .Values.kfp.namespace | default .Release.Namespace }}
{{- end }}

{{/*
The namespace the pipelines' pods run in: kfp.podNamespace, else the KFP namespace.
*/}}
{{- define "rooivalk.kfpPodNamespace" -}}
{{- .Values.kfp.podNamespace | default (include "rooivalk.kfpNamespace" .) }}
{{- end }}

{{/*
The in-cluster MLflow URL pipeline pods track to (the Service; same namespace or fully qualified).
*/}}
{{- define "rooivalk.mlflowUrl" -}}
{{- printf "http://%s.%s:%d" (include "rooivalk.componentName" (list . "mlflow")) .Release.Namespace (int .Values.mlflow.port) }}
{{- end }}

{{/*
Names of the EventSources. Argo Events names an EventSource's Service <name>-eventsource-svc, which must
stay a valid Service name (63 characters).
*/}}
{{- define "rooivalk.driftEventSource" -}}
{{- $name := include "rooivalk.componentName" (list . "drift-webhook") }}
{{- if gt (len (printf "%s-eventsource-svc" $name)) 63 }}
{{- fail (printf "the EventSource %s gives a Service name over 63 characters: shorten the release name or set fullnameOverride" $name) }}
{{- end }}
{{- $name }}
{{- end }}
{{- define "rooivalk.bucketEventSource" -}}
{{- include "rooivalk.componentName" (list . "bucket") }}
{{- end }}

{{/*
Where the monitor POSTs retraining events: monitor.webhookUrl, else the drift webhook EventSource's
Service when the chart deploys it, else nothing (the plan's monitoring.webhook.url applies).
*/}}
{{- define "rooivalk.driftWebhookUrl" -}}
{{- if .Values.monitor.webhookUrl }}
{{- .Values.monitor.webhookUrl }}
{{- else if and .Values.events.enabled .Values.events.driftWebhook.enabled }}
{{- printf "http://%s-eventsource-svc.%s:%d%s" (include "rooivalk.driftEventSource" .) .Release.Namespace (int .Values.events.driftWebhook.port) .Values.events.driftWebhook.endpoint }}
{{- end }}
{{- end }}

{{/*
A duration value (30m, 1h30m; units s, m, h, d, w), or a failed render naming the bad value. The
units are the ones rooivalk.durationSeconds can convert, as in rooivalk.monitoring.alert_rules.
*/}}
{{- define "rooivalk.duration" -}}
{{- if not (regexMatch "^([0-9]+[smhdw])+$" (toString .)) }}
{{- fail (printf "%v is not a duration like 30m or 1h30m (units s, m, h, d, w)" .) }}
{{- end }}
{{- . }}
{{- end }}

{{/*
Seconds in a duration value, for PromQL comparisons: Prometheus 2 has no duration literals there.
*/}}
{{- define "rooivalk.durationSeconds" -}}
{{- $units := dict "s" 1 "m" 60 "h" 3600 "d" 86400 "w" 604800 }}
{{- $total := 0 }}
{{- range regexFindAll "[0-9]+[smhdw]" (include "rooivalk.duration" .) -1 }}
{{- $unit := regexFind "[smhdw]$" . }}
{{- $total = add $total (mul (trimSuffix $unit . | atoi) (get $units $unit)) }}
{{- end }}
{{- $total }}
{{- end }}
