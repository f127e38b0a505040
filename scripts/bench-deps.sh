#!/bin/sh
# Installs what `make bench` needs when it is missing: wrk and NGINX (Debian/Ubuntu apt),
# oha (crates.io). Prints each command first, so you can run them by hand instead.
# HAProxy is optional: `apt-get install -y haproxy` adds it to the comparison.
set -e

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

run() {
    echo "+ $*"
    "$@"
}

apt_pkgs=""
command -v wrk >/dev/null 2>&1 || apt_pkgs="$apt_pkgs wrk"
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || apt_pkgs="$apt_pkgs nginx-light"

if [ -n "$apt_pkgs" ]; then
    echo "bench: missing:$apt_pkgs; installing with apt-get:"
    if command -v apt-get >/dev/null 2>&1; then
        run $SUDO apt-get update
        # nginx-light is gone from newer Debian releases; fall back to nginx.
        run $SUDO apt-get install -y $apt_pkgs || \
            run $SUDO apt-get install -y $(echo "$apt_pkgs" | sed 's/nginx-light/nginx/')
    else
        echo "bench: no apt-get here; install$apt_pkgs with your package manager" >&2
        exit 1
    fi
fi

if ! command -v oha >/dev/null 2>&1; then
    echo "bench: missing: oha; installing from crates.io:"
    run cargo install oha --locked
fi

echo "bench: wrk, oha and nginx are installed"
