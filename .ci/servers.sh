#!/usr/bin/env bash
# Real Elasticsearch and OpenSearch servers for the tests, from Maven Central (cached in ~/.m2).
#
#   bash .ci/servers.sh start [elasticsearch|opensearch|opensearch-ml|all] [--port N] [--dir DIR] [--keep-data]
#   bash .ci/servers.sh stop  [elasticsearch|opensearch|opensearch-ml|all] [--dir DIR]
#   bash .ci/servers.sh start|stop opensearch-cluster [--node N] [--keep-data]
#   bash .ci/servers.sh start|stop|status opensearch-secure|elasticsearch-secure|secure [--port N] [--dir DIR]
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
#
# Secured servers (not part of 'all'; 'secure' starts or stops both, side by side), TLS on HTTP and transport:
#   opensearch-secure: OpenSearch 2.19.1 + painless/analysis-common (as opensearch-ml) + the security plugin,
#     no ML, on https://localhost:9203 (transport 9303), JDK 17-23; users from its internal users database.
#   elasticsearch-secure: Elasticsearch 9.1.0 (integ-test zip, x-pack-security; no esrerank plugin, no
#     esrerank.service.* settings) on https://localhost:9204 (transport 9304), JDK >= 21; users and roles of
#     the file realm, and a token of the service account elastic/fleet-server, which may read
#     traces-apm.sampled-* (the .security index cannot be made here: no analysis-common).
#   Users on both: admin (all_access / superuser), reader (read on sec-*), indexer (writes and manages sec-*);
#   roles in one marked block below; passwords $ESRERANK_SECURE_{ADMIN,READER,INDEXER}_PASSWORD or defaults.
#   Each start of a secured server makes new certificates with openssl in /tmp/esrerank-servers/certs (unless
#   a secured server already runs on the current ones): ca.pem/ca.key, node.pem/node.key (PKCS#8, CN and
#   subjectAltName DNS:localhost only, so https://127.0.0.1 fails hostname verification), client.pem/
#   client.key (CN=esrerank-client) and an unrelated other-ca.pem. URLs, users, passwords, the token and the
#   certificate paths go to /tmp/esrerank-servers/secure/credentials.json (root only), one entry a running
#   server (removed by its stop). Password hashes and the token come from the engines' own tools (JVMs,
#   seconds each), cached under ~/.cache/esrerank-ci/servers/secure-cache (root only) by their inputs.
#   With --keep-data, OpenSearch keeps the security index made before (its files are read on a fresh one).
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

# The secured servers (targets opensearch-secure, elasticsearch-secure, secure).
ES_SECURE_VERSION=9.1.0   # integ-test zip with x-pack-security; no esrerank plugin, no esrerank.service.* settings
OS_SECURE_PORT=9203       # OpenSearch $OS_ML_VERSION + security plugin; transport on port + 100
ES_SECURE_PORT=9204
ES9_PLAIN_PORT=9205       # elasticsearch9: Elasticsearch $ES_SECURE_VERSION with security off, the secured one's twin
CERT_DIR="$RUN_ROOT/certs"
SECURE_ROOT="$RUN_ROOT/secure"
NODE_SUBJECT="/O=esrerank/OU=esrerank-ci/CN=localhost"
NODE_DN="CN=localhost,OU=esrerank-ci,O=esrerank"  # NODE_SUBJECT as RFC 2253 writes it (plugins.security.nodes_dn)
CREDENTIALS="$SECURE_ROOT/credentials.json"
SERVICE_ACCOUNT=elastic/fleet-server  # its token reads $SERVICE_TOKEN_PATTERN (GET /_security/service on 9.1.0)
SERVICE_TOKEN_NAME=esrerank-ci
SERVICE_TOKEN_PATTERN="traces-apm.sampled-*"

