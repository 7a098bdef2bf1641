upstream broken {
  server {{ range service "x" }}
{{ .Address }
}
