{{- define "echo-gateway.name" -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- define "echo-gateway.labels" -}}
app.kubernetes.io/name: echo-gateway
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
