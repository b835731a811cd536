#!/usr/bin/env bash
# Writes cli/worker-hot-functions.txt: the C functions (QuickJS and the C
# library) a `capstan-worker` runs from its start to idle after one
# evaluation, which cli/build.rs asks the linker to place together. See
# README.md here. Needs valgrind and a release build:
#   cargo build --release -p capstan --bins && tools/worker-layout/profile.sh [TARGET/release]
set -euo pipefail
cd "$(dirname "$0")/../.."
release=${1:-${CARGO_TARGET_DIR:-target}/release}
release=$(cd "$release" && pwd)
out=cli/worker-hot-functions.txt
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The node runs the `capstan-worker` beside its own program (symbolic
# links resolved, hence a hard link or a copy): here, the real one under
# callgrind. Callgrind keeps a dozen descriptors for itself and
# refuses a worker's lower RLIMIT_NOFILE unless its own limit is the same
# (32, the worker's), hence the soft limit.
mkdir "$work/bin" "$work/state"
ln "$release/capstan" "$work/bin/capstan" 2>/dev/null || cp "$release/capstan" "$work/bin/capstan"
cat >"$work/bin/capstan-worker" <<WRAPPER
#!/usr/bin/env bash
ulimit -Sn 32
exec valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.%p" "$release/capstan-worker" "\$@"
WRAPPER
chmod +x "$work/bin/capstan-worker"

capstan() { "$work/bin/capstan" --state "$work/state" "$@"; }
capstan start >/dev/null
capstan eval 1 >/dev/null
sleep 3 # the worker prepares its next compartment, then idles
callgrind_control --dump >/dev/null 2>&1
sleep 2
capstan stop >/dev/null

# Every function callgrind saw run ("fn=(id) name" or "cfn=(id) name" the
# first time an id appears), kept if it is a C symbol of the worker.
grep -hE '^c?fn=\([0-9]+\) ' "$work"/callgrind.*.1 |
    sed -E "s/^c?fn=\([0-9]+\) //; s/'[0-9]+$//" | sort -u >"$work/ran"
nm "$release/capstan-worker" | awk '$2 ~ /^[tTwWiI]$/ && $3 !~ /^_(ZN|R)/ { print $3 }' |
    sort -u >"$work/c-symbols"
{
    echo "# The C functions an idle capstan-worker has run (tools/worker-layout)."
    comm -12 "$work/ran" "$work/c-symbols"
} >"$out"
echo "$(($(wc -l <"$out") - 1)) functions in $out"
