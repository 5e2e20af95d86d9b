//! Limits shared by every replica through Redis: the same GCRA as
//! [`super::local`], run by one Lua script per request (one round trip,
//! atomic across replicas, timed by Redis's own clock so replicas' clocks
//! need not agree).

use std::time::Duration;

use redis::Script;

use super::{Denied, Kind, Verdict, Window};
use crate::cache::redis::{RedisOptions, RedisTier, RedisTierError};
use crate::context::Identity;

/// Both keys of a client carry the same hash tag (`{…}`), so the script's
/// keys live on one node of a Redis Cluster.
const SCRIPT: &str = r#"
-- sluice rate limits: GCRA over one client's requests (KEYS[1]) and tokens
-- (KEYS[2]); each key holds its theoretical arrival time in milliseconds.
-- ARGV: "take" or "settle", requests per minute (0 = none), tokens per
-- minute (0 = none), tokens to take (take) or to add, negative to give back
-- (settle).
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local period = 60000
local function tat_of(key)
  local v = tonumber(redis.call('GET', key))
  if v == nil or v < now then return now end
  return v
end
local function store(key, tat)
  if tat > now then
    redis.call('SET', key, string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1000)
  else
    redis.call('DEL', key)
  end
end
local rpm, tpm, n = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if ARGV[1] == 'settle' then
  if tpm > 0 and n ~= 0 then
    store(KEYS[2], math.max(now, tat_of(KEYS[2]) + n * period / tpm))
  end
  return {0}
end
-- denied: 0 no, 1 requests, 2 tokens, 3 more tokens than the limit
local denied, retry, r_left, r_reset, t_left, t_reset = 0, 0, -1, 0, -1, 0
if rpm > 0 then
  local per = period / rpm
  local tat = tat_of(KEYS[1])
  local nxt = tat + per
  if nxt - now > period then
    denied, retry = 1, nxt - period - now
  else
    store(KEYS[1], nxt)
    tat = nxt
  end
  r_left = math.floor((period - (tat - now)) / per + 1e-9)
  r_reset = tat - now
end
if tpm > 0 then
  local per = period / tpm
  local tat = tat_of(KEYS[2])
  if denied == 0 then
    if n > tpm then
      denied = 3
    else
      local nxt = tat + n * per
      if n > 0 and nxt - now > period then
        denied, retry = 2, nxt - period - now
      else
        store(KEYS[2], nxt)
        tat = nxt
      end
    end
  end
  t_left = math.floor((period - (tat - now)) / per + 1e-9)
  t_reset = tat - now
end
return {denied, math.ceil(retry), r_left, math.ceil(r_reset), t_left, math.ceil(t_reset)}
"#;

/// The limits' state in Redis.
#[derive(Debug)]
pub struct Shared {
    tier: RedisTier,
    script: Script,
    requests_per_minute: u64,
    tokens_per_minute: u64,
}

impl Shared {
    /// Connects in the background; never waits for Redis.
    pub fn start(
        url: &str,
        timeout: Duration,
        requests_per_minute: Option<u32>,
        tokens_per_minute: Option<u64>,
    ) -> Result<Shared, RedisTierError> {
        let tier = RedisTier::start(RedisOptions {
            url: url.to_owned(),
            timeout,
            prefix: "sluice:rl:".to_owned(),
            queue: 1,
        })?;
        Ok(Shared {
            tier,
            script: Script::new(SCRIPT),
            requests_per_minute: requests_per_minute.map_or(0, u64::from),
            tokens_per_minute: tokens_per_minute.unwrap_or(0),
        })
    }

    fn keys(client: &Identity) -> [String; 2] {
        let hex = client.to_hex();
        [format!("{{{hex}}}:r"), format!("{{{hex}}}:t")]
    }

    /// Runs the script in `mode` (`take` or `settle`) for `client` with `tokens`.
    async fn call(
        &self,
        mode: &'static str,
        client: &Identity,
        tokens: i64,
    ) -> Result<Vec<i64>, RedisTierError> {
        let [requests_key, tokens_key] = Self::keys(client);
        self.tier
            .eval(
                "rate_limit",
                &self.script,
                &[&requests_key, &tokens_key],
                &[
                    &mode,
                    &self.requests_per_minute,
                    &self.tokens_per_minute,
                    &tokens,
                ],
            )
            .await
    }

    /// Takes one request and `cost` tokens, as [`super::local::Local::take`].
    pub async fn take(&self, client: &Identity, cost: u64) -> Result<Verdict, RedisTierError> {
        let cost = i64::try_from(cost).unwrap_or(i64::MAX);
        let reply = self.call("take", client, cost).await?;
        let [denied, retry, r_left, r_reset, t_left, t_reset] = reply[..] else {
            return Err(RedisTierError::Redis(redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "rate limit script returned an unexpected reply",
            ))));
        };
        let ms = |v: i64| Duration::from_millis(u64::try_from(v).unwrap_or(0));
        let window = |limit: u64, left: i64, reset: i64| {
            (limit > 0).then(|| Window {
                limit,
                remaining: u64::try_from(left).unwrap_or(0).min(limit),
                reset: ms(reset),
            })
        };
        let kind = match denied {
            1 => Some(Kind::Requests),
            2 => Some(Kind::Tokens),
            3 => Some(Kind::TooLarge {
                requested: cost.unsigned_abs(),
            }),
            _ => None,
        };
        Ok(Verdict {
            requests: window(self.requests_per_minute, r_left, r_reset),
            tokens: window(self.tokens_per_minute, t_left, t_reset),
            denied: kind.map(|kind| Denied {
                kind,
                retry_after: ms(retry),
            }),
        })
    }

    /// Adds `delta` tokens (negative: gives them back).
    pub async fn settle(&self, client: &Identity, delta: i128) -> Result<(), RedisTierError> {
        if self.tokens_per_minute == 0 || delta == 0 {
            return Ok(());
        }
        let delta = i64::try_from(delta).unwrap_or(if delta < 0 { i64::MIN } else { i64::MAX });
        self.call("settle", client, delta).await.map(drop)
    }
}
