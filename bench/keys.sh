# Sourced by the bench scripts that measure a caller with a virtual key.
# bench_key PORT MASTER_KEY: through the admin API, makes the team `bench-team` and in it the
# key `bench`, each with rpm, tpm and a daily budget high enough never to refuse (what is
# measured is checking them, not refusals); prints the key's secret. The team may be there
# already (a second gateway on the same database).
bench_key() {
    local limits='"rpm":100000000,"tpm":100000000000,"budget":{"usd":1000000,"period":"1d"}'
    bench_admin "$1" "$2" teams "{\"name\":\"bench-team\",$limits}" >/dev/null || true
    bench_admin "$1" "$2" keys "{\"name\":\"bench\",\"team\":\"bench-team\",$limits}" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])'
}

# bench_admin PORT MASTER_KEY PATH BODY: POST /admin/PATH.
bench_admin() {
    curl -sf -H "authorization: Bearer $2" -H 'content-type: application/json' \
        "http://127.0.0.1:$1/admin/$3" -d "$4"
}
