//! The Redis backend: merchant limits, idempotency and order memory shared
//! by every instance on the same Redis and `key_prefix`.
//!
//! Each operation of [`super::Store`] is one Lua script — one round trip,
//! atomic on the server, so instances never race on read-modify-write. The
//! rate limit is GCRA on Redis's own clock (`TIME`), so instances with skewed
//! clocks still share one bucket. A merchant's keys share a hash tag
//! (`{merchant}`), so the scripts stay valid on Redis Cluster.
//!
//! Every call has a timeout. When Redis stops answering, the store marks
//! itself down (logged once per episode, not per request) and stops calling
//! it — no request waits on a dead Redis — while a background ping notices
//! its return. Meanwhile `fail_closed` answers 503 and `fail_open` serves from
//! the instance's local state (`payroute_state_fallback_total`). A settle that
//! cannot reach Redis is retried in the background, so a payment's answer is
//! not lost to a short outage.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prometheus::{IntCounter, IntGauge};
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};

use super::{Admission, Admit, Claim, DailyClaim, Followup, Settlement, StateError, StoredResponse};
use crate::config::{OnUnavailable, StateConfig};
use crate::metrics::Metrics;

/// GCRA on Redis time, in microseconds. Expects `KEYS[1]` = the merchant's
/// rate key, `ARGV[1]` = emission interval (µs), `ARGV[2]` = burst. Leaves
/// `{'rate', wait_us}` as the script's answer when the merchant is over.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tau = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local next_tat = tat + interval
if next_tat - now > tau then
  return {'rate', string.format('%.0f', next_tat - now - tau)}
end
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1)
"#;

/// KEYS: rate, idempotency, daily. ARGV: interval, burst, fingerprint, ttl_ms,
/// amount, limit, day_end_unix, has_daily.
const ADMIT: &str = r#"
local rec = redis.call('HGETALL', KEYS[2])
if #rec > 0 then
  local r = {}
  for i = 1, #rec, 2 do r[rec[i]] = rec[i + 1] end
  if r['fp'] ~= ARGV[3] then return {'reused'} end
  if r['s'] == 'i' then return {'inflight'} end
  return {'done', r['status'] or '502', r['ct'] or '', r['body'] or '', r['ch'] or '', r['att'] or '0', r['amb'] or '', r['out'] or '', r['tn'] or '', r['om'] or '0'}
end
redis.call('HSET', KEYS[2], 'fp', ARGV[3], 's', 'i')
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if ARGV[8] == '1' then
  local used = tonumber(redis.call('GET', KEYS[3]) or '0')
  local amount = tonumber(ARGV[5])
  if used + amount > tonumber(ARGV[6]) then
    redis.call('DEL', KEYS[2])
    return {'daily', tostring(used)}
  end
  redis.call('INCRBY', KEYS[3], ARGV[5])
  redis.call('EXPIREAT', KEYS[3], ARGV[7])
end
return {'ok'}
"#;

/// KEYS: idempotency, daily, order. ARGV: fingerprint, mode ('f' finish,
/// 'a' abandon), ttl_ms, status, content type, body, channel, attempts,
/// ambiguous, outcome, release amount, order channel ('' = none), trade
/// number, size of a body not kept (0: kept).
const SETTLE: &str = r#"
if redis.call('HGET', KEYS[1], 'fp') == ARGV[1] then
  if ARGV[2] == 'f' then
    redis.call('HSET', KEYS[1], 's', 'd', 'status', ARGV[4], 'ct', ARGV[5], 'body', ARGV[6],
      'ch', ARGV[7], 'att', ARGV[8], 'amb', ARGV[9], 'out', ARGV[10], 'tn', ARGV[13], 'om', ARGV[14])
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
  else
    redis.call('DEL', KEYS[1])
  end
end
if tonumber(ARGV[11]) > 0 and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('DECRBY', KEYS[2], ARGV[11])
end
if ARGV[12] ~= '' then
  redis.call('SET', KEYS[3], ARGV[12], 'PX', ARGV[3])
end
return {'ok'}
"#;

/// KEYS: rate, order. ARGV: interval, burst.
const FOLLOWUP: &str = r#"
return {'ok', redis.call('GET', KEYS[2]) or ''}
"#;

/// A channel's daily cap (`super::cap`). KEYS: the channel's day. ARGV: amount, cap, expire-at (Unix s).
/// Answers `{'ok', used}` or `{'full', used}`.
const CAP_RESERVE: &str = r#"
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used + tonumber(ARGV[1]) > tonumber(ARGV[2]) then
  return {'full', tostring(used)}
end
used = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('EXPIREAT', KEYS[1], ARGV[3])
return {'ok', tostring(used)}
"#;