# ======================= users and roles of the secured servers: refine them HERE ========================
# Passwords: recognisable (the tests look for them in every output), with '#', '@' and '%' in them.
SECURE_USERS=(admin reader indexer registrar)
declare -A SECURE_PASSWORD=(
    [admin]="${ESRERANK_SECURE_ADMIN_PASSWORD:-Adm1n#S3cret-38}"
    [reader]="${ESRERANK_SECURE_READER_PASSWORD:-Rd3r@Only%38}"
    [indexer]="${ESRERANK_SECURE_INDEXER_PASSWORD:-Idx#Wr1te-38}"
    [registrar]="${ESRERANK_SECURE_REGISTRAR_PASSWORD:-Reg1str@r#38}"
)
# The roles hold exactly what docs/engines.md lists for each command (reader: evaluate, search, mine, rerank;
# indexer: index; registrar: register), and the tests run each command with them.
declare -A OS_USER_ROLE=([admin]=all_access [reader]=esrerank_reader [indexer]=esrerank_indexer
                         [registrar]=esrerank_registrar)
declare -A ES_USER_ROLE=([admin]=superuser [reader]=esrerank_reader [indexer]=esrerank_indexer
                         [registrar]=esrerank_registrar)
os_roles_yml() {  # config/opensearch-security/roles.yml (all_access is one of the plugin's static roles)
    cat <<'YAML'
_meta:
  type: "roles"
  config_version: 2
esrerank_reader:
  reserved: false
  cluster_permissions: ["cluster_composite_ops_ro"]
  index_permissions:
    - index_patterns: ["sec-*"]
      allowed_actions: ["read"]
esrerank_indexer:
  reserved: false
  cluster_permissions: ["cluster_composite_ops", "cluster_monitor"]
  index_permissions:
    - index_patterns: ["sec-*"]
      allowed_actions: ["crud", "create_index", "manage"]
esrerank_registrar:
  reserved: false
  cluster_permissions: ["cluster:admin/opensearch/ml/*", "cluster:admin/search/pipeline/*"]
  index_permissions:
    - index_patterns: ["sec-*"]
      allowed_actions: ["read"]
YAML
}
es_roles_yml() {  # config/roles.yml of the file realm (superuser is built in)
    cat <<'YAML'
esrerank_reader:
  indices:
    - names: ["sec-*"]
      privileges: ["read"]
esrerank_indexer:
  cluster: ["monitor"]
  indices:
    - names: ["sec-*"]
      privileges: ["manage", "write", "read"]
esrerank_registrar:
  cluster: ["manage_inference"]
YAML
}
# ==========================================================================================================

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

os219_modules() {  # folder: the lang-painless and analysis-common modules of OpenSearch 2.19.1
    local folder=$1 jar
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
}

os219_distribution() {  # name plugin... -> OpenSearch 2.19.1 + painless/analysis-common + the plugins, in order
    local folder="$DIST_ROOT/$1-$OS_ML_VERSION" java zip plugin
    shift
    if [ ! -f "$folder/.esrerank-ready" ]; then
        java=$(find_java 17 23)
        zip=$(maven_file "org.opensearch.distribution.integ-test-zip:opensearch:$OS_ML_VERSION:zip")
        rm -rf "$folder.tmp" "$folder" && mkdir -p "$folder.tmp"
        unzip -q "$zip" -d "$folder.tmp"
        mv "$folder.tmp/opensearch-$OS_ML_VERSION" "$folder" && rm -rf "$folder.tmp"
        os219_modules "$folder"
        for plugin in "$@"; do
            zip=$(maven_file "org.opensearch.plugin:$plugin:$OS_ML_VERSION.0:zip")
            log "installing $plugin into $folder"
            OPENSEARCH_JAVA_HOME=$java "$folder/bin/opensearch-plugin" install --batch "file://$zip" >&2
        done
        touch "$folder/.esrerank-ready"
    fi
    echo "$folder"
}

ml_distribution() {  # OpenSearch 2.19.1 + ML Commons, k-NN, neural-search (ml extends job-scheduler, neural-search k-NN)
    os219_distribution opensearch-ml opensearch-job-scheduler opensearch-ml-plugin opensearch-knn neural-search
}

secure_os_distribution() {  # OpenSearch 2.19.1 + ML Commons, k-NN, neural-search (register is run) + security
    os219_distribution opensearch-secure-ml opensearch-job-scheduler opensearch-ml-plugin opensearch-knn neural-search \
        opensearch-security
}

