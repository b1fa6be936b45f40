#!/usr/bin/env bash
# Servers and validators the system tests use: Debian's redis-server and postgresql (started on loopback by the
# tests themselves), docker-compose (to validate docker-compose.yml offline), and chromium with chromium-driver
# (headless, for the dashboard's browser tests). Installed when missing and when this machine can (apt-get, as root
# or with sudo); otherwise the tests that need them skip and say why.
set -u
missing=()
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
command -v pg_createcluster >/dev/null 2>&1 || missing+=(postgresql)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: no apt-get; tests needing ${missing[*]} will be skipped" >&2
    exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
    if sudo -n true 2>/dev/null; then sudo="sudo -n"; else
        echo "system-deps: not root and no sudo; tests needing ${missing[*]} will be skipped" >&2
        exit 0
    fi
fi
echo "system-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/dev/null; then
    echo "system-deps: could not install ${missing[*]}; tests needing them will be skipped" >&2
fi
exit 0
