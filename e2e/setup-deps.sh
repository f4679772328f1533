#!/usr/bin/env bash
# Installs the system packages the tests need, once: cmake and curl headers to build
# librdkafka from the rdkafka crate's bundled source, and iptables for the partition test.
# Java, Maven and Python come with the machine; their artifacts are fetched into $STRAND_CACHE by the interop scripts.
set -euo pipefail

missing=()
command -v cmake >/dev/null || missing+=(cmake)
[ -e /usr/include/x86_64-linux-gnu/curl/curl.h ] || [ -e /usr/include/curl/curl.h ] || missing+=(libcurl4-openssl-dev)
command -v ip >/dev/null || missing+=(iproute2)
# The network-partition fault test cuts a broker off with iptables.
command -v iptables >/dev/null || missing+=(iptables)
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup-deps: installing ${missing[*]}" >&2
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get install -y "${missing[@]}" >/dev/null 2>&1 || {
        $SUDO apt-get update >/dev/null
        $SUDO apt-get install -y "${missing[@]}" >/dev/null
    }
fi
for tool in cargo java mvn python3; do
    command -v "$tool" >/dev/null || { echo "setup-deps: '$tool' is required but not installed" >&2; exit 1; }
done
