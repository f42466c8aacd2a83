#!/usr/bin/env bash
# Real Elasticsearch and OpenSearch servers for the tests, from Maven Central (cached in ~/.m2).
#
#   bash .ci/servers.sh start [elasticsearch|opensearch|all] [--port N] [--dir DIR] [--keep-data]
#   bash .ci/servers.sh stop  [elasticsearch|opensearch|all] [--dir DIR]
#   bash .ci/servers.sh status
#
# Defaults: Elasticsearch on 127.0.0.1:9200, OpenSearch on 127.0.0.1:9201, data/logs/pid under
# /tmp/esrerank-servers/<engine>. The servers refuse to run as root, so they run as the system user
# 'esrerank' (created if missing). They bundle no JDK: the newest JDK >= 21 under /usr/lib/jvm is used.
set -euo pipefail

ES_VERSION=8.19.21   # newest org.elasticsearch.distribution.integ-test-zip on Maven Central
OS_VERSION=3.6.0     # newest org.opensearch.distribution.integ-test-zip on Maven Central
DIST_ROOT="${ESRERANK_SERVER_ROOT:-$HOME/.cache/esrerank-ci/servers}"
RUN_ROOT="${ESRERANK_SERVER_RUN:-/tmp/esrerank-servers}"
HEALTH_TIMEOUT_S="${ESRERANK_SERVER_TIMEOUT:-180}"
SERVER_USER=esrerank

log() { echo "[servers] $*" >&2; }

find_java() {
    local best="" best_major=0 java major
    for java in /usr/lib/jvm/*/bin/java; do
        [ -x "$java" ] || continue
        major=$("$java" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
        if [ -n "$major" ] && [ "$major" -ge 21 ] && [ "$major" -gt "$best_major" ]; then
            best="${java%/bin/java}"; best_major=$major
        fi
    done
    [ -n "$best" ] || { log "no JDK >= 21 under /usr/lib/jvm (OpenSearch 3 needs one): apt-get install openjdk-21-jdk-headless"; exit 1; }
    echo "$best"
}

distribution() {  # engine -> unpacked folder (downloaded and unzipped once)
    local engine=$1 group version folder zip
    if [ "$engine" = elasticsearch ]; then group=org.elasticsearch; version=$ES_VERSION
    else group=org.opensearch; version=$OS_VERSION; fi
    folder="$DIST_ROOT/$engine-$version"
    if [ ! -x "$folder/bin/$engine" ]; then
        zip="$HOME/.m2/repository/${group//.//}/distribution/integ-test-zip/$engine/$version/$engine-$version.zip"
        if [ ! -f "$zip" ]; then
            log "downloading $engine $version from Maven Central"
            mvn -q dependency:get -Dartifact="$group.distribution.integ-test-zip:$engine:$version:zip" -Dtransitive=false >&2
        fi
        mkdir -p "$DIST_ROOT"
        rm -rf "$folder.tmp" && mkdir -p "$folder.tmp"
        unzip -q "$zip" -d "$folder.tmp"
        mv "$folder.tmp/$engine-$version" "$folder" && rm -rf "$folder.tmp"
    fi
    # the server user must read the distribution inside root's home
    local path="$folder"
    while [ "$path" != "/" ]; do chmod o+rx "$path" 2>/dev/null || true; path=$(dirname "$path"); done
    chmod -R o+rX "$folder"
    echo "$folder"
}

start_one() {
    local engine=$1 port=$2 dir=$3 home java prefix
    if curl -sf "http://127.0.0.1:$port/_cluster/health" >/dev/null 2>&1; then
        log "$engine already answers on port $port"; return 0
    fi
    home=$(distribution "$engine")
    java=$(find_java)
    id "$SERVER_USER" >/dev/null 2>&1 || useradd --system --shell /usr/sbin/nologin "$SERVER_USER"
    if [ "$keep_data" = 1 ]; then rm -rf "$dir/config"; else rm -rf "$dir/data" "$dir/logs" "$dir/config"; fi
    mkdir -p "$dir/data" "$dir/logs"
    cp -r "$home/config" "$dir/config"
    # jvm.options writes GC logs relative to the working directory; point them at our logs folder
    sed -i "s#=logs/#=$dir/logs/#g; s#file=logs/#file=$dir/logs/#g" "$dir/config/jvm.options"
    chown -R "$SERVER_USER" "$dir"
    if [ "$engine" = elasticsearch ]; then prefix=ES; else prefix=OPENSEARCH; fi
    log "starting $engine on 127.0.0.1:$port (java $java, data $dir)"
    (cd "$dir" && runuser -u "$SERVER_USER" -- env "${prefix}_JAVA_HOME=$java" "${prefix}_JAVA_OPTS=-Xms512m -Xmx512m" \
        "${prefix}_PATH_CONF=$dir/config" "$home/bin/$engine" -d -p "$dir/pid" \
        -E discovery.type=single-node -E network.host=127.0.0.1 -E http.port="$port" \
        -E transport.port="$((port + 100))" -E path.data="$dir/data" -E path.logs="$dir/logs" \
        $([ "$engine" = elasticsearch ] && echo "-E xpack.security.enabled=false") >"$dir/stdout.log" 2>&1) || {
        log "$engine failed to start:"; tail -30 "$dir/stdout.log" >&2; exit 1; }
    local waited=0
    until curl -sf "http://127.0.0.1:$port/_cluster/health?wait_for_status=yellow&timeout=5s" >/dev/null 2>&1; do
        sleep 2; waited=$((waited + 2))
        if [ "$waited" -ge "$HEALTH_TIMEOUT_S" ]; then
            log "$engine not healthy after ${HEALTH_TIMEOUT_S}s; last log lines:"
            tail -30 "$dir/logs/"*.log "$dir/stdout.log" >&2 2>/dev/null || true
            exit 1
        fi
    done
    log "$engine healthy on port $port after ${waited}s (pid $(cat "$dir/pid"))"
}

stop_one() {
    local engine=$1 dir=$2 pid
    [ -f "$dir/pid" ] || { log "$engine: no pid file in $dir"; return 0; }
    pid=$(cat "$dir/pid")
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$pid" 2>/dev/null || true
        log "$engine (pid $pid) stopped"
    fi
    rm -f "$dir/pid"
}

action=${1:-}; shift || true
target=all
if [ $# -gt 0 ] && [[ "$1" != --* ]]; then target=$1; shift; fi
port=""; dir=""; keep_data=0
while [ $# -gt 0 ]; do
    case $1 in
        --keep-data) keep_data=1; shift ;;
        --port) port=$2; shift 2 ;;
        --dir) dir=$2; shift 2 ;;
        *) log "unknown option $1"; exit 2 ;;
    esac
done
engines=(elasticsearch opensearch)
[ "$target" = all ] || engines=("$target")

for engine in "${engines[@]}"; do
    default_port=9200; [ "$engine" = opensearch ] && default_port=9201
    case $action in
        start) start_one "$engine" "${port:-$default_port}" "${dir:-$RUN_ROOT/$engine}" ;;
        stop) stop_one "$engine" "${dir:-$RUN_ROOT/$engine}" ;;
        status) curl -s "http://127.0.0.1:${port:-$default_port}/_cluster/health" || echo "$engine: not running" ;;
        *) log "usage: $0 start|stop|status [elasticsearch|opensearch|all] [--port N] [--dir DIR]"; exit 2 ;;
    esac
done
