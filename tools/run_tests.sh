#!/bin/sh
# The pytest part of `make test`: every test, in two runs at once.
#
# - Everything but the mDNS tests: three workers (most tests wait on sockets, timers and
#   child processes, not the CPU; four made latency tests miss their bounds on 2 cores).
# - The mDNS tests (`-m lan`): they share one multicast group with every node another
#   test starts, so they run alone: in a network namespace of their own (loopback up,
#   with multicast), at the same time as the rest. Where no namespace can be made (not
#   root and no user namespaces), they run after the rest instead.
# - The latency tests (`-m latency`: honest round trips under a flood, held to a bound):
#   last, alone, so other tests' CPU is not in their figures.
#
# Exits non-zero when either run fails or runs no test (pytest exits 5 then).
set -u
py="$1"
lan_log=$(mktemp)
trap 'rm -f "$lan_log"' EXIT

lan_in_netns() {
  # $1: unshare's flags. Loopback with multicast, and a route for the mDNS group.
  unshare $1 sh -c 'ip link set lo up && ip link set lo multicast on &&
    ip route add 224.0.0.0/4 dev lo && exec "$0" -m pytest -q -p no:cacheprovider -m lan' \
    "$py"
}

netns=
for flags in -n -rn; do
  if unshare $flags sh -c 'ip link set lo up' 2>/dev/null; then netns=$flags; break; fi
done

if [ -n "$netns" ]; then
  lan_in_netns "$netns" >"$lan_log" 2>&1 &
  lan_pid=$!
  "$py" -m pytest -q -n 3 --dist loadfile -m "not lan and not latency" --durations=15
  main=$?
  wait "$lan_pid"
  lan=$?
  echo "== the mDNS tests (-m lan), run meanwhile in a network namespace of their own"
  cat "$lan_log"
else
  "$py" -m pytest -q -n 3 --dist loadfile -m "not lan and not latency" --durations=15
  main=$?
  echo "== the mDNS tests (-m lan), alone (no network namespace could be made here)"
  "$py" -m pytest -q -m lan
  lan=$?
fi
echo "== the latency tests (-m latency), alone"
"$py" -m pytest -q -p no:cacheprovider -m latency
latency=$?
[ "$main" -eq 0 ] && [ "$lan" -eq 0 ] && [ "$latency" -eq 0 ]
