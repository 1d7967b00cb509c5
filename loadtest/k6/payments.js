// Realistic payment traffic for payroute: many merchants, mixed amounts and
// currencies, a ramp, a steady phase, a spike, and a phase in which one
// acquirer degrades (loadtest/k6.sh restarts it failing 80% of payments)
// while the thresholds must still hold thanks to failover.
//
// Managed run (starts mocks + payroute, degrades an acquirer mid-run):
//   loadtest/k6.sh            # ~100 s
//   loadtest/k6.sh --smoke    # ~15 s, CI
// Against a proxy you run yourself (no degradation unless you cause it):
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e MERCHANT_IDS=m-001 loadtest/k6/payments.js
//
// Every payment has a unique order id, so payroute routes each one (a
// repeated order id would be answered from the idempotency record instead).
// Env: BASE_URL, MERCHANTS (1000: ids m-0000000.., as gen_config.py makes
// them) or MERCHANT_IDS (comma-separated ids, e.g. routes.toml's m-001),
// RATE (steady req/s, 300), SPIKE_RATE (900), RAMP_S (20), STEADY_S (30),
// SPIKE_S (15), DEGRADE_S (30), P95_MS (250), P99_MS (500), SUMMARY (file).
import http from 'k6/http';
import { check } from 'k6';
import exec from 'k6/execution';
import { Counter, Rate } from 'k6/metrics';

