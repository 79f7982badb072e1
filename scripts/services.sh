#!/usr/bin/env bash
# Start (or reuse) the local services Footprint's tests need:
#   - tansu   : Kafka-compatible broker, on a free loopback port
#   - redis   : 127.0.0.1:6379
#   - mariadb : 127.0.0.1:3306, root with an empty password over TCP
#
# Usage:
#   scripts/services.sh up   [--store memory|sqlite] [--db PATH] [--dir DIR]
#   scripts/services.sh down [--dir DIR]
#   scripts/services.sh env  [--dir DIR]
#
# `up` prints `export NAME=value` lines on stdout (progress goes to stderr), so
#   eval "$(scripts/services.sh up)"
# exports FOOTPRINT_BROKERS, FOOTPRINT_REDIS_URL and FOOTPRINT_MYSQL_URL.
# The same lines (without `export`) are kept in DIR/services.env.
#
# Every step is idempotent: a service that already answers is reused. Only the
# processes this script started are recorded (DIR/<name>.pid), and `down` stops
# only those; services that were running before are never touched.
set -euo pipefail

TANSU_VERSION=0.6.0
TANSU_FEATURES=dynostore,libsql
REDIS_PORT=6379
MYSQL_PORT=3306
WAIT_SECONDS=60

log() { echo "services: $*" >&2; }
die() { echo "services: error: $*" >&2; exit 1; }

usage() {
    cat >&2 <<'EOF'
usage: scripts/services.sh up   [--store memory|sqlite] [--db PATH] [--dir DIR]
       scripts/services.sh down [--dir DIR]
       scripts/services.sh env  [--dir DIR]
EOF
    exit 2
}

# ---------------------------------------------------------------- arguments --
[ $# -ge 1 ] || usage
CMD=$1
shift
case "$CMD" in
    up | down | env) ;;
    -h | --help | help) usage ;;
    *) echo "services: unknown command: $CMD" >&2; usage ;;
esac

STORE=memory
DB=footprint.db
DIR=.footprint/services
while [ $# -gt 0 ]; do
    case "$1" in
        --store) [ $# -ge 2 ] || usage; STORE=$2; shift 2 ;;
        --store=*) STORE=${1#*=}; shift ;;
        --db) [ $# -ge 2 ] || usage; DB=$2; shift 2 ;;
        --db=*) DB=${1#*=}; shift ;;
        --dir) [ $# -ge 2 ] || usage; DIR=$2; shift 2 ;;
        --dir=*) DIR=${1#*=}; shift ;;
        -h | --help) usage ;;
        *) echo "services: unknown option: $1" >&2; usage ;;
    esac
done
case "$STORE" in
    memory | sqlite) ;;
    *) die "--store must be memory or sqlite, not '$STORE'" ;;
esac
[ -n "$DIR" ] || die "--dir must not be empty"
[ -n "$DB" ] || die "--db must not be empty"

# Absolute paths, resolved against the caller's working directory.
abspath() {
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s\n' "$PWD/${1#./}" ;;
    esac
}
DIR=$(abspath "$DIR")
ENV_FILE=$DIR/services.env

export PATH="$HOME/.cargo/bin:$PATH"

# ------------------------------------------------------------------ helpers --
if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    SUDO=()
fi
as_root() {
    if [ ${#SUDO[@]} -gt 0 ]; then "${SUDO[@]}" "$@"; else "$@"; fi
}

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 ||
        die "need to install $*, but apt-get is not available; install them by hand"
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 ||
            die "apt-get update failed"
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2 ||
        die "apt-get install $* failed"
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" >/dev/null 2>&1
}

# A free loopback TCP port: python3 if it works, else probe random ports.
free_port() {
    local port=""
    if command -v python3 >/dev/null 2>&1; then
        port=$(python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()' 2>/dev/null) || port=""
    fi
    case "$port" in
        '' | *[!0-9]*) port="" ;;
    esac
    if [ -z "$port" ]; then
        for _ in $(seq 1 200); do
            port=$(( (RANDOM * 32768 + RANDOM) % 30000 + 20000 ))
            port_open "$port" || break
            port=""
        done
    fi
    [ -n "$port" ] || die "could not find a free TCP port on 127.0.0.1"
    printf '%s\n' "$port"
}

# Alive and not a zombie (zombies linger where PID 1 does not reap).
pid_alive() {
    local pid=$1 state
    case "$pid" in '' | *[!0-9]*) return 1 ;; esac
    kill -0 "$pid" 2>/dev/null || return 1
    if [ -r "/proc/$pid/stat" ]; then
        state=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || state=""
        [ "$state" != Z ] || return 1
    fi
    return 0
}

