# Sourced by the scripts that start `mistral-run serve --port 0 --port-file F`
# (tests/server-*.sh, benches/serve.sh, benches/soak.sh).
#
# wait_port WHO PID FILE LOG [SECONDS]: waits until the server PID has written
# FILE (it does so whole, by a rename, once it listens; the model loads
# first) and prints the port. Fails, with the last lines of LOG, when the
# server exits first or SECONDS (120) pass.
wait_port() {
    local who=$1 pid=$2 file=$3 log=$4 limit=${5:-120}
    local deadline=$((SECONDS + limit))
    until [ -s "$file" ]; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$who: the server exited before listening; $log:" >&2
            tail -n 30 "$log" >&2
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "$who: no port from the server after ${limit}s; $log:" >&2
            tail -n 30 "$log" >&2
            return 1
        fi
        sleep 0.2
    done
    tr -dc '0-9' <"$file"
}
