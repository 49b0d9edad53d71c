# Sourced by the cluster benchmarks: starts a 3-member etcd cluster on loopback (data on tmpfs,
# free ports), exports VDISK_ETCD_ENDPOINTS and ETCD_PIDS, and stops it on exit (with "$dir").
etcd_start() {
  local base=$((20000 + RANDOM % 20000)) token="vdisk-bench-$$" cluster="" i
  ETCD_DATA=$(mktemp -d -p /dev/shm 2>/dev/null || mktemp -d)
  for i in 0 1 2; do cluster+="${cluster:+,}m$i=http://127.0.0.1:$((base + 2 * i + 1))"; done
  ETCD_PIDS=()
  VDISK_ETCD_ENDPOINTS=""
  for i in 0 1 2; do
    local client=$((base + 2 * i)) peer=$((base + 2 * i + 1))
    etcd --name "m$i" --data-dir "$ETCD_DATA/m$i" --log-level error --logger zap \
      --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
      --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
      --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token "$token" >/dev/null 2>&1 &
    ETCD_PIDS+=($!)
    VDISK_ETCD_ENDPOINTS+="${VDISK_ETCD_ENDPOINTS:+,}http://127.0.0.1:$client"
  done
  export VDISK_ETCD_ENDPOINTS
  for _ in $(seq 300); do
    ETCDCTL_API=3 etcdctl --endpoints="$VDISK_ETCD_ENDPOINTS" endpoint health >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "etcd did not start" >&2
  return 1
}

etcd_stop() {
  kill "${ETCD_PIDS[@]}" 2>/dev/null || true
  wait "${ETCD_PIDS[@]}" 2>/dev/null || true
  rm -rf "$ETCD_DATA"
}

# The sum of an etcd counter over the members: etcd_metric NAME LABEL-SUBSTRING
etcd_metric() {
  local url
  for url in ${VDISK_ETCD_ENDPOINTS//,/ }; do curl -s "$url/metrics"; done |
    awk -v m="$1{" -v l="$2" 'index($0, m) == 1 && index($0, l) { s += $NF } END { printf "%.0f\n", s + 0 }'
}