/// KEYS: the channel's day. ARGV: amount. Answers `{'ok', used}`.
const CAP_RELEASE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {'ok', '0'} end
return {'ok', tostring(redis.call('DECRBY', KEYS[1], ARGV[1]))}
"#;

/// Settles that could not reach Redis are retried this long.
const SETTLE_RETRY_FOR: Duration = Duration::from_secs(60);

pub(crate) struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
    on_unavailable: OnUnavailable,
    up: AtomicBool,
    fallbacks: IntCounter,
    up_gauge: IntGauge,
    scripts: Scripts,
}

pub(super) struct Scripts {
    admit: Script,
    settle: Script,
    followup: Script,
    pub cap_reserve: Script,
    pub cap_release: Script,
}

/// Where a Redis URL points, without credentials, for logs.
fn endpoint(url: &str) -> String {
    match redis::Client::open(url).map(|c| c.get_connection_info().addr().to_string()) {
        Ok(addr) => addr,
        Err(_) => "<invalid redis url>".into(),
    }
}

impl RedisStore {
    pub async fn connect(cfg: &StateConfig, metrics: &Metrics) -> Result<RedisStore, StateError> {
        let url = cfg.redis_url.expose();
        let at = endpoint(url);
        // Only the category: a URL parse error could echo the URL and its password.
        let client =
            redis::Client::open(url).map_err(|e| StateError(format!("invalid redis_url: {}", e.category())))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.redis_timeout))
            .set_response_timeout(Some(cfg.redis_timeout))
            .set_number_of_retries(1);
        let conn = tokio::time::timeout(cfg.redis_timeout * 4, client.get_connection_manager_with_config(config))
            .await
            .map_err(|_| {
                StateError(format!(
                    "Redis at {at} did not answer within {:?}",
                    cfg.redis_timeout * 4
                ))
            })?
            .map_err(|e| StateError(format!("cannot reach Redis at {at}: {e}")))?;
        let inner = Arc::new(Inner {
            conn,
            prefix: cfg.key_prefix.clone(),
            timeout: cfg.redis_timeout,
            on_unavailable: cfg.on_unavailable,
            up: AtomicBool::new(true),
            fallbacks: metrics.state_fallbacks.clone(),
            up_gauge: metrics.state_up.clone(),
            scripts: Scripts {
                admit: Script::new(&format!("{GCRA}{ADMIT}")),
                settle: Script::new(SETTLE),
                followup: Script::new(&format!("{GCRA}{FOLLOWUP}")),
                cap_reserve: Script::new(CAP_RESERVE),
                cap_release: Script::new(CAP_RELEASE),
            },
        });
        inner.up_gauge.set(1);
        tokio::spawn(watch(Arc::downgrade(&inner)));
        tracing::info!(redis = %at, prefix = %cfg.key_prefix, "shared state on Redis");
        Ok(RedisStore { inner })
    }

    pub fn up(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }

    pub fn on_unavailable(&self) -> OnUnavailable {
        self.inner.on_unavailable
    }

    /// A call failed: mark Redis down, and decide whether the request may
    /// use local state instead (`Ok`) or must be refused (`Err`).
    pub fn fall_back(&self, e: StateError) -> Result<(), StateError> {
        self.inner.mark_down(&e);
        match self.inner.on_unavailable {
            OnUnavailable::FailOpen => {
                self.inner.fallbacks.inc();
                Ok(())
            }
            OnUnavailable::FailClosed => Err(e),
        }
    }

    pub(super) fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    pub(super) fn scripts(&self) -> &Scripts {
        &self.inner.scripts
    }

    /// Runs a script (see [`Inner::run`]).
    pub(super) async fn run(&self, script: &Script, call: &Call) -> Result<Vec<Vec<u8>>, StateError> {
        self.inner.run(script, call).await
    }

    fn key(&self, merchant: &str, kind: &str, rest: &str) -> String {
        format!("{}{{{merchant}}}:{kind}{rest}", self.inner.prefix)
    }

    /// Per quota, as in the memory backend: a merchant whose quota changes
    /// starts with a full bucket on the new one.
    fn rate_key(&self, merchant: &str, rate_per_sec: u32, burst: u32) -> String {
        self.key(merchant, "rate:", &format!("{rate_per_sec}:{burst}"))
    }

    pub async fn admit(&self, g: &Admission<'_>) -> Result<Admit, StateError> {
        let (day, amount, limit, day_ends, has_daily) = match g.daily {
            Some(d) => (d.day, d.amount, d.limit, d.day_ends + 86_400, "1"),
            None => (0, 0, 0, 0, "0"),
        };
        // No limiter: no rate to check. An interval of 0 never waits, and a
        // key of its own keeps the merchant's real bucket untouched.
        let (rate_key, interval) = match g.limiter {
            Some(_) => (
                self.rate_key(g.merchant, g.rate_per_sec, g.burst),
                interval_us(g.rate_per_sec),
            ),
            None => (self.key(g.merchant, "rate:", "unchecked"), 0),
        };
        let call = Call::new()
            .key(rate_key)
            .key(self.key(g.merchant, "idem:", g.key))
            .key(self.key(g.merchant, "daily:", &day.to_string()))
            .arg(interval)
            .arg(g.burst)
            .arg(hex::encode(g.fingerprint))
            .arg(g.ttl.as_millis())
            .arg(amount)
            .arg(limit)
            .arg(day_ends)
            .arg(has_daily);
        let reply = self.inner.run(&self.inner.scripts.admit, &call).await?;
        let field = |i: usize| reply.get(i).map(Vec::as_slice).unwrap_or_default();
        let text = |i: usize| String::from_utf8_lossy(field(i)).into_owned();
        let number = |i: usize| text(i).parse::<u64>().unwrap_or(0);
        Ok(match field(0) {
            b"ok" => Admit::Started(Claim {
                daily: match g.daily {
                    Some(d) => DailyClaim::Shared {
                        day: d.day,
                        amount: d.amount,
                    },
                    None => DailyClaim::None,
                },
            }),
            b"rate" => Admit::RateLimited(Duration::from_micros(number(1))),
            b"inflight" => Admit::InFlight,
            b"reused" => Admit::Reused,
            b"daily" => Admit::DailyExceeded { used: number(1), limit },
            b"done" => Admit::Finished(StoredResponse {
                status: number(1) as u16,
                content_type: Some(text(2)).filter(|s| !s.is_empty()),
                body: Bytes::copy_from_slice(field(3)),
                channel: Some(text(4)).filter(|s| !s.is_empty()).map(Arc::from),
                attempts: number(5) as u32,
                ambiguous: Some(text(6)).filter(|s| !s.is_empty()),
                outcome: text(7),
                trade_no: Some(text(8)).filter(|s| !s.is_empty()),
                body_omitted: number(9) as u32,
            }),
            other => {
                return Err(StateError(format!(
                    "unexpected admit reply {:?}",
                    String::from_utf8_lossy(other)
                )))
            }
        })
    }

    pub async fn settle(&self, claim: Claim, s: Settlement<'_>) -> Result<(), StateError> {
        let (day, release) = match claim.daily {
            DailyClaim::Shared { day, amount } if !s.accepted => (day, amount),
            DailyClaim::Shared { day, .. } => (day, 0),
            _ => (0, 0),
        };
        let answer = s.answer.as_ref();
        let call = Call::new()
            .key(self.key(s.merchant, "idem:", s.key))
            .key(self.key(s.merchant, "daily:", &day.to_string()))
            .key(self.key(s.merchant, "order:", s.order.map_or("", |(o, _)| o)))
            .arg(hex::encode(s.fingerprint))
            .arg(if answer.is_some() { "f" } else { "a" })
            .arg(s.ttl.as_millis())
            .arg(answer.map_or(0, |a| a.status))
            .arg(answer.and_then(|a| a.content_type.as_deref()).unwrap_or(""))
            .bytes(answer.map_or(&b""[..], |a| &a.body[..]))
            .arg(answer.and_then(|a| a.channel.as_deref()).unwrap_or(""))
            .arg(answer.map_or(0, |a| a.attempts))
            .arg(answer.and_then(|a| a.ambiguous.as_deref()).unwrap_or(""))
            .arg(answer.map_or("", |a| a.outcome.as_str()))
            .arg(release)
            .arg(s.order.map_or("", |(_, c)| &**c))
            .arg(answer.and_then(|a| a.trade_no.as_deref()).unwrap_or(""))
            .arg(answer.map_or(0, |a| a.body_omitted));
        match self.inner.run(&self.inner.scripts.settle, &call).await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.inner.mark_down(&e);
                // The answer must not be lost to a short outage: keep trying.
                let inner = self.inner.clone();
                tokio::spawn(async move { inner.retry_settle(call).await });
                Err(e)
            }
        }
    }

    pub async fn followup(&self, merchant: &str, rate: (u32, u32), order_id: &str) -> Result<Followup, StateError> {
        let call = Call::new()
            .key(self.rate_key(merchant, rate.0, rate.1))
            .key(self.key(merchant, "order:", order_id))
            .arg(interval_us(rate.0))
            .arg(rate.1);
        let reply = self.inner.run(&self.inner.scripts.followup, &call).await?;
        let field = |i: usize| reply.get(i).map(Vec::as_slice).unwrap_or_default();
        Ok(match field(0) {
            b"rate" => Followup::RateLimited(Duration::from_micros(
                String::from_utf8_lossy(field(1)).parse().unwrap_or(0),
            )),
            _ if field(1).is_empty() => Followup::UnknownOrder,
            _ => Followup::Channel(Arc::from(String::from_utf8_lossy(field(1)).as_ref())),
        })
    }
}

