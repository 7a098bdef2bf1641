upstream u {
  server 127.0.0.1:1;
{{ nosuchfunc "x" }}
}