# True when pid $1 is alive and its command line mentions one of $2.. (guards
# against a recycled pid when reading an old pid file).
pid_is() {
    local pid=$1 cmdline name
    shift
    pid_alive "$pid" || return 1
    [ -r "/proc/$pid/cmdline" ] || return 0
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    for name in "$@"; do
        case "$cmdline" in *"$name"*) return 0 ;; esac
    done
    return 1
}

read_pid() { if [ -f "$1" ]; then tr -dc '0-9' <"$1" || true; fi; }

# Launch "$@" detached, output appended to log $1 (first arg), echo its pid.
launch() {
    local logfile=$1
    shift
    if command -v setsid >/dev/null 2>&1; then
        setsid "$@" >>"$logfile" 2>&1 </dev/null 9>&- &
    else
        nohup "$@" >>"$logfile" 2>&1 </dev/null 9>&- &
    fi
    echo $!
}

show_log() {
    if [ -f "$1" ]; then
        echo "services: --- last lines of $1 ---" >&2
        tail -n 20 "$1" >&2 || true
    fi
}

# stop NAME PIDFILE PATTERN...: stop the process recorded in PIDFILE.
stop_recorded() {
    local name=$1 pidfile=$2 pid
    shift 2
    [ -f "$pidfile" ] || return 0
    pid=$(read_pid "$pidfile")
    if [ -n "$pid" ] && pid_is "$pid" "$@"; then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 60); do
            pid_alive "$pid" || break
            sleep 0.5
        done
        if pid_alive "$pid"; then
            log "$name (pid $pid) did not stop after 30 s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            for _ in $(seq 1 20); do
                pid_alive "$pid" || break
                sleep 0.5
            done
        fi
        pid_alive "$pid" && die "could not stop $name (pid $pid)"
        log "$name stopped"
    else
        log "$name: recorded pid ${pid:-?} is not running; nothing to stop"
    fi
    rm -f "$pidfile"
}

# ------------------------------------------------------------------- env/down --
print_env() {
    local line
    while IFS= read -r line || [ -n "$line" ]; do
        [ -n "$line" ] && printf 'export %s\n' "$line"
    done <"$ENV_FILE"
}

if [ "$CMD" = env ]; then
    [ -f "$ENV_FILE" ] || die "$ENV_FILE does not exist; run: scripts/services.sh up"
    print_env
    exit 0
fi

if [ "$CMD" = down ]; then
    if [ ! -d "$DIR" ]; then
        log "$DIR does not exist; nothing to stop"
        exit 0
    fi
    stop_recorded tansu "$DIR/tansu.pid" tansu
    stop_recorded redis "$DIR/redis.pid" redis-server redis
    stop_recorded mariadb "$DIR/mariadb.pid" mariadbd mysqld
    rm -f "$DIR/tansu.port" "$DIR/tansu.args" "$ENV_FILE"
    log "down: done (services this script did not start were left running)"
    exit 0
fi

# ----------------------------------------------------------------------- up --
mkdir -p "$DIR"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$DIR/.lock"
    flock 9
fi
# A failed `up` must not leave an env file that looks valid.
rm -f "$ENV_FILE"

