{% raw %}{{/* The release's full name: fullnameOverride, else the release name. */}}
{{- define "chart.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "chart.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "chart.selectorLabels" -}}
app.kubernetes.io/name: {{ include "chart.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "chart.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "chart.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "chart.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "chart.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "chart.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "chart.secretName" -}}
{{- default (include "chart.fullname" .) .Values.secret.existingSecret }}
{{- end }}

{% endraw %}
{% if cookiecutter.use_postgres %}
{% raw %}{{/* "true" when a migration Job runs before installs and upgrades. */}}
{{- define "chart.migrations" -}}
{{- if .Values.migrations.enabled }}true{{ end }}
{{- end }}

{{/*
Annotations that make the ConfigMap and the Secret hooks created before the
migration Job: a pre-install hook runs before the release's other objects exist.
*/}}
{{- define "chart.settingsHook" -}}
{{- if include "chart.migrations" . -}}
annotations:
  helm.sh/hook: pre-install,pre-upgrade,pre-rollback
  helm.sh/hook-weight: "-10"
  helm.sh/hook-delete-policy: before-hook-creation
{{- end }}
{{- end }}

{% endraw %}
{% endif %}
{% raw %}{{/* Security contexts of every pod the chart runs. */}}
{{- define "chart.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "chart.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
{{- end }}

{{- define "chart.envFrom" -}}
- configMapRef:
    name: {{ include "chart.fullname" . }}
- secretRef:
    name: {{ include "chart.secretName" . }}
{{- end }}
{% endraw %}
