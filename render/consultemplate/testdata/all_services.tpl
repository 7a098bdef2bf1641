# One upstream per service tagged grpc; each instance's weight comes from its "weight" meta.
{{ range services }}{{ if .Tags | contains "grpc" }}
upstream {{ .Name | replaceAll "-" "_" }} {
{{ range service .Name }}  server {{ .Address }}:{{ .Port }}{{ with .ServiceMeta.weight }} weight={{ . }}{{ end }}; # {{ .ID }} on {{ .Node }}
{{ else }}  server 127.0.0.1:1 down;
{{ end }}}
{{ end }}{{ end }}
