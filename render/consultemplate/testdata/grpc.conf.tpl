# Rendered by consul-template from the hello_server instances that pass their checks.
upstream grpc_servers {
{{ range service "hello_server|passing" }}  server {{ .Address }}:{{ .Port }};
{{ else }}  server 127.0.0.1:1 down; # no passing instance
{{ end }}}

server {
    listen 127.0.0.1:8443 http2;

    location / {
        grpc_pass grpc://grpc_servers;
        grpc_set_header X-Request-Id $request_id;
        error_page 502 = /grpc_unavailable;
    }

    location = /grpc_unavailable {
        internal;
        default_type application/grpc;
        add_header grpc-status 14;
        add_header grpc-message "no backend available";
        return 204;
    }
}
