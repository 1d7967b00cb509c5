// Open-model (fixed arrival rate) latency probe used by bench.sh: the same
// unique-payment requests as loadtest/wrk/payments.lua, at RATE requests/s
// for DURATION, whatever the target's latency (no coordinated omission).
//
//   k6 run -e URL=http://127.0.0.1:18080/v1/payments -e RATE=2000 -e DURATION=10s \
//          -e MERCHANTS=1000 -e OUT=/tmp/latency.json loadtest/k6/fixed_rate.js
//
// Writes OUT (JSON): requests, failed rate, p50/p90/p99/p99.9/max in ms, and
// dropped_iterations (k6 could not keep the rate: the result is then void).
import http from 'k6/http';
import exec from 'k6/execution';

const URL = __ENV.URL || 'http://127.0.0.1:18080/v1/payments';
const RATE = parseInt(__ENV.RATE || '2000', 10);
const DURATION = __ENV.DURATION || '10s';
const MERCHANTS = parseInt(__ENV.MERCHANTS || '1000', 10);
const RUN = `k${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
const CURRENCIES = ['CNY', 'CNY', 'CNY', 'USD', 'EUR'];
const AMOUNTS = [100, 1250, 9900, 25000, 120000, 499];

export const options = {
  discardResponseBodies: true,
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(99)', 'p(99.9)', 'max'],
  scenarios: {
    fixed: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION,
      preAllocatedVUs: Math.min(400, Math.max(20, Math.ceil(RATE / 20))),
      maxVUs: Math.max(200, Math.ceil(RATE / 5)),
    },
  },
};

export default function () {
  const n = exec.scenario.iterationInTest;
  const body = `{"amount":${AMOUNTS[n % AMOUNTS.length]},"currency":"${CURRENCIES[n % CURRENCIES.length]}","order_id":"${RUN}-${n}","note":"k6"}`;
  http.post(URL, body, {
    headers: {
      'Content-Type': 'application/json',
      'X-Merchant-Id': `m-${String(Math.floor(Math.random() * MERCHANTS)).padStart(7, '0')}`,
    },
  });
}

export function handleSummary(data) {
  const d = data.metrics.http_req_duration.values;
  const out = {
    url: URL,
    rate: RATE,
    duration: DURATION,
    requests: data.metrics.http_reqs.values.count,
    failed_rate: data.metrics.http_req_failed ? data.metrics.http_req_failed.values.rate : 0,
    dropped_iterations: data.metrics.dropped_iterations ? data.metrics.dropped_iterations.values.count : 0,
    p50_ms: d.med,
    p90_ms: d['p(90)'],
    p99_ms: d['p(99)'],
    p999_ms: d['p(99.9)'],
    max_ms: d.max,
  };
  const res = { stdout: `K6JSON ${JSON.stringify(out)}\n` };
  if (__ENV.OUT) res[__ENV.OUT] = JSON.stringify(out);
  return res;
}
