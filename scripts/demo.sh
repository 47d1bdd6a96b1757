#!/usr/bin/env bash
# make demo: the exporter (simulated GPU fleet), Prometheus and Alertmanager from the Debian packages, wired
# with the files in prometheus/, on this machine, with the demo budgets of scripts/demo-budgets.yml (the
# committed budgets.yml holds none). Ctrl-C stops everything and removes the temp data.
# Ports: EXPORTER_PORT (9877), PROMETHEUS_PORT (9090), ALERTMANAGER_PORT (9093); all bound to 127.0.0.1.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXPORTER_PORT="${EXPORTER_PORT:-9877}"
PROMETHEUS_PORT="${PROMETHEUS_PORT:-9090}"
ALERTMANAGER_PORT="${ALERTMANAGER_PORT:-9093}"
EXPORTER="${EXPORTER:-$ROOT/.venv/bin/footprint-exporter}"
PROMETHEUS_BIN="$(command -v prometheus || true)"
ALERTMANAGER_BIN="$(command -v prometheus-alertmanager || command -v alertmanager || true)"

[ -x "$EXPORTER" ] || { echo "demo: $EXPORTER not found (run 'make demo', which creates .venv, or set EXPORTER)" >&2; exit 1; }
[ -n "$PROMETHEUS_BIN" ] || { echo "demo: prometheus not installed (apt-get install prometheus)" >&2; exit 1; }
[ -n "$ALERTMANAGER_BIN" ] || { echo "demo: alertmanager not installed (apt-get install prometheus-alertmanager)" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/footprint-demo.XXXXXX")"
PIDS=()
cleanup() {
    trap - INT TERM EXIT
    echo
    echo "demo: stopping"
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap 'cleanup; exit 0' INT TERM
trap cleanup EXIT

# The committed configuration, with the demo's ports; the budget rules are rendered from the demo budgets.
cp -r "$ROOT/prometheus/rules" "$WORK/rules"
"$EXPORTER" budgets render --budgets "$ROOT/scripts/demo-budgets.yml" \
    --rules-out "$WORK/rules/budgets.rules.yml" --grafana-out "$WORK/grafana-alerting.yml" > /dev/null
mkdir -p "$WORK/file_sd"
sed -e "s/localhost:9877/127.0.0.1:$EXPORTER_PORT/" \
    -e "s/localhost:9093/127.0.0.1:$ALERTMANAGER_PORT/" \
    -e "s/localhost:9090/127.0.0.1:$PROMETHEUS_PORT/" \
    -e "s/scrape_interval: 15s/scrape_interval: 5s/" \
    -e "s/scrape_timeout: 10s/scrape_timeout: 5s/" \
    -e "s/evaluation_interval: 30s/evaluation_interval: 5s/" \
    "$ROOT/prometheus/prometheus.yml" > "$WORK/prometheus.yml"
cp "$ROOT/prometheus/alertmanager.yml" "$WORK/alertmanager.yml"
printf 'carbon:\n  zone: DE\n' > "$WORK/exporter.yml"

"$EXPORTER" --source.gpu=simulated --web.listen-address="127.0.0.1:$EXPORTER_PORT" \
    --config.file "$WORK/exporter.yml" > "$WORK/exporter.log" 2>&1 &
PIDS+=($!)
"$ALERTMANAGER_BIN" --config.file="$WORK/alertmanager.yml" --storage.path="$WORK/alertmanager" \
    --web.listen-address="127.0.0.1:$ALERTMANAGER_PORT" --cluster.listen-address= > "$WORK/alertmanager.log" 2>&1 &
PIDS+=($!)
"$PROMETHEUS_BIN" --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/prometheus" \
    --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" --web.enable-lifecycle > "$WORK/prometheus.log" 2>&1 &
PIDS+=($!)

wait_ready() {  # name url log pid
    for _ in $(seq 1 120); do
        if curl -fsS -o /dev/null "$2" 2>/dev/null; then return 0; fi
        kill -0 "$4" 2>/dev/null || break
        sleep 0.5
    done
    echo "demo: $1 did not start; last lines of its log:" >&2
    tail -n 20 "$3" >&2
    return 1
}
wait_ready exporter "http://127.0.0.1:$EXPORTER_PORT/metrics" "$WORK/exporter.log" "${PIDS[0]}"
wait_ready alertmanager "http://127.0.0.1:$ALERTMANAGER_PORT/-/ready" "$WORK/alertmanager.log" "${PIDS[1]}"
wait_ready prometheus "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" "$WORK/prometheus.log" "${PIDS[2]}"

cat <<MSG
AI Footprint demo is running (data and logs in $WORK):
  exporter      http://127.0.0.1:$EXPORTER_PORT/   (the node's footprint; series on /metrics)
  prometheus    http://127.0.0.1:$PROMETHEUS_PORT   (alerts: http://127.0.0.1:$PROMETHEUS_PORT/alerts)
  alertmanager  http://127.0.0.1:$ALERTMANAGER_PORT
Try in Prometheus: fleet:footprint_power_watts:sum, footprint:budget_usage:ratio
Demo budgets (scripts/demo-budgets.yml), evaluated every 15 s. Within about two minutes:
  CarbonBudgetExhausted         demo-fleet-monthly (2 g a month)      severity warning: a ticket
  CarbonBudgetProjectedOverrun  demo-fleet-weekly (2 kg any 7 days)   severity critical: the page
  CarbonBudgetBurnRateHigh      both                                  inhibited in Alertmanager (page, exhausted)
  CarbonBudgetCoverageLow       every budget: Prometheus holds minutes of their periods
Where to look:
  firing alerts       http://127.0.0.1:$PROMETHEUS_PORT/alerts
  routed and muted    http://127.0.0.1:$ALERTMANAGER_PORT/#/alerts   (the page goes to footprint-critical)
  the numbers         http://127.0.0.1:$PROMETHEUS_PORT/graph?g0.expr=footprint%3Abudget_usage%3Aratio
                      (also footprint:budget_projected_usage:ratio, footprint:budget_coverage:ratio)
A report of what Prometheus stored (after a few minutes), by namespace, as a web page:
  $EXPORTER report --prometheus.url http://127.0.0.1:$PROMETHEUS_PORT --from now-15m --by namespace --format html --output report.html
Press Ctrl-C to stop.
MSG

# Stop as soon as any of the three exits on its own, or on Ctrl-C.
wait -n "${PIDS[@]}" || true
echo "demo: a process exited on its own; last lines of the logs:" >&2
for name in exporter alertmanager prometheus; do tail -n 5 "$WORK/$name.log" >&2; done
exit 1
