#!/usr/bin/env bash
# Real Elasticsearch and OpenSearch servers for the tests, from Maven Central (cached in ~/.m2).
#
#   bash .ci/servers.sh start [elasticsearch|opensearch|opensearch-ml|all] [--port N] [--dir DIR] [--keep-data]
#   bash .ci/servers.sh stop  [elasticsearch|opensearch|opensearch-ml|all] [--dir DIR]
#   bash .ci/servers.sh start|stop opensearch-cluster [--node N] [--keep-data]
#   bash .ci/servers.sh status
#
# opensearch-cluster: three OpenSearch 3.6.0 nodes on loopback (HTTP 9211-9213, transport 9311-9313, data
# under /tmp/esrerank-servers/opensearch-cluster/node-N) that discover each other; --node N (1-3) starts or
# stops one node, keeping its data so it rejoins (a whole-cluster start wipes the data unless --keep-data).
# Heap 512m a node (1.5 GB for the three), or $ESRERANK_SERVER_HEAP.
#
# Defaults: Elasticsearch 8.19.21 on 127.0.0.1:9200, OpenSearch 3.6.0 on 127.0.0.1:9201 (the BM25 tests),
# OpenSearch 2.19.1 with ML Commons and neural-search on 127.0.0.1:9202 (reranking inside the engine:
# the newest release whose ML plugin is on Maven Central); data/logs/pid under /tmp/esrerank-servers/<name>.
# Heap: 512m (1g for opensearch-ml), or $ESRERANK_SERVER_HEAP.
# The servers refuse to run as root, so they run as the system user 'esrerank' (created if missing). They
# bundle no JDK: 8.19/3.6 run on the newest JDK >= 21 under /usr/lib/jvm; 2.19.1 needs the Java security
# manager, gone from Java 24 on, so it runs on the newest JDK from 17 to 23.
#
# Elasticsearch runs with esrerank's rescorer plugin (plugins/elasticsearch, built here with Maven when its
# sources change, installed with elasticsearch-plugin). Its node settings point it at an esrerank service on
# 127.0.0.1:$ESRERANK_RESCORE_PORT (default 9290; the tests start one there), with the API key
# $ESRERANK_RESCORE_API_KEY (default esrerank-ci-key) in the node's keystore, a 10 s answer timeout and
# batches of 16 documents.
set -euo pipefail

ES_VERSION=8.19.21   # newest org.elasticsearch.distribution.integ-test-zip on Maven Central
OS_VERSION=3.6.0     # newest org.opensearch.distribution.integ-test-zip on Maven Central
OS_ML_VERSION=2.19.1 # newest OpenSearch whose opensearch-ml-plugin zip is on Maven Central
DIST_ROOT="${ESRERANK_SERVER_ROOT:-$HOME/.cache/esrerank-ci/servers}"
RUN_ROOT="${ESRERANK_SERVER_RUN:-/tmp/esrerank-servers}"
HEALTH_TIMEOUT_S="${ESRERANK_SERVER_TIMEOUT:-180}"
SERVER_USER=esrerank
REPO_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RESCORE_PORT="${ESRERANK_RESCORE_PORT:-9290}"
RESCORE_API_KEY="${ESRERANK_RESCORE_API_KEY:-esrerank-ci-key}"

log() { echo "[servers] $*" >&2; }

