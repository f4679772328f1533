#!/usr/bin/env bash
# Install (or reuse) the three non-Java clients of e2e/interop/clients/run.sh:
#
#   e2e/interop/clients/setup.sh [kafkajs] [kafka-go] [kcat]     (default: all three)
#
#   kcat      Debian's kcat package (librdkafka 2.x), installed with apt-get when `kcat` is not
#             on PATH (root, or sudo), like e2e/setup-deps.sh: install, or update then install
#   kafkajs   `npm ci` of kafkajs/package-lock.json into $CACHE/clients/kafkajs-<hash>, npm's
#             cache in $CACHE/npm; <hash> is the sha256 of package.json and package-lock.json,
#             and a stamp written after a complete install makes the next run skip npm
#   kafka-go  `go build` of kafka-go/ (go.mod, go.sum, main.go) into
#             $CACHE/clients/kafka-go-check-<hash> (sha256 of those three files), modules in
#             $CACHE/go/mod, build cache in $CACHE/go/build; an existing binary is reused as is
#
# CACHE="${STRAND_CACHE:-$HOME/.cache/strand}". With everything cached nothing is downloaded
# and neither npm nor go runs. Prints shell assignments on stdout for run.sh to eval:
#   KCAT=...  KAFKAJS_NODE_PATH=...  KAFKA_GO_BIN=...
# Env: NODE (default node), NPM (default npm), GO (default go on PATH, else /usr/local/go/bin/go).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${STRAND_CACHE:-$HOME/.cache/strand}"
NODE="${NODE:-node}"
NPM="${NPM:-npm}"

die() { echo "clients/setup.sh: error: $*" >&2; exit 1; }
log() { echo "clients/setup.sh: $*" >&2; }

sha() { cat "$@" | sha256sum | cut -c1-16; }

setup_kcat() {
    if ! command -v kcat >/dev/null; then
        log "installing Debian's kcat package"
        local sudo=()
        [[ "$(id -u)" -ne 0 ]] && sudo=(sudo)
        export DEBIAN_FRONTEND=noninteractive
        "${sudo[@]}" apt-get install -y kcat >/dev/null 2>&1 || {
            "${sudo[@]}" apt-get update >/dev/null || die "apt-get update failed"
            "${sudo[@]}" apt-get install -y kcat >/dev/null || die "apt-get install kcat failed"
        }
        command -v kcat >/dev/null || die "kcat still not on PATH after apt-get install kcat"
    fi
    # librdkafka 2.x: the version line reads "... librdkafka 2.0.2 builtin.features=...".
    local v
    v="$(kcat -V 2>&1 | grep -oE 'librdkafka [0-9][0-9.]*' | head -n1 || true)"
    [[ "$v" =~ ^librdkafka\ [2-9]\. ]] || log "warning: kcat reports '${v:-no librdkafka version}', expected librdkafka 2.x"
    printf 'KCAT=%q\n' "$(command -v kcat)"
}

setup_kafkajs() {
    command -v "$NODE" >/dev/null || die "'$NODE' not found (kafkajs needs Node.js 14+)"
    local src="$HERE/kafkajs" dir
    dir="$CACHE/clients/kafkajs-$(sha "$src/package.json" "$src/package-lock.json")"
    if [[ ! -f "$dir/.strand-complete" || ! -f "$dir/node_modules/kafkajs/package.json" ]]; then
        command -v "$NPM" >/dev/null || die "'$NPM' not found (needed once to install kafkajs)"
        log "npm ci of $src/package-lock.json into $dir"
        rm -rf "$dir"
        mkdir -p "$dir"
        cp "$src/package.json" "$src/package-lock.json" "$dir/"
        (cd "$dir" && "$NPM" ci --cache "$CACHE/npm" --prefer-offline --no-audit --no-fund \
            --ignore-scripts --loglevel=error) >"$dir/npm.log" 2>&1 \
            || { cat "$dir/npm.log" >&2; die "npm ci failed (log above)"; }
        touch "$dir/.strand-complete"
    fi
    local v
    v="$("$NODE" -p "require('$dir/node_modules/kafkajs/package.json').version")" || die "kafkajs not loadable from $dir"
    log "kafkajs $v ($("$NODE" --version)) in $dir"
    printf 'KAFKAJS_NODE_PATH=%q\n' "$dir/node_modules"
}

go_bin() {
    if [[ -n "${GO:-}" ]]; then echo "$GO"
    elif command -v go >/dev/null; then command -v go
    elif [[ -x /usr/local/go/bin/go ]]; then echo /usr/local/go/bin/go
    else die "no Go toolchain (set GO=/path/to/go)"
    fi
}

setup_kafka_go() {
    local src="$HERE/kafka-go" bin
    bin="$CACHE/clients/kafka-go-check-$(sha "$src/go.mod" "$src/go.sum" "$src/main.go")"
    if [[ ! -x "$bin" ]]; then
        local go tmp
        go="$(go_bin)"
        mkdir -p "$CACHE/clients"
        tmp="$(mktemp -d "$CACHE/clients/.build.XXXXXX")"
        log "building $src with $("$go" version) into $bin"
        # -mod=readonly: go.sum is the pin, a build never rewrites it. GOFLAGS is replaced, not
        # extended, so the caller's flags cannot change what is cached. Built in a temporary dir
        # and moved into place whole: an interrupted build never leaves a binary taken as cached.
        if ! (cd "$src" && GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" GOWORK=off \
            CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-trimpath -mod=readonly -modcacherw -buildvcs=false" \
            "$go" build -ldflags="-s -w" -o "$tmp/kafka-go-check" .) >"$tmp/build.log" 2>&1; then
            cat "$tmp/build.log" >&2
            rm -rf "$tmp"
            die "go build of $src failed (log above)"
        fi
        mv -f "$tmp/kafka-go-check" "$bin"
        rm -rf "$tmp"
    fi
    log "kafka-go $(grep -oE 'segmentio/kafka-go v[0-9.]+' "$src/go.mod" | cut -d' ' -f2) check binary $bin"
    printf 'KAFKA_GO_BIN=%q\n' "$bin"
}

main() {
    local want=("$@")
    [[ ${#want[@]} -gt 0 ]] || want=(kafkajs kafka-go kcat)
    local c
    for c in "${want[@]}"; do
        case "$c" in
            kcat) setup_kcat ;;
            kafkajs) setup_kafkajs ;;
            kafka-go) setup_kafka_go ;;
            *) die "unknown client '$c' (kafkajs, kafka-go, kcat)" ;;
        esac
    done
}

main "$@"
