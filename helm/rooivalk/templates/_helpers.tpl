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
{{- end }}

{{/*
Selector labels.
*/}}
{{- define "rooivalk.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rooivalk.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
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