# 1. Build prerequisites (librdkafka is compiled from source by rdkafka).
missing=()
for tool in cc c++ make pkg-config perl; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "build tools missing: ${missing[*]}"
    apt_install build-essential pkg-config perl
else
    log "build tools present (cc c++ make pkg-config perl)"
fi

# 2. tansu.
find_tansu() {
    if command -v tansu >/dev/null 2>&1; then
        command -v tansu
    elif [ -x "$HOME/.cargo/bin/tansu" ]; then
        printf '%s\n' "$HOME/.cargo/bin/tansu"
    fi
}
install_tansu() {
    command -v cargo >/dev/null 2>&1 || die "tansu is missing and cargo is not on PATH"
    log "installing tansu $TANSU_VERSION with cargo (features $TANSU_FEATURES); this takes ~15 minutes"
    cargo install tansu --version "$TANSU_VERSION" --locked --features "$TANSU_FEATURES" "$@" >&2 ||
        die "cargo install tansu failed"
}
TANSU=$(find_tansu)
if [ -z "$TANSU" ]; then
    install_tansu
    TANSU=$(find_tansu)
    [ -n "$TANSU" ] || die "tansu still not found after cargo install"
fi
# The storage engine we need must be compiled in (tansu --help lists them).
need_engine=dynostore
[ "$STORE" = sqlite ] && need_engine=libsql
engines=$("$TANSU" --help 2>/dev/null | sed -n 's/^Storage engines: *//p') || engines=""
engines_csv=",$(printf '%s' "$engines" | tr -d ' '),"
if [ -n "$engines" ] && [ "${engines_csv#*,"$need_engine",}" = "$engines_csv" ]; then
    log "$TANSU lacks the '$need_engine' storage engine (has: $engines); reinstalling"
    install_tansu --force
    TANSU=$(find_tansu)
fi
log "tansu: $TANSU"

# 3. tansu broker on a free loopback port.
if [ "$STORE" = sqlite ]; then
    DB_ABS=$(abspath "$DB")
    case "$DB_ABS" in
        *[!A-Za-z0-9._/+@-]*)
            die "--db path '$DB_ABS' has characters tansu's sqlite:// URL cannot carry; use [A-Za-z0-9._/+@-] only" ;;
    esac
    mkdir -p "$(dirname "$DB_ABS")"
    # tansu resolves sqlite://HOST/PATH against its working directory
    # (cwd + host + path); it is started from /, so this names DB_ABS.
    STORAGE_URL="sqlite://$DB_ABS"
else
    STORAGE_URL="memory://tansu/"
fi

TANSU_PIDFILE=$DIR/tansu.pid
TANSU_LOG=$DIR/tansu.log
tansu_port=""
old_pid=$(read_pid "$TANSU_PIDFILE")
if [ -n "$old_pid" ] && pid_is "$old_pid" tansu; then
    old_port=$(tr -dc '0-9' <"$DIR/tansu.port" 2>/dev/null || true)
    old_args=$(cat "$DIR/tansu.args" 2>/dev/null || true)
    if [ -n "$old_port" ] && [ "$old_args" = "$STORAGE_URL" ] && port_open "$old_port"; then
        tansu_port=$old_port
        log "tansu: reusing broker pid $old_pid on 127.0.0.1:$tansu_port ($STORAGE_URL)"
    else
        log "tansu: recorded broker pid $old_pid does not match this request; restarting it"
        stop_recorded tansu "$TANSU_PIDFILE" tansu
    fi
else
    rm -f "$TANSU_PIDFILE"
fi

