{{- define "pushgate.name" -}}
{{- .Chart.Name -}}
{{- end -}}

{{- define "pushgate.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "pushgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pushgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "pushgate.labels" -}}
{{ include "pushgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The values that do not go together stop the rendering, saying why. */}}
{{- define "pushgate.check" -}}
{{- if not (has .Values.engine (list "memory" "redis")) -}}
{{- fail (printf "engine must be memory or redis, got %q" .Values.engine) -}}
{{- end -}}
{{- if and (eq .Values.engine "memory") (or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled) -}}
{{- fail "engine memory keeps presence and inboxes in one pod: set replicaCount 1 and autoscaling.enabled false, or engine redis" -}}
{{- end -}}
{{- if not .Values.existingSecret -}}
{{- fail "existingSecret: name the Secret holding PUSHGATE_JWT_SECRET and PUSHGATE_API_KEYS (see values.yaml)" -}}
{{- end -}}
{{- end -}}
