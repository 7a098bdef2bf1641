# [[ "{{ left alone }}" ]]
upstream kv {
[[ range service "hello_server" ]]  server [[ .Address ]]:[[ .Port ]]; # [[ .ID ]] [[ join "," .Tags ]]
[[ end ]]}
