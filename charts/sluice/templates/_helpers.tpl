{{/* Chart name, overridable. */}}
{{- define "sluice.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-sluice, or the release name when it already contains the chart name. */}}
{{- define "sluice.fullname" -}}
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

{{- define "sluice.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the operator pods; never change them after the first install. */}}
{{- define "sluice.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sluice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "sluice.labels" -}}
helm.sh/chart: {{ include "sluice.chart" . }}
{{ include "sluice.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: sluice
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "sluice.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sluice.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sluice.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Namespace of the leader-election Lease (and of the Role that lets the operator hold it). */}}
{{- define "sluice.leaseNamespace" -}}
{{- default .Release.Namespace .Values.leaderElection.leaseNamespace }}
{{- end }}

{{/* Namespace of Secrets referenced by CircuitBreakers; the operator's own default is the Lease namespace. */}}
{{- define "sluice.circuitSecretNamespace" -}}
{{- default (include "sluice.leaseNamespace" .) .Values.settings.circuitSecretNamespace }}
{{- end }}

{{/* Namespaces that get a namespaced Role (only with watchNamespaces): watched + circuit-only ones. */}}
{{- define "sluice.roleNamespaces" -}}
{{- $all := concat .Values.watchNamespaces .Values.circuitNamespaces | uniq }}
{{- toJson $all }}
{{- end }}

{{/* Checks that JSON Schema cannot express. */}}
{{- define "sluice.validate" -}}
{{- if ge (float64 .Values.leaderElection.leaseRenewSeconds) (float64 .Values.leaderElection.leaseDurationSeconds) }}
{{- fail (printf "leaderElection.leaseRenewSeconds (%v) must be below leaderElection.leaseDurationSeconds (%v)" .Values.leaderElection.leaseRenewSeconds .Values.leaderElection.leaseDurationSeconds) }}
{{- end }}
{{- if and (not .Values.leaderElection.enabled) (gt (int .Values.replicaCount) 1) }}
{{- fail (printf "leaderElection.enabled=false with replicaCount=%v: several active operators would fight over the same ConfigMaps; set replicaCount: 1 or enable leader election" .Values.replicaCount) }}
{{- end }}
{{- range .Values.extraEnv }}
{{- if hasPrefix "SLUICE_" .name }}
{{- fail (printf "extraEnv: %s: set Sluice settings through `settings` / `leaderElection` / `watchNamespaces`, not extraEnv" .name) }}
{{- end }}
{{- end }}
{{- if and .Values.circuitNamespaces (not .Values.watchNamespaces) }}
{{- fail "circuitNamespaces only applies with watchNamespaces (without it the operator may write ConfigMaps in every namespace already)" }}
{{- end }}
{{- end }}

{{/* Rules on a BackpressurePolicy's world, shared by the ClusterRole (cluster-wide) and the per-namespace Roles. */}}
{{- define "sluice.policyRules" -}}
- apiGroups: ["sluice.dev"]
  resources: ["backpressurepolicies"]
  verbs: ["list", "watch"]
- apiGroups: ["sluice.dev"]
  resources: ["backpressurepolicies/status"]
  verbs: ["patch"]
{{- end }}

{{/* ConfigMaps the operator publishes decisions and circuit states in (it only writes ones labelled managed-by: sluice). */}}
{{- define "sluice.configMapRules" -}}
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "create", "update", "delete"]
{{- end }}

{{- define "sluice.eventRules" -}}
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{- define "sluice.secretRules" -}}
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
  {{- with .Values.kafka.secrets.names }}
  resourceNames: {{ toJson . }}
  {{- end }}
{{- end }}
