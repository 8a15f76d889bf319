#!/bin/sh
# Scale benchmark for `planrun validate` and `planrun plan`: plans of 10,000 and 100,000
# servers, four templated steps each (reject / run / accept / wait), timed with wall clock
# and peak RSS from `/usr/bin/time -v`.
#
# Usage: benches/plan_scale.sh [SERVERS...]      (default: 10000 100000)
# Targets (issue 16): 10,000 servers in 150 ms; 100,000 in 1.5 s and 200 MB peak.
set -eu

cd "$(dirname "$0")/.."
: "${CARGO_TARGET_DIR:=target}"
bin="$CARGO_TARGET_DIR/release/planrun"
cargo build --release --quiet
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

generate() {
  # awk writes 100,000 servers in well under a second; a shell loop would dominate.
  awk -v n="$1" 'BEGIN {
    print "version: 1\napplication: shop\nvars: { branch: main }\nservers:"
    for (i = 0; i < n; i++) {
      printf "  - host: 10.%d.%d.%d\n    name: app%d\n    roles: [web, app]\n    options: { private_ip: 192.168.%d.%d }\n",
        int(i / 65536) % 256, int(i / 256) % 256, i % 256, i + 1, int(i / 256) % 256, i % 256
    }
    print "balancers:\n  nodebalancer: { kind: linode, token_env: LINODE_TOKEN, label: lb, port: 80 }"
    print "rollout:\n  select: { roles: [app] }\n  batch_size: \"10%\"\n  steps:"
    print "    - name: reject\n      balancer: { use: nodebalancer, action: reject, node: \"{{host.options.private_ip}}:80\" }"
    print "    - name: restart\n      run: /etc/init.d/rainbows_{{application}} restart {{quote vars.branch}} {{host.name}}\n      timeout: 2m"
    print "    - name: accept\n      balancer: { use: nodebalancer, action: accept, node: \"{{host.options.private_ip}}:80\" }"
    print "    - name: wait\n      wait: { http: \"http://{{host.options.private_ip}}/health\", successes: 2, interval: 2s, timeout: 90s }"
  }' > "$2"
}

measure() { # label, command...
  label=$1; shift
  /usr/bin/time -v "$@" > /dev/null 2> "$work/time" || { cat "$work/time" >&2; exit 1; }
  wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$work/time")
  rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$work/time")
  printf '%-34s wall %8s   peak RSS %6d MB\n' "$label" "$wall" "$((rss / 1024))"
}

sizes=${*:-"10000 100000"}
for n in $sizes; do
  plan="$work/fleet-$n.yaml"
  generate "$n" "$plan"
  echo "$n servers: $(wc -c < "$plan") bytes"
  measure "  validate" "$bin" validate "$plan"
  measure "  plan --format json" "$bin" plan --format json "$plan"
  measure "  plan (text)" "$bin" plan "$plan"
done
