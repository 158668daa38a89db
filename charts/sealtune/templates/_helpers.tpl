{{/* Names: everything the chart makes is named after the release, so two releases can share a cluster. */}}
{{- define "sealtune.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sealtune.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "sealtune.labels" -}}
{{ include "sealtune.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sealtune
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "sealtune.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "sealtune.fullname" .) -}}
{{- end -}}

{{- define "sealtune.webhookService" -}}
{{- printf "%s-webhook" (include "sealtune.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Cluster-scoped, so named after the release too: two releases keep a webhook each. */}}
{{- define "sealtune.webhookConfiguration" -}}
{{- include "sealtune.fullname" . -}}
{{- end -}}

{{- define "sealtune.metricsService" -}}
{{- printf "%s-metrics" (include "sealtune.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The kopf peering object the replicas meet in. */}}
{{- define "sealtune.peeringName" -}}
{{- include "sealtune.fullname" . -}}
{{- end -}}

{{- define "sealtune.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
