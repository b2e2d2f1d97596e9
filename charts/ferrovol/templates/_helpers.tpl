{{/* Names, labels and repeated container fragments. */}}

{{- define "ferrovol.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ferrovol.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels for one component: (list $ "node") */}}
{{- define "ferrovol.selector" -}}
app.kubernetes.io/name: {{ (index . 0).Chart.Name }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "ferrovol.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* A sidecar image: (list $ "provisioner") */}}
{{- define "ferrovol.sidecarImage" -}}
{{- $s := index (index . 0).Values.sidecars (index . 1) -}}
image: {{ printf "%s:%s" $s.repository $s.tag }}
imagePullPolicy: {{ $s.pullPolicy }}
{{- end -}}

{{- define "ferrovol.localBackends" -}}
{{- $b := list -}}
{{- if .Values.local.hostpath.enabled }}{{ $b = append $b "hostpath" }}{{ end -}}
{{- if .Values.local.device.enabled }}{{ $b = append $b "device" }}{{ end -}}
{{- join "," $b -}}
{{- end -}}

{{/* Environment every ferrovol container gets. */}}
{{/* The NFS controller's share registry: a ConfigMap in the release namespace. */}}
{{- define "ferrovol.nfsRegistry" -}}
{{- printf "%s-nfs-shares" (include "ferrovol.fullname" .) -}}
{{- end -}}

{{- define "ferrovol.env" -}}
- name: RUST_LOG
  value: {{ .Values.logging.level | quote }}
- name: NODE_ID
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
{{ include "ferrovol.podIPEnv" . }}
{{- end -}}

{{/* The pod's own address, which metrics.bindAddress may name as $(POD_IP). */}}
{{- define "ferrovol.podIPEnv" -}}
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
{{- end -}}

{{/* Environment of node-deployed sidecars (they filter by node and own what they publish). */}}
{{- define "ferrovol.sidecarEnv" -}}
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end -}}

{{/* Hardening for every container of the controller pods. */}}
{{- define "ferrovol.restricted" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: ["ALL"]
{{- end -}}
