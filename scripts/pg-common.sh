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