/// A script call with owned keys and arguments, so it can be retried later.
#[derive(Clone)]
pub(super) struct Call {
    keys: Vec<String>,
    args: Vec<Vec<u8>>,
}

impl Call {
    pub(super) fn new() -> Call {
        Call {
            keys: Vec::with_capacity(3),
            args: Vec::with_capacity(12),
        }
    }

    pub(super) fn key(mut self, k: String) -> Call {
        self.keys.push(k);
        self
    }

    pub(super) fn arg(mut self, a: impl ToString) -> Call {
        self.args.push(a.to_string().into_bytes());
        self
    }

    fn bytes(mut self, a: &[u8]) -> Call {
        self.args.push(a.to_vec());
        self
    }
}

fn interval_us(rate_per_sec: u32) -> u64 {
    1_000_000 / u64::from(rate_per_sec.max(1))
}

impl Inner {
    /// Runs a script with the timeout; refuses at once while Redis is down.
    async fn run(&self, script: &Script, call: &Call) -> Result<Vec<Vec<u8>>, StateError> {
        if !self.up.load(Ordering::Relaxed) {
            return Err(StateError("Redis is down".into()));
        }
        let mut invocation = script.prepare_invoke();
        for k in &call.keys {
            invocation.key(k);
        }
        for a in &call.args {
            invocation.arg(a);
        }
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.timeout, invocation.invoke_async::<Vec<Vec<u8>>>(&mut conn)).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(StateError(format!("Redis error: {e}"))),
            Err(_) => Err(StateError(format!("Redis did not answer within {:?}", self.timeout))),
        }
    }

    fn mark_down(&self, e: &StateError) {
        if self.up.swap(false, Ordering::Relaxed) {
            self.up_gauge.set(0);
            match self.on_unavailable {
                OnUnavailable::FailOpen => {
                    tracing::error!(error = %e, "Redis unavailable: serving from this instance's local state (fail_open) until it returns")
                }
                OnUnavailable::FailClosed => {
                    tracing::error!(error = %e, "Redis unavailable: refusing payments with 503 (fail_closed) until it returns")
                }
            }
        }
    }

    async fn retry_settle(self: Arc<Self>, call: Call) {
        let give_up = tokio::time::Instant::now() + SETTLE_RETRY_FOR;
        while tokio::time::Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if self.up.load(Ordering::Relaxed) && self.run(&self.scripts.settle, &call).await.is_ok() {
                return;
            }
        }
        tracing::error!(
            "a payment's answer could not be recorded in Redis; repeats of it get 409 until its record expires"
        );
    }
}

