{{- define "agents.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "agents.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "web") */}}
{{- define "agents.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "agents.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "agents.secretName" -}}
{{- .Values.existingSecret | default (printf "%s-env" (include "agents.fullname" .)) -}}
{{- end -}}

{{/* Environment shared by every platform container. */}}
{{- define "agents.env" -}}
{{- /* Empty values are left out: an env entry would hide the same key in
the Secret (env wins over envFrom). */ -}}
{{- range $name, $value := .Values.env }}
{{- if ne (toString $value) "" }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}
{{- if and .Values.vllm.enabled (not .Values.env.MODEL_BASE_URL) }}
- name: MODEL_BASE_URL
  value: {{ printf "http://%s-vllm:8000/v1" (include "agents.fullname" .) | quote }}
{{- if not .Values.env.DEFAULT_MODEL }}
- name: DEFAULT_MODEL
  value: {{ .Values.vllm.servedModelName | quote }}
{{- end }}
{{- end }}
- name: SANDBOX_IMAGE
  value: {{ .Values.sandbox.image | quote }}
{{- if .Values.sandbox.dockerHost }}
- name: DOCKER_HOST
  value: {{ .Values.sandbox.dockerHost | quote }}
{{- if .Values.sandbox.tlsSecret }}
- name: DOCKER_TLS_VERIFY
  value: "1"
- name: DOCKER_CERT_PATH
  value: /run/secrets/docker
{{- end }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "agents.envFrom" -}}
- secretRef:
    name: {{ include "agents.secretName" . }}
{{- end -}}

{{- define "agents.volumes" -}}
- name: tmp
  emptyDir: {}
{{- if .Values.files.persistence.enabled }}
- name: files
  persistentVolumeClaim:
    claimName: {{ .Values.files.persistence.existingClaim | default (printf "%s-files" (include "agents.fullname" .)) }}
{{- end }}
{{- if .Values.sandbox.tlsSecret }}
- name: docker-tls
  secret:
    secretName: {{ .Values.sandbox.tlsSecret }}
    defaultMode: 0400
{{- end }}
{{- end -}}

{{- define "agents.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.files.persistence.enabled }}
- name: files
  mountPath: /data/files
# The sandbox reaper's last-use times: one directory per Docker engine,
# shared by every worker using it (else one pod reaps another's sessions).
- name: files
  mountPath: /data/sandbox-state
  subPath: .sandbox-state
{{- end }}
{{- if .Values.sandbox.tlsSecret }}
- name: docker-tls
  mountPath: /run/secrets/docker
  readOnly: true
{{- end }}
{{- end -}}

{{- define "agents.podSpecCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{ toYaml . }}
{{- end }}
securityContext:
{{ toYaml .Values.podSecurityContext | indent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
{{ toYaml . | indent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
{{ toYaml . }}
{{- end }}
{{- with .Values.affinity }}
affinity:
{{ toYaml . | indent 2 }}
{{- end }}
{{- end -}}

{{/* An HPA: (dict "root" $ "component" "web" "spec" .Values.web.autoscaling) */}}
{{- define "agents.hpa" -}}
{{- if .spec.enabled }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "agents.fullname" .root }}-{{ .component }}
  labels:
    {{- include "agents.labels" .root | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "agents.fullname" .root }}-{{ .component }}
  minReplicas: {{ .spec.minReplicas }}
  maxReplicas: {{ .spec.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ .spec.targetCPUUtilizationPercentage }}
{{- end }}
{{- end -}}