distribution() {  # engine [version] -> unpacked folder (downloaded and unzipped once)
    local engine=$1 group version folder zip
    if [ "$engine" = elasticsearch ]; then group=org.elasticsearch; version=${2:-$ES_VERSION}
    else group=org.opensearch; version=${2:-$OS_VERSION}; fi
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
    local name=$1 port=$2 dir=$3 node=${4:-} engine=$1 home java heap="${ESRERANK_SERVER_HEAP:-512m}" topology
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
    prepare_node "$home" "$dir"
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
    run_node "$name" "$engine" "$home" "$java" "$heap" "$dir" "$port" $topology $extra
}

prepare_node() {  # home dir: the server user, fresh data/logs (unless --keep-data) and a copy of home's config
    local home=$1 dir=$2
    readable "$home"
    ensure_server_user
    if [ "$keep_data" = 1 ]; then rm -rf "$dir/config"; else rm -rf "$dir/data" "$dir/logs" "$dir/config"; fi
    mkdir -p "$dir/data" "$dir/logs"
    cp -r "$home/config" "$dir/config"
    # jvm.options writes GC logs relative to the working directory; point them at our logs folder
    sed -i "s#=logs/#=$dir/logs/#g; s#file=logs/#file=$dir/logs/#g" "$dir/config/jvm.options"
}

run_node() {  # name engine home java heap dir port [node options...]: start the node, daemonized, as the server user
    local name=$1 engine=$2 home=$3 java=$4 heap=$5 dir=$6 port=$7 prefix
    shift 7
    chown -R "$SERVER_USER" "$dir"
    if [ "$engine" = elasticsearch ]; then prefix=ES; else prefix=OPENSEARCH; fi
    log "starting $name on 127.0.0.1:$port (java $java, data $dir)"
    (cd "$dir" && runuser -u "$SERVER_USER" -- env "${prefix}_JAVA_HOME=$java" "${prefix}_JAVA_OPTS=-Xms$heap -Xmx$heap" \
        "${prefix}_PATH_CONF=$dir/config" "$home/bin/$engine" -d -p "$dir/pid" \
        $(disk_settings) -E network.host=127.0.0.1 -E http.port="$port" \
        -E transport.port="$((port + 100))" -E path.data="$dir/data" -E path.logs="$dir/logs" \
        "$@" >"$dir/stdout.log" 2>&1) || {
        log "$name failed to start:"; tail -30 "$dir/stdout.log" >&2; exit 1; }
}

