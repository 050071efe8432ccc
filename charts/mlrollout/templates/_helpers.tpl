{{/* Names and labels shared by every template. */}}
{{- define "mlrollout.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "mlrollout.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "mlrollout.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "mlrollout.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mlrollout.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* kopf's logging flag for the configured level (kopf: --verbose is DEBUG too; INFO is the default). */}}
{{- define "mlrollout.kopfLogFlag" -}}
{{- $level := lower .Values.logLevel -}}
{{- if eq $level "debug" -}}--debug
{{- else if eq $level "info" -}}
{{- else if or (eq $level "warning") (eq $level "error") -}}--quiet
{{- else -}}{{ fail (printf "logLevel must be debug, info, warning or error, not %q" .Values.logLevel) }}
{{- end -}}
{{- end -}}

{{/* A label map as the operator's `key=value,key2=value2` setting (keys sorted). */}}
{{- define "mlrollout.labelPairs" -}}
{{- $pairs := list -}}
{{- range $key, $value := . -}}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}
