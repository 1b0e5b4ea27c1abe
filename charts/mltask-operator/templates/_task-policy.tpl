{{/* The task policy's rules in CEL: what a task spec may ask for its pods, from the values
taskPolicy.*. operator/mltask_operator/task_policy.py holds the operator's own check of the same
rules; tests/unit/test_task_policy.py keeps the two in agreement. Each rule: the field's path
under a task spec, `bad` (CEL, true when the spec S asks what the policy refuses; S stands for
the spec, CRED for "the task has storage credentials"), why, and the value that relaxes it. */}}
{{- define "mltask-operator.taskPolicy.stepRules" -}}
{{- $v := .Values.taskPolicy -}}
{{- $rules := list -}}
{{- range $step := list "download" "run" "upload" -}}
{{- $sc := printf "S.steps.%s.securityContext" $step -}}
{{- $has := printf "has(S.steps.%s) && has(%s)" $step $sc -}}
{{- $at := printf ".steps.%s.securityContext" $step -}}
{{- if not $v.allowPrivileged -}}
{{- $rules = append $rules (dict "path" (printf "%s.privileged" $at) "value" "allowPrivileged"
    "bad" (printf "%s && has(%s.privileged) && %s.privileged" $has $sc $sc)
    "why" "privileged containers are not allowed") -}}
{{- $rules = append $rules (dict "path" (printf "%s.allowPrivilegeEscalation" $at)
    "value" "allowPrivileged"
    "bad" (printf "%s && has(%s.allowPrivilegeEscalation) && %s.allowPrivilegeEscalation" $has $sc $sc)
    "why" "privilege escalation is not allowed") -}}
{{- end -}}
{{- if not $v.allowRoot -}}
{{- $rules = append $rules (dict "path" (printf "%s.runAsUser" $at) "value" "allowRoot"
    "bad" (printf "%s && has(%s.runAsUser) && %s.runAsUser == 0" $has $sc $sc)
    "why" "running as root (0) is not allowed") -}}
{{- $rules = append $rules (dict "path" (printf "%s.runAsNonRoot" $at) "value" "allowRoot"
    "bad" (printf "%s && has(%s.runAsNonRoot) && !%s.runAsNonRoot" $has $sc $sc)
    "why" "runAsNonRoot false is not allowed") -}}
{{- end -}}
{{- $caps := $v.allowedCapabilities -}}
{{- $rules = append $rules (dict "path" (printf "%s.capabilities.add" $at)
    "value" "allowedCapabilities"
    "bad" (printf "%s && has(%s.capabilities) && has(%s.capabilities.add) && %s.capabilities.add.exists(c, !(c in %s))" $has $sc $sc $sc (toJson $caps))
    "why" (printf "adding capabilities: %s" (include "mltask-operator.taskPolicy.allowed" $caps))) -}}
{{- end -}}
{{- if not $v.allowCustomTransferImages -}}
{{- range $step := list "download" "upload" -}}
{{- $rules = append $rules (dict "path" (printf ".steps.%s" $step) "value" "allowCustomTransferImages"
    "bad" (printf "CRED && has(S.steps.%s)" $step)
    "why" (printf "setting steps.%s gives that step the storage credentials (storage.secretRef): leave it out to use the project transfer step" $step)) -}}
{{- end -}}
{{- end -}}
{{- toJson $rules -}}
{{- end -}}

