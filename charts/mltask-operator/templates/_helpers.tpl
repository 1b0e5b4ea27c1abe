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
{{- else if .Values.serviceAccount.name -}}
{{- .Values.serviceAccount.name -}}
{{- else -}}
{{- fail "serviceAccount.create=false needs serviceAccount.name: the ServiceAccount you made for the operator (the rules would otherwise be bound to the namespace's default ServiceAccount, which every pod there uses)" -}}
{{- end -}}
{{- end -}}

{{/* What the operator does in a watched namespace, and nothing more. Every verb is used by the
operator (clients/kube.py) or by Kopf; tests/integration/test_install.py checks the API server's
audit log of a full run against these rules. */}}
{{- define "mltask-operator.namespacedRules" -}}
# list/watch: Kopf's watches (reconciles read from them); create: a Pipeline's children; get:
# who holds a child's name when creating it conflicts; patch: a Pipeline stopping, continuing,
# retrying or archiving its children, the archived label, Kopf removing the finalizer earlier
# versions put on objects; delete: a task whose ttlSecondsAfterFinished passed
- apiGroups: [mltask.dev]
  resources: [mltasks]
  verbs: [get, list, watch, create, patch, delete]
# list/watch: Kopf's watch; patch: the archived label, Kopf removing the finalizer of earlier
# versions; delete: a pipeline whose ttlSecondsAfterFinished passed
- apiGroups: [mltask.dev]
  resources: [pipelines]
  verbs: [list, watch, patch, delete]
# status is replaced with the resourceVersion read (a concurrent change is a conflict)
- apiGroups: [mltask.dev]
  resources: [mltasks/status, pipelines/status]
  verbs: [update]
# owner references with blockOwnerDeletion (Workflows and PVCs owned by tasks, tasks by
# pipelines) need this where the OwnerReferencesPermissionEnforcement admission plugin is on
- apiGroups: [mltask.dev]
  resources: [mltasks/finalizers, pipelines/finalizers]
  verbs: [update]
# get: who holds a Workflow's name when creating it conflicts; patch: stopping a Workflow
# (spec.shutdown); delete: a Workflow whose working volume was refused (nothing half-created),
# an earlier attempt's, every one of an archived task (their pods go with them)
- apiGroups: [argoproj.io]
  resources: [workflows]
  verbs: [get, list, watch, create, patch, delete]
# get: who holds a volume's name; delete: releasing a completed or archived task's volume
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get, create, delete]
# delete: the pods of superseded automatic retries (the latest of each step stays)
- apiGroups: [""]
  resources: [pods]
  verbs: [delete]
# core v1 Events, posted by the operator and by Kopf (never updated)
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end -}}

{{/* The image of the default download and upload steps: the operator's own unless set. */}}
{{- define "mltask-operator.transferImage" -}}
{{- $repo := .Values.transfer.image.repository | default .Values.image.repository -}}
{{- $tag := .Values.transfer.image.tag | default .Values.image.tag | default .Chart.AppVersion -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}

{{/*
The names of a list of object references ([{name: a}, {name: b}]), joined by commas: "a,b".
*/}}
{{- define "mltask-operator.names" -}}
{{- $names := list -}}
{{- range . }}{{ $names = append $names .name }}{{ end -}}
{{- join "," $names -}}
{{- end }}