wait_healthy() {  # name port health-query [dir [base-url [curl options...]]]: wait until the node answers the query
    local name=$1 port=$2 query=$3 dir=${4:-$RUN_ROOT/$1} base=${5:-http://127.0.0.1:$2} waited=0
    shift $(($# < 5 ? $# : 5))
    until curl -sf "$@" "$base/_cluster/health?$query&timeout=5s" >/dev/null 2>&1; do
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

# ---------------------------------------- the secured servers ----------------------------------------------

ensure_server_user() {
    id "$SERVER_USER" >/dev/null 2>&1 || useradd --system --shell /usr/sbin/nologin "$SERVER_USER"
}

secure_answers() {  # port: something answers HTTPS there (any status, certificate unchecked)
    curl -sk -o /dev/null --max-time 5 "https://localhost:$1/" 2>/dev/null
}

secure_certs() {  # fresh certificates in $CERT_DIR, unless a secured server already runs on the current ones
    local d tmp
    for d in "$RUN_ROOT/opensearch-secure" "$RUN_ROOT/elasticsearch-secure" ${dir:+"$dir"}; do
        if [ -f "$CERT_DIR/ca.pem" ] && [ -f "$d/pid" ] && kill -0 "$(cat "$d/pid")" 2>/dev/null; then
            log "a secured server runs from $d: keeping its certificates in $CERT_DIR"; return 0
        fi
    done
    ensure_server_user
    mkdir -p "$RUN_ROOT"
    tmp=$(mktemp -d "$RUN_ROOT/.certs.XXXXXX")
    cat >"$tmp/openssl.cnf" <<'CNF'
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[node]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF
    (
        cd "$tmp"
        ssl() { openssl "$@" 2>>openssl.log || { cat openssl.log >&2; exit 1; }; }
        # the CA of both servers, and an unrelated one that signed nothing here
        ssl req -x509 -config openssl.cnf -extensions ca -newkey rsa:2048 -noenc -days 365 \
            -subj "/O=esrerank/OU=esrerank-ci/CN=esrerank-ci-ca" -keyout ca.key -out ca.pem
        ssl req -x509 -config openssl.cnf -extensions ca -newkey rsa:2048 -noenc -days 365 \
            -subj "/O=esrerank-other/CN=esrerank-other-ca" -keyout other-ca.key -out other-ca.pem
        # node (HTTP and transport of both servers; SAN localhost only, not 127.0.0.1) and client;
        # 'req -newkey' writes PKCS#8 keys ('BEGIN PRIVATE KEY'), which both engines read
        ssl req -config openssl.cnf -newkey rsa:2048 -noenc -subj "$NODE_SUBJECT" -keyout node.key -out node.csr
        ssl x509 -req -in node.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 365 \
            -extfile openssl.cnf -extensions node -out node.pem
        ssl req -config openssl.cnf -newkey rsa:2048 -noenc -subj "/O=esrerank/CN=esrerank-client" \
            -keyout client.key -out client.csr
        ssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 365 \
            -extfile openssl.cnf -extensions client -out client.pem
        rm -f ./*.csr ./*.srl openssl.cnf openssl.log
        chmod 644 ./*.pem && chmod 600 ca.key other-ca.key
        chgrp "$SERVER_USER" node.key client.key && chmod 640 node.key client.key
    )
    chmod 755 "$tmp"
    rm -rf "$CERT_DIR" && mv "$tmp" "$CERT_DIR"
    rm -f "$CREDENTIALS"  # its entries were for servers on the certificates just replaced
    log "new certificates in $CERT_DIR (CA ca.pem, node.pem for localhost, client.pem, other-ca.pem)"
}

os_security_config() {  # home java dir: TLS, the security plugin's settings and its users and roles
    local home=$1 java=$2 dir=$3 sec="$3/config/opensearch-security" user users hash cache
    mkdir -p "$dir/config/certs" && cp "$CERT_DIR/ca.pem" "$CERT_DIR/node.pem" "$CERT_DIR/node.key" "$dir/config/certs/"
    # The security index is made from the files below on the first start of an empty data folder (a start
    # with --keep-data keeps the index made before). No admin certificate: the REST API serves all_access.
    cat >>"$dir/config/opensearch.yml" <<YAML
plugins.security.ssl.transport.pemcert_filepath: certs/node.pem
plugins.security.ssl.transport.pemkey_filepath: certs/node.key
plugins.security.ssl.transport.pemtrustedcas_filepath: certs/ca.pem
plugins.security.ssl.transport.enforce_hostname_verification: false
plugins.security.ssl.http.enabled: true
plugins.security.ssl.http.pemcert_filepath: certs/node.pem
plugins.security.ssl.http.pemkey_filepath: certs/node.key
plugins.security.ssl.http.pemtrustedcas_filepath: certs/ca.pem
plugins.security.ssl.http.clientauth_mode: OPTIONAL
plugins.security.nodes_dn: ["$NODE_DN"]
plugins.ml_commons.only_run_on_ml_node: false
plugins.ml_commons.connector.private_ip_enabled: true
plugins.ml_commons.trusted_connector_endpoints_regex: ["^https?://(127\\\\.0\\\\.0\\\\.1|localhost)(:[0-9]+)?/.*\$"]
plugins.security.allow_default_init_securityindex: true
plugins.security.audit.type: noop
plugins.security.restapi.roles_enabled: ["all_access"]
YAML
    cat >"$sec/config.yml" <<'YAML'
_meta:
  type: "config"
  config_version: 2
config:
  dynamic:
    http:
      anonymous_auth_enabled: false
    authc:
      clientcert_auth_domain:
        description: "a client certificate signed by the CA: its CN is the user (esrerank-client: a reader)"
        http_enabled: true
        transport_enabled: false
        order: 0
        http_authenticator:
          type: clientcert
          config:
            username_attribute: cn
          challenge: false
        authentication_backend:
          type: noop
      basic_internal_auth_domain:
        http_enabled: true
        transport_enabled: true
        order: 1
        http_authenticator:
          type: basic
          challenge: true
        authentication_backend:
          type: intern
YAML
    {
        printf '_meta:\n  type: "internalusers"\n  config_version: 2\n'
        for user in "${SECURE_USERS[@]}"; do
            # bcrypt by the plugin's hash.sh (a JVM, 1.5 s), once for each password: kept in the cache
            cache=$(secure_cache "opensearch $OS_ML_VERSION $user ${SECURE_PASSWORD[$user]}")
            if [ ! -s "$cache" ]; then
                hash=$(ESRERANK_PASSWORD="${SECURE_PASSWORD[$user]}" OPENSEARCH_JAVA_HOME=$java \
                    bash "$home/plugins/opensearch-security/tools/hash.sh" -env ESRERANK_PASSWORD | tail -n1)
                [[ "$hash" == '$2'* ]] || { log "hash.sh gave no bcrypt hash for $user"; exit 1; }
                echo "$hash" >"$cache.$$" && mv "$cache.$$" "$cache"
            fi
            printf '%s:\n  hash: "%s"\n  reserved: false\n' "$user" "$(cat "$cache")"
        done
    } >"$sec/internal_users.yml"
    os_roles_yml >"$sec/roles.yml"
    {
        printf '_meta:\n  type: "rolesmapping"\n  config_version: 2\n'
        for user in "${SECURE_USERS[@]}"; do
            if [ "$user" = reader ]; then users='"reader", "esrerank-client"'; else users="\"$user\""; fi
            printf '%s:\n  reserved: false\n  users: [%s]\n' "${OS_USER_ROLE[$user]}" "$users"
        done
    } >"$sec/roles_mapping.yml"
    chmod -R go= "$dir/config"  # the plugin warns about every file others may read
}

es_security_config() {  # home java dir: TLS, file realm users and roles, and a service token ($SERVICE_TOKEN)
    local home=$1 java=$2 dir=$3 user out key cache
    mkdir -p "$dir/config/certs" && cp "$CERT_DIR/ca.pem" "$CERT_DIR/node.pem" "$CERT_DIR/node.key" "$dir/config/certs/"
    cat >>"$dir/config/elasticsearch.yml" <<'YAML'
xpack.security.enabled: true
xpack.security.http.ssl.enabled: true
xpack.security.http.ssl.certificate: certs/node.pem
xpack.security.http.ssl.key: certs/node.key
xpack.security.http.ssl.certificate_authorities: [certs/ca.pem]
xpack.security.http.ssl.client_authentication: optional
xpack.security.transport.ssl.enabled: true
xpack.security.transport.ssl.certificate: certs/node.pem
xpack.security.transport.ssl.key: certs/node.key
xpack.security.transport.ssl.certificate_authorities: [certs/ca.pem]
xpack.security.transport.ssl.verification_mode: certificate
xpack.security.authc.realms.file.file1.order: 0
YAML
    # The .security index cannot exist here: its mapping needs analysis-common, which the integ-test zip lacks.
    # Users, roles and the token come from files; stop the node from trying to copy its built-in roles there.
    echo "-Des.queryable_built_in_roles_enabled=false" >"$dir/config/jvm.options.d/esrerank-secure.options"
    es_roles_yml >"$dir/config/roles.yml"
    # The tools below are JVMs of 2.5 s each: their files (and the token) are kept in the cache, keyed by
    # everything that goes into them.
    key="elasticsearch $ES_SECURE_VERSION $SERVICE_ACCOUNT/$SERVICE_TOKEN_NAME"
    for user in "${SECURE_USERS[@]}"; do key+=$'\n'"$user ${ES_USER_ROLE[$user]} ${SECURE_PASSWORD[$user]}"; done
    cache=$(secure_cache "$key")
    if [ ! -s "$cache/token" ]; then
        for user in "${SECURE_USERS[@]}"; do
            ES_JAVA_HOME=$java ES_PATH_CONF="$dir/config" "$home/bin/elasticsearch-users" useradd "$user" \
                -p "${SECURE_PASSWORD[$user]}" -r "${ES_USER_ROLE[$user]}" >/dev/null
        done
        out=$(ES_JAVA_HOME=$java ES_PATH_CONF="$dir/config" "$home/bin/elasticsearch-service-tokens" create \
            "$SERVICE_ACCOUNT" "$SERVICE_TOKEN_NAME")
        sed -n 's/^SERVICE_TOKEN .* = //p' <<<"$out" >"$dir/config/token"
        [ -s "$dir/config/token" ] || { log "elasticsearch-service-tokens printed no token"; exit 1; }
        rm -rf "$cache.$$" && mkdir "$cache.$$"
        mv "$dir/config/token" "$cache.$$/token"
        cp "$dir/config/users" "$dir/config/users_roles" "$dir/config/service_tokens" "$cache.$$/"
        rm -rf "$cache" && mv "$cache.$$" "$cache"
    else
        cp "$cache/users" "$cache/users_roles" "$cache/service_tokens" "$dir/config/"
    fi
    SERVICE_TOKEN=$(cat "$cache/token")
}

secure_cache() {  # text -> a path in the root-only cache of password hashes and tokens, named by the text's digest
    local root="$DIST_ROOT/secure-cache"
    mkdir -p "$root" && chmod 700 "$root"
    echo "$root/$(printf '%s' "$1" | sha256sum | cut -c1-40)"
}

secure_credentials() {  # engine [url]: record engine's URL, users and token in $CREDENTIALS; no url: remove them
    mkdir -p "$SECURE_ROOT" && chmod 700 "$SECURE_ROOT"
    (
        flock 9
        local user passwords=()
        for user in "${SECURE_USERS[@]}"; do passwords+=("PASSWORD_$user=${SECURE_PASSWORD[$user]}"); done
        env "${passwords[@]}" USERS="${SECURE_USERS[*]}" ENGINE=$1 URL=${2:-} CERT_DIR=$CERT_DIR \
        TOKEN=${SERVICE_TOKEN:-} ACCOUNT=$SERVICE_ACCOUNT PATTERN=$SERVICE_TOKEN_PATTERN python3 - "$CREDENTIALS" <<'PY'
import json, os, sys
path, env = sys.argv[1], os.environ
try:
    with open(path) as f:
        data = json.load(f)
except FileNotFoundError:
    data = {}
if env["URL"]:
    certs = env["CERT_DIR"]
    data.update(ca_certs=f"{certs}/ca.pem", other_ca=f"{certs}/other-ca.pem",
                client_cert=f"{certs}/client.pem", client_key=f"{certs}/client.key")
    entry = {"url": env["URL"], "users": {user: env[f"PASSWORD_{user}"] for user in env["USERS"].split()}}
    if env["ENGINE"] == "elasticsearch":
        entry.update(service_account=env["ACCOUNT"], service_token=env["TOKEN"],
                     service_token_readable_pattern=env["PATTERN"])
    data[env["ENGINE"]] = entry
else:
    data.pop(env["ENGINE"], None)
if "opensearch" in data or "elasticsearch" in data:
    with open(path + ".tmp", "w") as f:
        json.dump(data, f, indent=2)
    os.chmod(path + ".tmp", 0o600)
    os.replace(path + ".tmp", path)
elif os.path.exists(path):
    os.remove(path)
PY
    ) 9>"$SECURE_ROOT/.lock"
}

start_secure() {  # name port dir: a secured single node, healthy, its credentials recorded
    local name=$1 port=$2 dir=$3 engine home java heap="${ESRERANK_SERVER_HEAP:-512m}" started=$SECONDS setup
    if [ "$name" = elasticsearch9 ]; then  # the unsecured twin of elasticsearch-secure: what it must equal
        if curl -sf "http://127.0.0.1:$port/_cluster/health" >/dev/null 2>&1; then
            log "$name already answers on port $port"; return 0
        fi
        home=$(distribution elasticsearch "$ES_SECURE_VERSION"); java=$(find_java 21 99)
        prepare_node "$home" "$dir"
        chown -R "$SERVER_USER" "$dir"
        run_node "$name" elasticsearch "$home" "$java" "$heap" "$dir" "$port" -E discovery.type=single-node \
            -E xpack.security.enabled=false
        wait_healthy "$name" "$port" "wait_for_status=yellow" "$dir"
        return 0
    fi
    if secure_answers "$port"; then log "$name already answers on port $port"; return 0; fi
    if [ "$name" = opensearch-secure ]; then
        engine=opensearch; home=$(secure_os_distribution); java=$(find_java 17 23)
        prepare_node "$home" "$dir"
        os_security_config "$home" "$java" "$dir"
    else
        engine=elasticsearch; home=$(distribution elasticsearch "$ES_SECURE_VERSION"); java=$(find_java 21 99)
        prepare_node "$home" "$dir"
        es_security_config "$home" "$java" "$dir"
    fi
    setup=$((SECONDS - started))
    run_node "$name" "$engine" "$home" "$java" "$heap" "$dir" "$port" -E discovery.type=single-node
    wait_healthy "$name" "$port" "wait_for_status=yellow" "$dir" "https://localhost:$port" \
        --cacert "$CERT_DIR/ca.pem" -u "admin:${SECURE_PASSWORD[admin]}"
    secure_credentials "$engine" "https://localhost:$port"
    log "$name ready $((SECONDS - started))s after its start began (${setup}s of that before the JVM)"
}

secure() {  # start|stop|status opensearch-secure|elasticsearch-secure|secure
    local action=$1 names=("$2") name pid pids=() failed=0 p
    if [ "$2" = secure ]; then
        names=(opensearch-secure elasticsearch-secure elasticsearch9)
        [ -z "$port$dir" ] || { log "--port and --dir apply to one server, not to secure"; exit 2; }
    fi
    case $action in
        start)
            secure_certs
            # the two start side by side: each waits mostly for its JVM
            for name in "${names[@]}"; do
                start_secure "$name" "${port:-$(secure_port "$name")}" "${dir:-$RUN_ROOT/$name}" &
                pids+=($!)
            done
            for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
            [ "$failed" = 0 ] || exit 1 ;;
        stop)
            for name in "${names[@]}"; do
                stop_one "$name" "${dir:-$RUN_ROOT/$name}"
                [ "$name" = elasticsearch9 ] || secure_credentials "${name%-secure}"
            done ;;
        status)
            for name in "${names[@]}"; do
                p=${port:-$(secure_port "$name")}
                if [ "$name" = elasticsearch9 ]; then  # the unsecured twin: plain http
                    curl -s "http://127.0.0.1:$p/_cluster/health" && echo || echo "$name: not running"
                    continue
                fi
                curl -s --cacert "$CERT_DIR/ca.pem" -u "admin:${SECURE_PASSWORD[admin]}" \
                    "https://localhost:$p/_cluster/health" && echo || echo "$name: not running"
            done ;;
        *) log "usage: $0 start|stop|status opensearch-secure|elasticsearch-secure|secure [--port N] [--dir DIR]"
           exit 2 ;;
    esac
}

secure_port() {
    case $1 in
        opensearch-secure) echo "$OS_SECURE_PORT" ;;
        elasticsearch9) echo "$ES9_PLAIN_PORT" ;;
        *) echo "$ES_SECURE_PORT" ;;
    esac
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
case $target in
    opensearch-secure|elasticsearch-secure|elasticsearch9|secure) secure "$action" "$target"; exit 0 ;;
esac
engines=(elasticsearch opensearch opensearch-ml)
[ "$target" = all ] || engines=("$target")

for engine in "${engines[@]}"; do
    case $engine in
        elasticsearch) default_port=9200 ;;
        opensearch) default_port=9201 ;;
        opensearch-ml) default_port=9202 ;;
        *) log "unknown server $engine (elasticsearch, opensearch, opensearch-ml, opensearch-cluster, all, or secure ones)"; exit 2 ;;
    esac
    case $action in
        start) start_one "$engine" "${port:-$default_port}" "${dir:-$RUN_ROOT/$engine}" ;;
        stop) stop_one "$engine" "${dir:-$RUN_ROOT/$engine}" ;;
        status) curl -s "http://127.0.0.1:${port:-$default_port}/_cluster/health" || echo "$engine: not running" ;;
        *) log "usage: $0 start|stop|status [elasticsearch|opensearch|opensearch-ml|all] [--port N] [--dir DIR]"; exit 2 ;;
    esac
done
