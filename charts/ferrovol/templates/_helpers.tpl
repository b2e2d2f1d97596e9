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
  {{- /* debug and trace for ferrovol's own code only; its libraries (h2, rustls, kube) stay at info. */}}
  value: {{ if has .Values.logging.level (list "debug" "trace") }}{{ printf "ferrovol=%s,info" .Values.logging.level | quote }}{{ else }}{{ .Values.logging.level | quote }}{{ end }}
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

{{/* "true" when local.hostpath.pools names any pool (then the node pod reads the rendered pool
     config); fails the render when a pool's path is not below one of local.hostpath.poolRoots,
     the host directories the node pod mounts (each at the same path). */}}
{{- define "ferrovol.hostpathPools" -}}
{{- $h := .Values.local.hostpath }}
{{- $paths := list }}
{{- range $name, $path := $h.pools.all }}{{ $paths = append $paths (list $name $path) }}{{ end }}
{{- range $h.pools.nodes }}
{{- range $name, $path := .pools }}{{ $paths = append $paths (list $name $path) }}{{ end }}
{{- end }}
{{- range $paths }}
{{- $name := index . 0 }}
{{- $path := index . 1 }}
{{- $below := false }}
{{- range $h.poolRoots }}{{ if hasPrefix (printf "%s/" (trimSuffix "/" .)) $path }}{{ $below = true }}{{ end }}{{ end }}
{{- if and (not $below) (ne $path $h.basePath) }}
{{- fail (printf "local.hostpath.pools: the path %s of pool %s is not below any of local.hostpath.poolRoots %v (the host directories the node pod mounts)" $path $name $h.poolRoots) }}
{{- end }}
{{- end }}
{{- if $paths }}true{{ end }}
{{- end -}}