if [ -z "$tansu_port" ]; then
    tansu_port=$(free_port)
    listener="tcp://127.0.0.1:$tansu_port"
    log "tansu: starting broker on 127.0.0.1:$tansu_port, storage $STORAGE_URL (log: $TANSU_LOG)"
    : >"$TANSU_LOG"
    # Run from / so the sqlite path resolves as documented above and tansu's
    # dotenv does not pick up a project .env. Unset the env vars its CLI reads
    # for optional features (schema registry, OTLP) so they stay off.
    tansu_pid=$(cd / && launch "$TANSU_LOG" env \
        -u SCHEMA_REGISTRY -u OTEL_EXPORTER_OTLP_ENDPOINT -u DATA_LAKE \
        "$TANSU" broker \
        --cluster-id footprint \
        --listener-url "$listener" \
        --advertised-listener-url "$listener" \
        --storage-engine "$STORAGE_URL")
    echo "$tansu_pid" >"$TANSU_PIDFILE"
    echo "$tansu_port" >"$DIR/tansu.port"
    echo "$STORAGE_URL" >"$DIR/tansu.args"
    deadline=$((SECONDS + WAIT_SECONDS))
    until port_open "$tansu_port"; do
        if ! pid_alive "$tansu_pid"; then
            rm -f "$TANSU_PIDFILE"
            show_log "$TANSU_LOG"
            die "tansu exited during startup; see $TANSU_LOG"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            show_log "$TANSU_LOG"
            die "tansu did not accept connections on 127.0.0.1:$tansu_port within ${WAIT_SECONDS}s; see $TANSU_LOG (pid $tansu_pid left running; 'down' stops it)"
        fi
        sleep 0.5
    done
    log "tansu: up (pid $tansu_pid)"
fi

