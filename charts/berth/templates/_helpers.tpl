{{- define "berth.labels" -}}
app.kubernetes.io/part-of: berth
{{- end -}}
