{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "strand.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of every resource name: <release>-strand, or the release name when it already holds the
chart name. 52 characters leave room for the "-controller" suffix within a DNS label.
*/}}
{{- define "strand.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "strand.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "strand.labels" -}}
helm.sh/chart: {{ include "strand.chart" . }}
{{ include "strand.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: strand
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The operator pods. Never change these: a Deployment's selector is immutable. */}}
{{- define "strand.selectorLabels" -}}
app.kubernetes.io/name: {{ include "strand.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "strand.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "strand.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "strand.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The controller API as brokers reach it: the leader-only Service. */}}
{{- define "strand.controllerURL" -}}
{{- .Values.controller.url | default (printf "http://%s-controller.%s.svc:9190" (include "strand.fullname" .) .Release.Namespace) }}
{{- end }}
