#!/bin/sh
# Write the Redis password from $REDIS_PASSWORD into FILE (mode 0600) as a redis.conf
# snippet that deploy/redis/redis.conf includes: the password never appears in argv.
#   REDIS_PASSWORD=... deploy/redis/write-auth.sh /etc/redis/cfn-auth.conf
set -eu
out="${1:?usage: REDIS_PASSWORD=... write-auth.sh FILE}"
[ -n "${REDIS_PASSWORD:-}" ] || { echo "write-auth.sh: set REDIS_PASSWORD" >&2; exit 1; }
case "$REDIS_PASSWORD" in *'"'*|*'\'*) echo "write-auth.sh: no \" or \\ in the password" >&2; exit 1;; esac
umask 077
tmp="$out.tmp.$$"
printf 'requirepass "%s"\n' "$REDIS_PASSWORD" >"$tmp"
mv "$tmp" "$out"