{{/* Rules on a runtime (R: a task's spec.runtime, or a Pipeline's spec.defaults, the same
field names; HAS: whether it is there). */}}
{{- define "mltask-operator.taskPolicy.runtimeRules" -}}
{{- $v := .Values.taskPolicy -}}
{{- $rules := list -}}
{{- $rules = append $rules (dict "path" ".serviceAccountName" "value" "allowedServiceAccounts"
    "bad" (printf "HAS && has(R.serviceAccountName) && !(R.serviceAccountName in %s)" (toJson $v.allowedServiceAccounts))
    "why" (printf "ServiceAccount: %s" (include "mltask-operator.taskPolicy.allowed" $v.allowedServiceAccounts))) -}}
{{- $rules = append $rules (dict "path" ".priorityClassName" "value" "allowedPriorityClasses"
    "bad" (printf "HAS && has(R.priorityClassName) && !(R.priorityClassName in %s)" (toJson $v.allowedPriorityClasses))
    "why" (printf "PriorityClass: %s" (include "mltask-operator.taskPolicy.allowed" $v.allowedPriorityClasses))) -}}
{{- if not $v.allowWildcardTolerations -}}
{{- $rules = append $rules (dict "path" ".tolerations" "value" "allowWildcardTolerations"
    "bad" "HAS && has(R.tolerations) && R.tolerations.exists(t, has(t.operator) && t.operator == 'Exists' && (!has(t.key) || t.key == ''))"
    "why" "a toleration with operator Exists and no key tolerates every taint: name the key of the taint") -}}
{{- end -}}
{{- /* pod label and annotation keys: those listed, a `*` entry allowing every key it starts with */ -}}
{{- range $f := list (dict "field" "podLabels" "what" "label" "keys" $v.podLabelKeys "value" "podLabelKeys")
    (dict "field" "podAnnotations" "what" "annotation" "keys" $v.podAnnotationKeys "value" "podAnnotationKeys") -}}
{{- $exact := list -}}
{{- $tests := list -}}
{{- range $k := $f.keys -}}
{{- if hasSuffix "*" $k -}}
{{- $tests = append $tests (printf "k.startsWith(%s)" (trimSuffix "*" $k | squote)) -}}
{{- else -}}
{{- $exact = append $exact $k -}}
{{- end -}}
{{- end -}}
{{- $tests = prepend $tests (printf "k in %s" (toJson $exact)) -}}
{{- $rules = append $rules (dict "path" (printf ".%s" $f.field) "value" $f.value
    "bad" (printf "HAS && has(R.%s) && R.%s.exists(k, !(%s))" $f.field $f.field (join " || " $tests))
    "why" (printf "pod %s keys: %s" $f.what (include "mltask-operator.taskPolicy.allowed" $f.keys))) -}}
{{- end -}}
{{- toJson $rules -}}
{{- end -}}

{{- define "mltask-operator.taskPolicy.allowed" -}}
{{- if . }}allowed: {{ join ", " . }}{{ else }}none is allowed{{ end -}}
{{- end -}}

{{/* One validation of the MLTask policy: the rule over object.spec. */}}
{{- define "mltask-operator.taskPolicy.mltaskValidation" -}}
{{- $bad := .rule.bad | replace "HAS" .has | replace "R." .r | replace "CRED" "has(S.storage)" | replace "S." "object.spec." -}}
- expression: {{ printf "!(%s)" $bad | quote }}
  message: {{ printf "spec%s%s: %s (chart value taskPolicy.%s)" .prefix .rule.path .rule.why .rule.value | quote }}
  reason: Forbidden
{{- end -}}

{{/* One validation of the Pipeline policy: the rule over each task's spec
(object.spec.tasks[i].spec), its message naming every task that breaks it by index. */}}
{{- define "mltask-operator.taskPolicy.pipelineValidation" -}}
{{- $spec := "object.spec.tasks[i].spec" -}}
{{- $cred := "(has(S.storage) || (has(object.spec.defaults) && has(object.spec.defaults.storage)))" -}}
{{- $bad := .rule.bad | replace "HAS" "has(S.runtime)" | replace "R." "S.runtime." | replace "CRED" $cred | replace "S." (printf "%s." $spec) -}}
{{- $which := printf "%s.filter(i, i < size(object.spec.tasks) && %s)" .indices $bad -}}
- expression: {{ printf "!%s.exists(i, i < size(object.spec.tasks) && %s)" .indices $bad | quote }}
  messageExpression: {{ printf "%s.map(i, 'spec.tasks[' + string(i) + '].spec%s%s').join(', ') + %s" $which .prefix .rule.path (printf ": %s (chart value taskPolicy.%s)" .rule.why .rule.value | squote) | quote }}
  message: {{ printf "spec.tasks[*].spec%s%s: %s (chart value taskPolicy.%s)" .prefix .rule.path .rule.why .rule.value | quote }}
  reason: Forbidden
{{- end -}}
