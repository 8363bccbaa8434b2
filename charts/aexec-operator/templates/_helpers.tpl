{{/* Name of the chart, or nameOverride. */}}
{{- define "aexec.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every object name: fullnameOverride, or the release name (plus the chart name
unless the release name contains it). */}}
{{- define "aexec.fullname" -}}
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

{{- define "aexec.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "aexec.labels" -}}
helm.sh/chart: {{ include "aexec.chart" . }}
{{ include "aexec.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubectl-aexec
{{- end }}

{{/* Labels that select the operator pods. */}}
{{- define "aexec.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aexec.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "aexec.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "aexec.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the aggregated API's serving certificate. */}}
{{- define "aexec.tlsSecretName" -}}
{{- printf "%s-tls" (include "aexec.fullname" .) }}
{{- end }}

{{/* The Secret holding the keys that sign session records. */}}
{{- define "aexec.signingSecretName" -}}
{{- default (printf "%s-signing" (include "aexec.fullname" .)) .Values.signing.existingSecret }}
{{- end }}

{{/* The ConfigMap publishing the public keys of session records. */}}
{{- define "aexec.signingKeysConfigMapName" -}}
{{- printf "%s-signing-keys" (include "aexec.fullname" .) }}
{{- end }}

{{/* DNS names the API server uses to reach the Service. */}}
{{- define "aexec.serviceDNSNames" -}}
{{- $svc := include "aexec.fullname" . }}
{{- list (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc .Release.Namespace) | toJson }}
{{- end }}

{{/* The recordings claim: the existing one, or the one the chart creates. */}}
{{- define "aexec.recordingsClaim" -}}
{{- default (printf "%s-recordings" (include "aexec.fullname" .)) .Values.storage.local.persistence.existingClaim }}
{{- end }}

{{/* Settings that cannot work together fail the install with what to change. */}}
{{- define "aexec.validate" -}}
{{- $replicas := int .Values.replicaCount }}
{{- if and (gt $replicas 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled=true: the controller must run on one replica at a time" }}
{{- end }}
{{- if eq .Values.storage.type "local" }}
{{- $p := .Values.storage.local.persistence }}
{{- if and (gt $replicas 1) (not $p.enabled) }}
{{- fail "storage.type=local with replicaCount > 1 needs storage.local.persistence.enabled=true and a ReadWriteMany volume: every replica serves recordings (or use storage.type=s3, or replicaCount=1)" }}
{{- end }}
{{- if and (gt $replicas 1) $p.enabled (not $p.existingClaim) (not (has "ReadWriteMany" $p.accessModes)) }}
{{- fail "storage.type=local with replicaCount > 1 needs storage.local.persistence.accessModes to include ReadWriteMany: every replica serves recordings (or use storage.type=s3, or replicaCount=1)" }}
{{- end }}
{{- end }}
{{- if and (eq .Values.storage.type "s3") (not .Values.storage.s3.bucket) }}
{{- fail "storage.type=s3 needs storage.s3.bucket" }}
{{- end }}
{{- if and .Values.storage.s3.objectLock.mode (lt (int .Values.storage.s3.objectLock.days) 1) }}
{{- fail "storage.s3.objectLock.mode needs storage.s3.objectLock.days >= 1" }}
{{- end }}
{{- end }}