# 4. Redis.
REDIS_PIDFILE=$DIR/redis.pid
REDIS_LOG=$DIR/redis.log
redis_ok() {
    command -v redis-cli >/dev/null 2>&1 &&
        [ "$(timeout 5 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]
}
# A stale record (process gone or pid recycled) is not ours any more.
old_pid=$(read_pid "$REDIS_PIDFILE")
if [ -f "$REDIS_PIDFILE" ] && ! { [ -n "$old_pid" ] && pid_is "$old_pid" redis; }; then
    rm -f "$REDIS_PIDFILE"
fi
if redis_ok; then
    if [ -f "$REDIS_PIDFILE" ]; then
        log "redis: reusing the server this script started (pid $(read_pid "$REDIS_PIDFILE"))"
    else
        log "redis: already running on 127.0.0.1:$REDIS_PORT; using it (not ours, 'down' leaves it)"
    fi
else
    pkgs=()
    command -v redis-server >/dev/null 2>&1 || pkgs+=(redis-server)
    command -v redis-cli >/dev/null 2>&1 || pkgs+=(redis-tools)
    [ ${#pkgs[@]} -eq 0 ] || apt_install "${pkgs[@]}"
    if redis_ok; then
        log "redis: already running on 127.0.0.1:$REDIS_PORT; using it (not ours, 'down' leaves it)"
    else
        port_open "$REDIS_PORT" &&
            die "127.0.0.1:$REDIS_PORT is taken by something that does not answer redis PING"
        log "redis: starting redis-server on 127.0.0.1:$REDIS_PORT (log: $REDIS_LOG)"
        redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" \
            --save "" --appendonly no --dir "$DIR" \
            --pidfile "$REDIS_PIDFILE" --logfile "$REDIS_LOG" >&2 9>&- ||
            { show_log "$REDIS_LOG"; die "redis-server failed to start; see $REDIS_LOG"; }
        deadline=$((SECONDS + WAIT_SECONDS))
        until redis_ok; do
            if [ "$SECONDS" -ge "$deadline" ]; then
                show_log "$REDIS_LOG"
                die "redis did not answer PING on 127.0.0.1:$REDIS_PORT within ${WAIT_SECONDS}s; see $REDIS_LOG"
            fi
            sleep 0.5
        done
        # --daemonize writes the pid file itself; wait for it so 'down' finds it.
        for _ in $(seq 1 20); do [ -s "$REDIS_PIDFILE" ] && break; sleep 0.25; done
        [ -s "$REDIS_PIDFILE" ] || log "redis: warning: $REDIS_PIDFILE was not written; 'down' cannot stop it"
        log "redis: up (pid $(read_pid "$REDIS_PIDFILE"))"
    fi
fi

# 5. MariaDB.
MARIADB_PIDFILE=$DIR/mariadb.pid
MARIADB_LOG=$DIR/mariadb.log
mysql_client() {
    if command -v mariadb >/dev/null 2>&1; then
        printf 'mariadb\n'
    elif command -v mysql >/dev/null 2>&1; then
        printf 'mysql\n'
    fi
}
mysql_tcp_ok() {
    local client
    client=$(mysql_client)
    [ -n "$client" ] || return 1
    timeout 10 "$client" --protocol=TCP -h127.0.0.1 -P"$MYSQL_PORT" -uroot \
        --connect-timeout=3 -e 'select 1' >/dev/null 2>&1
}
mysql_socket() {
    local client
    client=$(mysql_client)
    [ -n "$client" ] || return 1
    as_root timeout 10 "$client" --protocol=SOCKET -uroot "$@"
}
mariadbd_bin() {
    local b
    for b in /usr/sbin/mariadbd /usr/sbin/mysqld "$(command -v mariadbd 2>/dev/null || true)" \
        "$(command -v mysqld 2>/dev/null || true)"; do
        [ -n "$b" ] && [ -x "$b" ] && { printf '%s\n' "$b"; return 0; }
    done
    return 1
}
# Make root@localhost (and root@127.0.0.1) accept an empty password over TCP,
# keeping unix_socket auth (MariaDB's default for root) as an alternative.
mysql_fix_root() {
    log "mariadb: root cannot log in over TCP with an empty password; fixing via the unix socket"
    mysql_socket -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD(''); FLUSH PRIVILEGES;" >&2 ||
        mysql_socket -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD(''); FLUSH PRIVILEGES;" >&2 ||
        mysql_socket -e "ALTER USER 'root'@'localhost' IDENTIFIED BY ''; FLUSH PRIVILEGES;" >&2 ||
        log "mariadb: ALTER USER root@localhost failed"
    mysql_tcp_ok && return 0
    # With skip-name-resolve, 127.0.0.1 does not match 'localhost'.
    mysql_socket -e "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''; GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION; FLUSH PRIVILEGES;" >&2 ||
        log "mariadb: creating root@127.0.0.1 failed"
    mysql_tcp_ok
}
# Wait until the server answers on the socket or TCP; 0 when it does.
mysql_wait_up() {
    local pid=${1:-} deadline=$((SECONDS + WAIT_SECONDS))
    until mysql_tcp_ok || mysql_socket -e 'select 1' >/dev/null 2>&1; do
        if [ -n "$pid" ] && ! pid_alive "$pid"; then
            return 2
        fi
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 1
    done
}

old_pid=$(read_pid "$MARIADB_PIDFILE")
if [ -f "$MARIADB_PIDFILE" ] && ! { [ -n "$old_pid" ] && pid_is "$old_pid" mariadbd mysqld; }; then
    rm -f "$MARIADB_PIDFILE"
fi
if mysql_tcp_ok; then
    if [ -f "$MARIADB_PIDFILE" ]; then
        log "mariadb: reusing the server this script started (pid $(read_pid "$MARIADB_PIDFILE"))"
    else
        log "mariadb: already running on 127.0.0.1:$MYSQL_PORT; using it (not ours, 'down' leaves it)"
    fi
else
    pkgs=()
    mariadbd_bin >/dev/null || pkgs+=(mariadb-server)
    [ -n "$(mysql_client)" ] || pkgs+=(mariadb-client)
    [ ${#pkgs[@]} -eq 0 ] || apt_install "${pkgs[@]}"
    [ -n "$(mysql_client)" ] || die "no mariadb/mysql client after install"
    if port_open "$MYSQL_PORT" || mysql_socket -e 'select 1' >/dev/null 2>&1; then
        # Running (ours from before, or started by the package), but TCP
        # login as root fails.
        log "mariadb: a server is running but root cannot log in over TCP"
        mysql_wait_up || true
    else
        MARIADBD=$(mariadbd_bin) || die "mariadbd not found after installing mariadb-server"
        getent passwd mysql >/dev/null 2>&1 || die "the 'mysql' system user does not exist"
        as_root mkdir -p /run/mysqld
        as_root chown mysql:mysql /run/mysqld
        : >"$MARIADB_LOG"
        datadir=/var/lib/mysql
        if [ ! -d "$datadir/mysql" ]; then
            log "mariadb: initialising $datadir"
            installer=$(command -v mariadb-install-db || command -v mysql_install_db || true)
            [ -n "$installer" ] || die "mariadb-install-db not found"
            as_root "$installer" --user=mysql --datadir="$datadir" >>"$MARIADB_LOG" 2>&1 ||
                { show_log "$MARIADB_LOG"; die "mariadb-install-db failed; see $MARIADB_LOG"; }
        fi
        log "mariadb: starting $MARIADBD on 127.0.0.1:$MYSQL_PORT (log: $MARIADB_LOG)"
        if [ ${#SUDO[@]} -gt 0 ]; then
            # sudo keeps its pid only without a fork; record the server's own.
            "${SUDO[@]}" start-stop-daemon --start --oknodo --background --make-pidfile \
                --pidfile "$MARIADB_PIDFILE" --exec "$MARIADBD" -- --user=mysql \
                --bind-address=127.0.0.1 --port="$MYSQL_PORT" >&2 9>&- ||
                die "start-stop-daemon failed to start $MARIADBD"
            for _ in $(seq 1 20); do [ -s "$MARIADB_PIDFILE" ] && break; sleep 0.25; done
            mariadb_pid=$(read_pid "$MARIADB_PIDFILE")
        else
            mariadb_pid=$(cd / && launch "$MARIADB_LOG" "$MARIADBD" --user=mysql \
                --bind-address=127.0.0.1 --port="$MYSQL_PORT")
            echo "$mariadb_pid" >"$MARIADB_PIDFILE"
        fi
        rc=0
        mysql_wait_up "$mariadb_pid" || rc=$?
        if [ "$rc" -eq 2 ]; then
            rm -f "$MARIADB_PIDFILE"
            show_log "$MARIADB_LOG"
            die "mariadb exited during startup; see $MARIADB_LOG"
        fi
        log "mariadb: started (pid $mariadb_pid)"
    fi
    mysql_tcp_ok || mysql_fix_root || true
    deadline=$((SECONDS + WAIT_SECONDS))
    until mysql_tcp_ok; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            show_log "$MARIADB_LOG"
            die "mariadb did not accept 'select 1' as root@127.0.0.1:$MYSQL_PORT (empty password) within ${WAIT_SECONDS}s; see $MARIADB_LOG"
        fi
        sleep 1
    done
    log "mariadb: up"
fi

# 6. Final check that everything answers, then 7. the env file.
port_open "$tansu_port" || die "tansu stopped answering on 127.0.0.1:$tansu_port; see $TANSU_LOG"
redis_ok || die "redis stopped answering on 127.0.0.1:$REDIS_PORT; see $REDIS_LOG"
mysql_tcp_ok || die "mariadb stopped answering on 127.0.0.1:$MYSQL_PORT; see $MARIADB_LOG"

tmp_env=$(mktemp "$DIR/.services.env.XXXXXX")
chmod 644 "$tmp_env"
cat >"$tmp_env" <<EOF
FOOTPRINT_BROKERS=127.0.0.1:$tansu_port
FOOTPRINT_REDIS_URL=redis://127.0.0.1:$REDIS_PORT
FOOTPRINT_MYSQL_URL=mysql://root@127.0.0.1:$MYSQL_PORT
EOF
mv -f "$tmp_env" "$ENV_FILE"
log "all services up; env in $ENV_FILE"
print_env