/// Pings Redis every 500 ms: notices an outage between requests (for
/// `/-/ready`) and its end (to stop falling back).
async fn watch(inner: std::sync::Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let mut conn = inner.conn.clone();
        let ping = tokio::time::timeout(inner.timeout, conn.ping::<String>()).await;
        match ping {
            Ok(Ok(_)) => {
                if !inner.up.swap(true, Ordering::Relaxed) {
                    inner.up_gauge.set(1);
                    tracing::warn!("Redis is reachable again: shared state restored");
                }
            }
            Ok(Err(e)) => inner.mark_down(&StateError(e.to_string())),
            Err(_) => inner.mark_down(&StateError("ping timed out".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{suite, Store};
    use crate::config::Config;
    use crate::metrics::Metrics;

    /// The shared behaviour suite against the Redis at 127.0.0.1:6379
    /// (started by `.ci/run`), isolated by a random key prefix.
    #[tokio::test]
    async fn redis_backend() {
        let prefix = format!("payroute-test-{}:", fastrand::u64(..));
        let text = format!(
            "[state]\nbackend = \"redis\"\nkey_prefix = \"{prefix}\"\n[[channel]]\nid = \"a\"\nurl = \"http://127.0.0.1:1\"\n"
        );
        let config = Config::parse(&text, "t.toml".as_ref()).unwrap();
        let store = Store::redis(&config.state, &Metrics::new())
            .await
            .expect("Redis at 127.0.0.1:6379 (run .ci/run to start one)");
        suite::run(&store, "m-suite").await;
    }
}
