{{/*
Names, labels and small computed values shared by every template.
*/}}

{{- define "kubepeft.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Object-name prefix: <release>-kubepeft, or the release name when it already contains the chart name. */}}
{{- define "kubepeft.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "kubepeft.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels: stable across upgrades (never add the version here). */}}
{{- define "kubepeft.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubepeft.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* Kubernetes recommended labels. */}}
{{- define "kubepeft.labels" -}}
helm.sh/chart: {{ include "kubepeft.chart" . }}
{{ include "kubepeft.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: kubepeft
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "kubepeft.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kubepeft.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* An image reference from {repository, tag, digest}: digest wins, tag defaults to appVersion.
     Usage: include "kubepeft.image" (dict "image" .Values.images.operator "root" .) */}}
{{- define "kubepeft.image" -}}
{{- $image := .image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default .root.Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{/* True (non-empty) when the operator watches the whole cluster. */}}
{{- define "kubepeft.clusterWide" -}}
{{- if not .Values.watchNamespaces -}}true{{- end -}}
{{- end -}}

{{/* The kopf peering name; empty unless replicas > 1. */}}
{{- define "kubepeft.peeringName" -}}
{{- if gt (int .Values.replicas) 1 -}}
{{- default (include "kubepeft.fullname" .) .Values.peering.name -}}
{{- end -}}
{{- end -}}

{{/* Comma-separated names of the image pull secrets. */}}
{{- define "kubepeft.pullSecretNames" -}}
{{- $names := list -}}
{{- range .Values.imagePullSecrets -}}
{{- $names = append $names .name -}}
{{- end -}}
{{- join "," $names -}}
{{- end -}}

{{/*
The operator's RBAC rules for PeftJobs and the objects it creates per job (least privilege, no
wildcards). Used by the ClusterRole (cluster-wide) and by each namespaced Role.
*/}}
{{- define "kubepeft.operatorRules" -}}
# Exactly the verbs the operator's requests use (tests/operator/test_rbac_from_requests.py derives
# them from a recorded run), plus what RBAC itself requires of it, marked below.
# PeftJobs: watched, annotated (failed attempts), read once after a write conflict, deleted after
# their TTL, created as a PeftSweep's trials (and patched to suspend them); never replaced (PUT).
# Status: merge patches only.
- apiGroups: ["kubepeft.dev"]
  resources: ["peftjobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# PeftSweeps: watched; status merge-patched; finalizers/update lets trials carry
# blockOwnerDeletion (OwnerReferencesPermissionEnforcement).
- apiGroups: ["kubepeft.dev"]
  resources: ["peftsweeps"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["kubepeft.dev"]
  resources: ["peftsweeps/status"]
  verbs: ["patch"]
- apiGroups: ["kubepeft.dev"]
  resources: ["peftsweeps/finalizers"]
  verbs: ["update"]
- apiGroups: ["kubepeft.dev"]
  resources: ["peftjobs/status"]
  verbs: ["patch"]
# Required, not called: children carry blockOwnerDeletion, which clusters with the
# OwnerReferencesPermissionEnforcement admission plugin (OpenShift) allow only to users who may
# update the owner's finalizers.
- apiGroups: ["kubepeft.dev"]
  resources: ["peftjobs/finalizers"]
  verbs: ["update"]
# Worker pods and ConfigMaps: read from watches, created, pods deleted (gang restarts); a
# sweep's report pod is read by name.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["list", "watch", "create"]
# The operator creates the trainer's Role (get and patch of its progress ConfigMap), and RBAC
# lets a user grant only what it holds itself; `get` is also how a sweep reads its trials' progress.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "patch"]
# Other children: created; read only when one already exists, to check that it is the job's own.
- apiGroups: [""]
  resources: ["services", "serviceaccounts"]
  verbs: ["get", "create"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "create"]
# The key names of the Secrets a job references, checked before its pods start.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
# The PersistentVolumeClaims a job declares (exist, access modes), checked before its pods start.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}
