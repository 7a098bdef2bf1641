# Every passing echo instance, with its tags and meta.
upstream echo {
{{ range service "echo|passing" }}  server {{ .Address }}:{{ .Port }}; # {{ .ID }} on {{ .Node }}: {{ join "," .Tags }}
{{ else }}  server 127.0.0.1:1 down;
{{ end }}}

server {
    listen 127.0.0.1:8444 http2;

    location / {
        grpc_pass grpc://echo;
{{ range service "echo|passing" }}{{ range .Tags }}        grpc_set_header X-Echo-Tag "{{ . }}";
{{ end }}{{ with .ServiceMeta.version }}        set $echo_version {{ . }};
{{ end }}{{ range $k, $v := .ServiceMeta }}        add_header X-Echo-Meta-{{ $k }} "{{ $v }}" always;
{{ end }}{{ end }}    }
}