const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:18080';
const MERCHANTS = parseInt(__ENV.MERCHANTS || '1000', 10);
const MERCHANT_IDS = __ENV.MERCHANT_IDS ? __ENV.MERCHANT_IDS.split(',') : null;
const RATE = parseInt(__ENV.RATE || '300', 10);
const SPIKE_RATE = parseInt(__ENV.SPIKE_RATE || String(RATE * 3), 10);
const RAMP_S = parseInt(__ENV.RAMP_S || '20', 10);
const STEADY_S = parseInt(__ENV.STEADY_S || '30', 10);
const SPIKE_S = parseInt(__ENV.SPIKE_S || '15', 10);
const DEGRADE_S = parseInt(__ENV.DEGRADE_S || '30', 10);
const RUN = `k6${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;

// Where each phase starts (s); loadtest/k6.sh uses the same arithmetic.
const SPIKE_AT = RAMP_S + STEADY_S;
const DEGRADE_AT = SPIKE_AT + SPIKE_S + 4;

const failovers = new Counter('payroute_failovers');
const declines = new Rate('payment_declined');
const served = new Rate('payment_served'); // 2xx or a decline: the proxy did its job

function vus(rate) {
  return { preAllocatedVUs: Math.max(10, Math.ceil(rate / 10)), maxVUs: Math.max(50, rate) };
}

export const options = {
  discardResponseBodies: false,
  summaryTrendStats: ['avg', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
  scenarios: {
    ramp: {
      executor: 'ramping-arrival-rate', startRate: Math.max(1, Math.floor(RATE / 10)), timeUnit: '1s',
      stages: [{ target: RATE, duration: `${RAMP_S}s` }], ...vus(RATE),
    },
    steady: {
      executor: 'constant-arrival-rate', rate: RATE, timeUnit: '1s', duration: `${STEADY_S}s`,
      startTime: `${RAMP_S}s`, ...vus(RATE),
    },
    spike: {
      executor: 'ramping-arrival-rate', startRate: RATE, timeUnit: '1s', startTime: `${SPIKE_AT}s`,
      stages: [
        { target: SPIKE_RATE, duration: '2s' },
        { target: SPIKE_RATE, duration: `${SPIKE_S}s` },
        { target: RATE, duration: '2s' },
      ],
      ...vus(SPIKE_RATE),
    },
    // loadtest/k6.sh restarts the preferred acquirer failing 80% of payments
    // a quarter of the way into this phase; failover must hide it.
    degrade: {
      executor: 'constant-arrival-rate', rate: RATE, timeUnit: '1s', duration: `${DEGRADE_S}s`,
      startTime: `${DEGRADE_AT}s`, ...vus(RATE),
    },
  },
  thresholds: {
    // 402 declines are answers, not failures (see setResponseCallback below).
    http_req_failed: ['rate<0.01'],
    'http_req_failed{scenario:degrade}': ['rate<0.01'],
    'http_req_failed{scenario:spike}': ['rate<0.01'],
    http_req_duration: [`p(95)<${__ENV.P95_MS || 250}`, `p(99)<${__ENV.P99_MS || 500}`],
    'http_req_duration{scenario:degrade}': [`p(99)<${__ENV.P99_MS || 500}`],
    checks: ['rate>0.99'],
    payment_served: ['rate>0.99'],
  },
};

http.setResponseCallback(http.expectedStatuses({ min: 200, max: 299 }, 402));

const CURRENCIES = ['CNY', 'CNY', 'CNY', 'CNY', 'CNY', 'CNY', 'CNY', 'USD', 'USD', 'EUR'];

function amount() {
  // Log-uniform between 1.00 and 5,000.00 (minor units): many small, a few large.
  return Math.floor(Math.exp(Math.log(100) + Math.random() * (Math.log(500000) - Math.log(100))));
}

function merchant() {
  // Zipf-ish: a few merchants send much of the traffic, as in real life.
  const r = Math.pow(Math.random(), 2);
  if (MERCHANT_IDS) return MERCHANT_IDS[Math.floor(r * MERCHANT_IDS.length)];
  return 'm-' + String(Math.floor(r * MERCHANTS)).padStart(7, '0');
}

export default function () {
  const n = exec.scenario.iterationInTest;
  const order = `${RUN}-${exec.scenario.name}-${n}`;
  const body = JSON.stringify({
    amount: amount(),
    currency: CURRENCIES[Math.floor(Math.random() * CURRENCIES.length)],
    order_id: order,
    description: 'k6 load test',
    customer: { id: `c-${n % 5000}`, country: 'CN' },
  });
  const res = http.post(`${BASE_URL}/v1/payments`, body, {
    headers: { 'Content-Type': 'application/json', 'X-Merchant-Id': merchant() },
    tags: { name: 'payment' },
  });
  const attempts = parseInt(res.headers['X-Payroute-Attempts'] || '0', 10);
  if (attempts > 1) failovers.add(attempts - 1);
  declines.add(res.status === 402);
  served.add((res.status >= 200 && res.status < 300) || res.status === 402);
  check(res, {
    'paid or declined by the acquirer': (r) => (r.status >= 200 && r.status < 300) || r.status === 402,
    'says which channel served it': (r) => !!r.headers['X-Payroute-Channel'],
    'has a request id': (r) => !!r.headers['X-Payroute-Request-Id'],
  });
}

export function handleSummary(data) {
  const m = data.metrics;
  const v = (name, stat) => (m[name] && m[name].values[stat] !== undefined ? m[name].values[stat] : null);
  const failedThresholds = Object.entries(m)
    .flatMap(([name, x]) => Object.entries(x.thresholds || {}).filter(([, t]) => !t.ok).map(([t]) => `${name}: ${t}`));
  const s = {
    requests: v('http_reqs', 'count'),
    failed_rate: v('http_req_failed', 'rate'),
    declined_rate: v('payment_declined', 'rate'),
    failovers: v('payroute_failovers', 'count') || 0,
    p95_ms: v('http_req_duration', 'p(95)'),
    p99_ms: v('http_req_duration', 'p(99)'),
    max_ms: v('http_req_duration', 'max'),
    thresholds_failed: failedThresholds,
  };
  const text = [
    `payments: ${s.requests}, failed ${(100 * s.failed_rate).toFixed(3)}%, declined ${(100 * s.declined_rate).toFixed(2)}%, failovers ${s.failovers}`,
    `latency: p95 ${s.p95_ms.toFixed(2)} ms, p99 ${s.p99_ms.toFixed(2)} ms, max ${s.max_ms.toFixed(1)} ms`,
    failedThresholds.length ? `THRESHOLDS FAILED: ${failedThresholds.join('; ')}` : 'all thresholds held',
  ].join('\n');
  const out = { stdout: `\n== k6 payments summary\n${text}\nK6JSON ${JSON.stringify(s)}\n` };
  if (__ENV.SUMMARY) out[__ENV.SUMMARY] = JSON.stringify(data, null, 1);
  return out;
}
