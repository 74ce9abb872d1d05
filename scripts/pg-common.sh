# Helpers shared by scripts/pg and scripts/pg-ha (sourced, not run).

# The newest installed PostgreSQL's bin directory, or nothing.
# (`|| true`: with pipefail, ls finding nothing would end the script silently.)
bin_dir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true; }

# Runs a command as the `postgres` user when root (the server refuses to run as root).
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# Prints the bin directory, installing Debian's postgresql package first if need be.
ensure_postgres() {
    local bin
    bin=$(bin_dir)
    if [ -z "$bin" ]; then
        echo "installing Debian's postgresql package" >&2
        local sudo=
        [ "$(id -u)" = 0 ] || sudo=sudo
        $sudo apt-get update -qq >&2
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
        bin=$(bin_dir)
    fi
    [ -n "$bin" ] || { echo "no PostgreSQL binaries after installing" >&2; exit 1; }
    echo "$bin"
}

# A free TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A fresh directory for servers, owned by the server's user.
server_dir() {
    local dir
    dir=$(mktemp -d "/tmp/$1.XXXXXX")
    chmod 755 "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
    echo "$dir"
}

# The two nodes of a replicated pair (scripts/pg-ha, scripts/ha-patroni): NODE's port,
# and the other node.
port_of() { cat "$1/$2.port"; }
other() { if [ "$1" = a ]; then echo b; else echo a; fi; }

# Runs each SQL argument on NODE of the pair in DIR as a statement of its own (ALTER
# SYSTEM cannot run in a transaction), as `sealkv` over the Unix socket; prints the rows.
# Needs BIN, the PostgreSQL bin directory.
sql() {
    local dir=$1 node=$2 args=()
    shift 2
    for statement in "$@"; do args+=(-c "$statement"); done
    as_owner "$BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$dir" -p "$(port_of "$dir" "$node")" \
        -U sealkv -d postgres "${args[@]}"
}
