{{/* Names and labels shared by every template. */}}
{{- define "mltask-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mltask-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "mltask-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mltask-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mltask-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "mltask-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mltask-operator
{{- end -}}

{{- define "mltask-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mltask-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* What the operator does in a watched namespace, and nothing more. */}}
{{- define "mltask-operator.namespacedRules" -}}
- apiGroups: [mltask.dev]
  resources: [mltasks, pipelines]
  verbs: [get, list, watch, create, patch, update]
- apiGroups: [mltask.dev]
  resources: [mltasks/status, pipelines/status]
  verbs: [get, update, patch]
# owner references with blockOwnerDeletion (Workflows and PVCs owned by tasks, tasks by pipelines)
- apiGroups: [mltask.dev]
  resources: [mltasks/finalizers, pipelines/finalizers]
  verbs: [update]
- apiGroups: [argoproj.io]
  resources: [workflows]
  verbs: [get, list, watch, create, patch]
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get, create]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}
