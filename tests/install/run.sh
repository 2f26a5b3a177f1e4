#!/usr/bin/env bash
# Installs modgate from a build tree into a temporary prefix, builds an
# outside module project against it (CMake package and pkg-config), and
# checks that its gateway serves the module.
# usage: run.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1 build=$2
tmp=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
for f in bin/modgate bin/modgate-module include/modgate/module.h include/modgate/gateway.h \
         lib/libmodgate_sdk.a lib/libmodgate_gateway.a lib/pkgconfig/modgate.pc \
         lib/cmake/modgate/modgateConfig.cmake; do
    [ -e "$tmp/prefix/$f" ] || { echo "not installed: $f"; exit 1; }
done

# 1. The CMake package.
cmake -S "$src/tests/install/outside" -B "$tmp/build" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/build" -j2 >/dev/null

# 2. pkg-config alone.
export PKG_CONFIG_PATH=$tmp/prefix/lib/pkgconfig
# The public header and its route macros compile quietly as pedantic C and
# as C++ (a C++ module must not get a warning per route under -Wextra).
cat >"$tmp/every_route.c" <<'EOF_C'
#include <modgate/module.h>
static int h(mg_req *q, mg_res *r) { (void)q; return mg_res_printf(r, 200, "text/plain", "x\n"); }
static int s(mg_req *q, mg_stream *st) { (void)q; (void)st; return 0; }
static int w(mg_req *q, mg_ws *ws) { (void)q; (void)ws; return 0; }
static int i(void) { return 0; }
MG_MODULE(every, MG_GET("/a", h), MG_STREAM_GET("/b", s), MG_UPLOAD("POST", "/c", h),
          MG_WS("/d", w), MG_HEALTH(h), MG_INIT(i), MG_ANY("/e/*", h));
EOF_C
cc -std=c99 -Wall -Wextra -Werror -pedantic $(pkg-config --cflags modgate) -c "$tmp/every_route.c" \
   -o "$tmp/every_route.o"
if command -v c++ >/dev/null; then
    cp "$tmp/every_route.c" "$tmp/every_route.cpp"
    c++ -std=c++17 -Wall -Wextra -Werror -pedantic $(pkg-config --cflags modgate) \
        -c "$tmp/every_route.cpp" -o "$tmp/every_route_cpp.o"
fi
cc -o "$tmp/pcgw" "$src/tests/install/outside/main.c" "$src/tests/install/outside/greet.c" \
   $(pkg-config --cflags modgate) $(pkg-config --libs modgate)

for gw in "$tmp/build/mygw" "$tmp/pcgw"; do
    out=$tmp/out.txt
    "$gw" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --log-dir "$tmp/logs" >"$out" 2>&1 &
    pid=$!
    port=
    for _ in $(seq 100); do
        port=$(sed -n 's|^modgate: ready on http://127.0.0.1:\([0-9]*\) .*|\1|p' "$out")
        [ -n "$port" ] && break
        sleep 0.1
    done
    [ -n "$port" ] || { echo "$gw did not start:"; cat "$out"; exit 1; }
    body=$(curl -sf "http://127.0.0.1:$port/greet/outside")
    [ "$body" = "greetings, outside" ] || { echo "unexpected answer: $body"; exit 1; }
    grep -q "greeting outside" "$tmp/logs/greet.log" || { echo "no mg_log line"; exit 1; }
    kill "$pid"
    wait "$pid" || { echo "$gw did not stop cleanly"; exit 1; }
    pid=
    rm -rf "$tmp/logs"
    echo "ok: $gw"
done