find_java() {  # newest JDK under /usr/lib/jvm with min <= major <= max
    local min=$1 max=$2 best="" best_major=0 java major
    for java in /usr/lib/jvm/*/bin/java; do
        [ -x "$java" ] || continue
        major=$("$java" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
        if [ -n "$major" ] && [ "$major" -ge "$min" ] && [ "$major" -le "$max" ] && [ "$major" -gt "$best_major" ]; then
            best="${java%/bin/java}"; best_major=$major
        fi
    done
    [ -n "$best" ] || { log "no JDK from $min to $max under /usr/lib/jvm: apt-get install openjdk-$min-jdk-headless"; exit 1; }
    echo "$best"
}

maven_file() {  # group:artifact:version[:type] -> path in ~/.m2 (downloaded once)
    local group artifact version type path
    IFS=: read -r group artifact version type <<<"$1"
    type=${type:-jar}
    path="$HOME/.m2/repository/${group//.//}/$artifact/$version/$artifact-$version.$type"
    if [ ! -f "$path" ]; then
        log "downloading $1 from Maven Central"
        mvn -q dependency:get -Dartifact="$1" -Dtransitive=false >&2
    fi
    echo "$path"
}

module_descriptor() {  # name classname extended-plugins -> plugin-descriptor.properties text
    printf 'description=%s\nversion=%s\nname=%s\nclassname=%s\njava.version=11\nopensearch.version=%s\n' \
        "$1 module (assembled by esrerank from Maven Central jars)" "$OS_ML_VERSION" "$1" "$2" "$OS_ML_VERSION"
    printf 'custom.foldername=\nextended.plugins=%s\nhas.native.controller=false\n' "$3"
}

ml_distribution() {  # OpenSearch 2.19.1 + painless/analysis-common modules + ML Commons, k-NN, neural-search
    local folder="$DIST_ROOT/opensearch-ml-$OS_ML_VERSION" java zip jar plugin
    if [ ! -f "$folder/.esrerank-ready" ]; then
        java=$(find_java 17 23)
        zip=$(maven_file "org.opensearch.distribution.integ-test-zip:opensearch:$OS_ML_VERSION:zip")
        rm -rf "$folder.tmp" "$folder" && mkdir -p "$folder.tmp"
        unzip -q "$zip" -d "$folder.tmp"
        mv "$folder.tmp/opensearch-$OS_ML_VERSION" "$folder" && rm -rf "$folder.tmp"
        # The integ-test zip has only transport-netty4. k-NN extends lang-painless, and the english
        # analyzer lives in analysis-common: both are assembled from their jars on Maven Central.
        mkdir -p "$folder/modules/lang-painless" "$folder/modules/analysis-common"
        for jar in org.opensearch.plugin:lang-painless:$OS_ML_VERSION \
                   org.opensearch.plugin:opensearch-scripting-painless-spi:$OS_ML_VERSION \
                   org.antlr:antlr4-runtime:4.13.1 org.ow2.asm:asm:9.7 org.ow2.asm:asm-analysis:9.7 \
                   org.ow2.asm:asm-commons:9.7 org.ow2.asm:asm-tree:9.7 org.ow2.asm:asm-util:9.7; do
            cp "$(maven_file "$jar")" "$folder/modules/lang-painless/"
        done
        module_descriptor lang-painless org.opensearch.painless.PainlessPlugin "" \
            >"$folder/modules/lang-painless/plugin-descriptor.properties"
        printf 'grant {\n  permission java.lang.RuntimePermission "createClassLoader";\n  permission java.lang.RuntimePermission "getClassLoader";\n};\n' \
            >"$folder/modules/lang-painless/plugin-security.policy"
        cp "$(maven_file "org.opensearch.plugin:analysis-common:$OS_ML_VERSION")" "$folder/modules/analysis-common/"
        module_descriptor analysis-common org.opensearch.analysis.common.CommonAnalysisPlugin lang-painless \
            >"$folder/modules/analysis-common/plugin-descriptor.properties"
        # dependency order: ml extends job-scheduler, neural-search extends k-NN
        for plugin in opensearch-job-scheduler opensearch-ml-plugin opensearch-knn neural-search; do
            zip=$(maven_file "org.opensearch.plugin:$plugin:$OS_ML_VERSION.0:zip")
            log "installing $plugin into $folder"
            OPENSEARCH_JAVA_HOME=$java "$folder/bin/opensearch-plugin" install --batch "file://$zip" >&2
        done
        touch "$folder/.esrerank-ready"
    fi
    echo "$folder"
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
    echo "$folder"
}

rescore_plugin() {  # home java: build plugins/elasticsearch when its sources changed and install it into home
    local home=$1 java=$2 source="$REPO_ROOT/plugins/elasticsearch" zip installed
    zip="$source/target/esrerank-rescore-$ES_VERSION.zip"
    if [ ! -f "$zip" ] || [ -n "$(find "$source/pom.xml" "$source/src" -newer "$zip" -type f | head -1)" ]; then
        log "building the esrerank rescorer plugin for Elasticsearch $ES_VERSION"
        JAVA_HOME=$java mvn -q -B -f "$source/pom.xml" -Delasticsearch.version="$ES_VERSION" package >&2
    fi
    installed="$home/plugins/esrerank-rescore"
    if [ -d "$installed" ] && cmp -s "$zip" "$home/esrerank-rescore.installed.zip"; then return 0; fi
    [ -d "$installed" ] && ES_JAVA_HOME=$java "$home/bin/elasticsearch-plugin" remove esrerank-rescore >&2
    log "installing the esrerank rescorer plugin into $home"
    ES_JAVA_HOME=$java "$home/bin/elasticsearch-plugin" install --batch "file://$zip" >&2
    cp "$zip" "$home/esrerank-rescore.installed.zip"
}

rescore_keystore() {  # home java config-dir: the node's keystore, holding the service's API key
    local home=$1 java=$2 config=$3
    ES_JAVA_HOME=$java ES_PATH_CONF=$config "$home/bin/elasticsearch-keystore" create >/dev/null
    printf '%s' "$RESCORE_API_KEY" | ES_JAVA_HOME=$java ES_PATH_CONF=$config \
        "$home/bin/elasticsearch-keystore" add --stdin --force esrerank.service.api_key >/dev/null
}

readable() {  # the server user must read a distribution inside root's home
    local path=$1
    while [ "$path" != "/" ]; do chmod o+rx "$path" 2>/dev/null || true; path=$(dirname "$path"); done
    chmod -R o+rX "$1"
}

CLUSTER_NODES=3
CLUSTER_HTTP_PORT=9211  # node N answers on 9210 + N, transport on 9310 + N
cluster_settings() {  # the -E options that make node N one of the three
    local seeds="" names="" n
    for n in $(seq "$CLUSTER_NODES"); do
        seeds+="${seeds:+,}127.0.0.1:$((CLUSTER_HTTP_PORT + 99 + n))"; names+="${names:+,}node-$n"
    done
    echo "-E cluster.name=esrerank-cluster -E node.name=node-$1 -E discovery.seed_hosts=$seeds"
    echo "-E cluster.initial_cluster_manager_nodes=$names"
}

disk_settings() {  # every node, single or clustered
    # The default watermarks are shares of the whole shared disk of a development machine: at 85% used
    # replicas are refused, at 90% even a new index's primary (a CI run once waited on a red index with
    # 25 GB free): ask for free space in bytes instead.
    echo "-E cluster.routing.allocation.disk.watermark.low=2gb -E cluster.routing.allocation.disk.watermark.high=1gb"
    echo "-E cluster.routing.allocation.disk.watermark.flood_stage=512mb"
}

start_one() {  # name port dir [cluster node number]
    launch_one "$@" && wait_healthy "$1" "$2" "wait_for_status=yellow" "$3"
}

launch_one() {
    local name=$1 port=$2 dir=$3 node=${4:-} engine=$1 home java prefix heap="${ESRERANK_SERVER_HEAP:-512m}" topology
    if curl -sf "http://127.0.0.1:$port/_cluster/health" >/dev/null 2>&1; then
        log "$name already answers on port $port"; return 0
    fi
    if [ -n "$node" ]; then
        engine=opensearch; home=$(distribution opensearch); java=$(find_java 21 99)
        topology=$(cluster_settings "$node")
    elif [ "$name" = opensearch-ml ]; then
        engine=opensearch; home=$(ml_distribution); java=$(find_java 17 23); heap="${ESRERANK_SERVER_HEAP:-1g}"
    else
        home=$(distribution "$engine"); java=$(find_java 21 99)
    fi
    [ -n "$node" ] || topology="-E discovery.type=single-node"
    if [ "$engine" = elasticsearch ]; then rescore_plugin "$home" "$java"; fi
    readable "$home"
    id "$SERVER_USER" >/dev/null 2>&1 || useradd --system --shell /usr/sbin/nologin "$SERVER_USER"
    if [ "$keep_data" = 1 ]; then rm -rf "$dir/config"; else rm -rf "$dir/data" "$dir/logs" "$dir/config"; fi
    mkdir -p "$dir/data" "$dir/logs"
    cp -r "$home/config" "$dir/config"
    # jvm.options writes GC logs relative to the working directory; point them at our logs folder
    sed -i "s#=logs/#=$dir/logs/#g; s#file=logs/#file=$dir/logs/#g" "$dir/config/jvm.options"
    if [ "$name" = opensearch-ml ]; then
        # ML Commons on a single test node: run models on data nodes, and call a reranking service on
        # loopback (a private address, refused unless allowed; only these URLs are trusted).
        cat >>"$dir/config/opensearch.yml" <<'YAML'
plugins.ml_commons.only_run_on_ml_node: false
plugins.ml_commons.connector.private_ip_enabled: true
plugins.ml_commons.trusted_connector_endpoints_regex: ["^https?://(127\\.0\\.0\\.1|localhost)(:[0-9]+)?/.*$"]
plugins.ml_commons.native_memory_threshold: 100
plugins.ml_commons.jvm_heap_memory_threshold: 100
YAML
    fi
    local extra=""
    if [ "$engine" = elasticsearch ]; then
        rescore_keystore "$home" "$java" "$dir/config"
        extra="-E xpack.security.enabled=false -E esrerank.service.url=http://127.0.0.1:$RESCORE_PORT"
        # batches of 16: a window of 20 goes as two requests, so the tests cover the plugin's batching
        extra+=" -E esrerank.service.timeout=10s -E esrerank.service.connect_timeout=1s -E esrerank.service.batch_size=16"
    fi
    chown -R "$SERVER_USER" "$dir"
    if [ "$engine" = elasticsearch ]; then prefix=ES; else prefix=OPENSEARCH; fi
    log "starting $name on 127.0.0.1:$port (java $java, data $dir)"
    (cd "$dir" && runuser -u "$SERVER_USER" -- env "${prefix}_JAVA_HOME=$java" "${prefix}_JAVA_OPTS=-Xms$heap -Xmx$heap" \
        "${prefix}_PATH_CONF=$dir/config" "$home/bin/$engine" -d -p "$dir/pid" \
        $topology $(disk_settings) -E network.host=127.0.0.1 -E http.port="$port" \
        -E transport.port="$((port + 100))" -E path.data="$dir/data" -E path.logs="$dir/logs" \
        $extra >"$dir/stdout.log" 2>&1) || {
        log "$name failed to start:"; tail -30 "$dir/stdout.log" >&2; exit 1; }
}

wait_healthy() {  # name port health-query: wait until the node answers the cluster health query
    local name=$1 port=$2 query=$3 dir=${4:-$RUN_ROOT/$1} waited=0
    until curl -sf "http://127.0.0.1:$port/_cluster/health?$query&timeout=5s" >/dev/null 2>&1; do
        sleep 2; waited=$((waited + 2))
        if [ "$waited" -ge "$HEALTH_TIMEOUT_S" ]; then
            log "$name not healthy after ${HEALTH_TIMEOUT_S}s; last log lines:"
            tail -30 "$dir/logs/"*.log "$dir/stdout.log" >&2 2>/dev/null || true
            exit 1
        fi
    done
    log "$name healthy on port $port after ${waited}s ($query)"
}

cluster() {  # start|stop [node]: the three-node OpenSearch cluster, or one of its nodes
    local action=$1 only=$2 root="${dir:-$RUN_ROOT/opensearch-cluster}" n nodes
    if [ -n "$only" ]; then
        [[ "$only" =~ ^[1-9]$ ]] && [ "$only" -le "$CLUSTER_NODES" ] || { log "--node takes 1..$CLUSTER_NODES"; exit 2; }
        nodes=$only
    else
        nodes=$(seq "$CLUSTER_NODES")
    fi
    for n in $nodes; do
        if [ "$action" = stop ]; then stop_one "opensearch-cluster node-$n" "$root/node-$n"; continue; fi
        # a node started alone rejoins with its data; a fresh cluster starts from nothing unless told
        ( [ -n "$only" ] && keep_data=1; launch_one "opensearch-cluster-node-$n" "$((CLUSTER_HTTP_PORT + n - 1))" "$root/node-$n" "$n" )
    done
    if [ "$action" = start ]; then
        for n in $nodes; do
            wait_healthy "opensearch-cluster node-$n" "$((CLUSTER_HTTP_PORT + n - 1))" \
                "wait_for_nodes=$CLUSTER_NODES&wait_for_status=yellow" "$root/node-$n"
        done
    fi
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
node=""
while [ $# -gt 0 ]; do
    case $1 in
        --keep-data) keep_data=1; shift ;;
        --node) node=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        --dir) dir=$2; shift 2 ;;
        *) log "unknown option $1"; exit 2 ;;
    esac
done
if [ "$target" = opensearch-cluster ]; then
    case $action in
        start|stop) cluster "$action" "$node" ;;
        status) curl -s "http://127.0.0.1:$CLUSTER_HTTP_PORT/_cat/nodes?v" || echo "opensearch-cluster: node-1 not answering" ;;
        *) log "usage: $0 start|stop|status opensearch-cluster [--node N]"; exit 2 ;;
    esac
    exit 0
fi
[ -z "$node" ] || { log "--node applies to opensearch-cluster only"; exit 2; }
engines=(elasticsearch opensearch opensearch-ml)
[ "$target" = all ] || engines=("$target")

for engine in "${engines[@]}"; do
    case $engine in
        elasticsearch) default_port=9200 ;;
        opensearch) default_port=9201 ;;
        opensearch-ml) default_port=9202 ;;
        *) log "unknown server $engine (elasticsearch, opensearch, opensearch-ml, opensearch-cluster or all)"; exit 2 ;;
    esac
    case $action in
        start) start_one "$engine" "${port:-$default_port}" "${dir:-$RUN_ROOT/$engine}" ;;
        stop) stop_one "$engine" "${dir:-$RUN_ROOT/$engine}" ;;
        status) curl -s "http://127.0.0.1:${port:-$default_port}/_cluster/health" || echo "$engine: not running" ;;
        *) log "usage: $0 start|stop|status [elasticsearch|opensearch|opensearch-ml|all] [--port N] [--dir DIR]"; exit 2 ;;
    esac
done
