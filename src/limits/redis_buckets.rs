//! The Redis side of the bucket store: one Lua script checks and charges all buckets of a request
//! atomically, another applies token reconciliation. Both mirror `engine.rs`.
//!
//! Rate windows use the Redis server's clock (`TIME`), so replicas with skewed clocks agree; calendar
//! quota periods are computed by the caller and are part of the key. A sliding window is a sorted set of
//! admission times at the declared key plus a hash of their units at `<key>:u` (a key derived from the
//! declared one, so this does not support Redis Cluster).

use std::sync::LazyLock;

use redis::Script;

use super::engine::{BucketKind, Outcome};
use crate::store::{RedisStore, StoreUnavailable};

const ADMIT_LUA: &str = r#"
local apply = ARGV[1] == '1'
local MAX_LOG = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function ceil0(v) if v <= 0 then return 0 end return math.ceil(v) end
local function floor0(v) if v <= 0 then return 0 end return math.floor(v) end
local function fmt(v) return string.format('%.0f', v) end
local out = {}
local writes = {}
local all = true
for i = 1, #KEYS do
  local b = 3 + (i - 1) * 4
  local typ = tonumber(ARGV[b]); local p1 = tonumber(ARGV[b + 1]); local p2 = tonumber(ARGV[b + 2])
  local cost = tonumber(ARGV[b + 3])
  local key = KEYS[i]
  local allowed, retry, remaining, reset, mark = 0, 0, 0, 0, 0
  if typ == 1 then
    local tat = tonumber(redis.call('GET', key) or now)
    if tat < now then tat = now end
    local new_tat = tat + p1 * cost
    local allow_at = new_tat - p1 * p2
    if allow_at > now then
      retry = math.max(1, ceil0(allow_at - now))
      remaining = math.min(p2, floor0(p2 - (tat - now) / p1 + 1e-9))
      reset = ceil0(tat - now)
    else
      allowed = 1
      remaining = floor0((now - allow_at) / p1 + 1e-9)
      reset = ceil0(new_tat - now)
      writes[#writes + 1] = {'SET', key, fmt(math.ceil(new_tat)), 'PX', fmt(math.ceil((new_tat - now) / 1000) + 1000)}
    end
  elseif typ == 2 then
    -- Exact sliding window: a ZSET of admission times (member = score = the time in us) and a hash
    -- of their units plus the sum under '_'. Entries that left the window are dropped first.
    local hkey = key .. ':u'
    local cutoff = fmt(now - p1)
    local gone = redis.call('ZRANGEBYSCORE', key, '-inf', cutoff)
    if #gone > 0 then
      local freed = 0
      for _, m in ipairs(gone) do
        freed = freed + tonumber(redis.call('HGET', hkey, m) or '0')
        redis.call('HDEL', hkey, m)
      end
      redis.call('ZREMRANGEBYSCORE', key, '-inf', cutoff)
      redis.call('HINCRBY', hkey, '_', fmt(-freed))
    end
    local used = tonumber(redis.call('HGET', hkey, '_') or '0')
    if used < 0 then used = 0 end
    local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    local empty_in = 0
    if #newest > 0 then empty_in = ceil0(tonumber(newest[2]) + p1 - now) end
    mark = now
    if used + cost <= p2 then
      allowed = 1
      remaining = floor0(p2 - used - cost)
      reset = empty_in
      if cost > 0 then
        reset = ceil0(p1)
        local m = fmt(now)
        local ttl = fmt(math.ceil(p1 / 1000) + 1000)
        writes[#writes + 1] = {'ZADD', key, m, m}
        writes[#writes + 1] = {'HINCRBY', hkey, m, fmt(cost)}
        writes[#writes + 1] = {'HINCRBY', hkey, '_', fmt(cost)}
        writes[#writes + 1] = {'PEXPIRE', key, ttl}
        writes[#writes + 1] = {'PEXPIRE', hkey, ttl}
        writes[#writes + 1] = function()
          -- At most MAX_LOG entries: the oldest merges into the next (its units expire later, never sooner).
          if redis.call('ZCARD', key) > MAX_LOG then
            local two = redis.call('ZRANGE', key, 0, 1)
            local units = tonumber(redis.call('HGET', hkey, two[1]) or '0')
            redis.call('HINCRBY', hkey, two[2], fmt(units))
            redis.call('HDEL', hkey, two[1])
            redis.call('ZREM', key, two[1])
          end
        end
      end
    else
      -- The earliest time enough of the oldest entries have left the window for this cost.
      local entries = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
      local left = used
      local fits = now + p1
      for j = 1, #entries, 2 do
        left = left - tonumber(redis.call('HGET', hkey, entries[j]) or '0')
        if left + cost <= p2 then fits = tonumber(entries[j + 1]) + p1; break end
      end
      retry = math.max(1, ceil0(fits - now))
      remaining = floor0(p2 - used)
      reset = empty_in
    end
  else
    local used = tonumber(redis.call('GET', key) or '0')
    reset = ceil0(p2 - now)
    if used + cost <= p1 then
      allowed = 1
      remaining = floor0(p1 - used - cost)
      writes[#writes + 1] = {'INCRBY', key, fmt(cost)}
      writes[#writes + 1] = {'PEXPIREAT', key, fmt(math.ceil(p2 / 1000) + 3600000)}
    else
      retry = math.max(1, reset)
      remaining = floor0(p1 - used)
    end
  end
  if allowed == 0 then all = false end
  out[#out + 1] = allowed
  out[#out + 1] = retry
  out[#out + 1] = remaining
  out[#out + 1] = reset
  out[#out + 1] = mark
end
if apply and all then
  for _, w in ipairs(writes) do
    if type(w) == 'function' then w() else redis.call(unpack(w)) end
  end
end
return out
"#;

const ADJUST_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function fmt(v) return string.format('%.0f', v) end
for i = 1, #KEYS do
  local b = 1 + (i - 1) * 5
  local typ = tonumber(ARGV[b]); local p1 = tonumber(ARGV[b + 1]); local p2 = tonumber(ARGV[b + 2])
  local mark = tonumber(ARGV[b + 3]); local delta = tonumber(ARGV[b + 4])
  local key = KEYS[i]
  if typ == 1 then
    local stored = redis.call('GET', key)
    if stored or delta > 0 then
      local tat = math.max(tonumber(stored or now), now)
      local new_tat = math.max(tat + p1 * delta, now)
      if new_tat > now then
        redis.call('SET', key, fmt(math.ceil(new_tat)), 'PX', fmt(math.ceil((new_tat - now) / 1000) + 1000))
      else
        redis.call('DEL', key)
      end
    end
  elseif typ == 2 then
    -- The entry admitted at `mark`, while it is still in the window.
    if mark + p1 > now then
      local hkey = key .. ':u'
      local m = fmt(mark)
      local cur = redis.call('HGET', hkey, m)
      if cur then
        local new = math.max(0, tonumber(cur) + delta)
        redis.call('HSET', hkey, m, fmt(new))
        redis.call('HINCRBY', hkey, '_', fmt(new - tonumber(cur)))
      elseif delta > 0 then
        local ttl = fmt(math.ceil((mark + p1 - now) / 1000) + 1000)
        redis.call('ZADD', key, m, m)
        redis.call('HSET', hkey, m, fmt(delta))
        redis.call('HINCRBY', hkey, '_', fmt(delta))
        if redis.call('PTTL', key) < tonumber(ttl) then redis.call('PEXPIRE', key, ttl) end
        if redis.call('PTTL', hkey) < tonumber(ttl) then redis.call('PEXPIRE', hkey, ttl) end
      end
    end
  else
    if now < p2 then
      if redis.call('INCRBY', key, fmt(delta)) < 0 then redis.call('SET', key, '0') end
      redis.call('PEXPIREAT', key, fmt(math.ceil(p2 / 1000) + 3600000))
    end
  end
end
return 1
"#;

static ADMIT: LazyLock<Script> = LazyLock::new(|| Script::new(ADMIT_LUA));
static ADJUST: LazyLock<Script> = LazyLock::new(|| Script::new(ADJUST_LUA));

fn encode(kind: BucketKind) -> (u8, f64, f64) {
    match kind {
        BucketKind::Gcra { emission_us, burst } => (1, emission_us, burst),
        BucketKind::Window { window_us, limit } => (2, window_us, limit),
        BucketKind::Fixed {
            limit,
            period_end_us,
        } => (3, limit, period_end_us),
    }
}

fn full_key(store: &RedisStore, key: &str) -> String {
    format!("{}:rl:{key}", store.prefix())
}

/// Checks all buckets and, when `apply` and all allow, charges them, in one atomic script run.
pub(crate) async fn check(
    store: &RedisStore,
    buckets: &[(&str, BucketKind, u64)],
    apply: bool,
) -> Result<Vec<Outcome>, StoreUnavailable> {
    let mut invocation = ADMIT.prepare_invoke();
    invocation
        .arg(if apply { "1" } else { "0" })
        .arg(super::engine::MAX_LOG_ENTRIES);
    for &(key, kind, cost) in buckets {
        let (typ, p1, p2) = encode(kind);
        invocation
            .key(full_key(store, key))
            .arg(typ)
            .arg(p1)
            .arg(p2)
            .arg(cost);
    }
    let flat: Vec<i64> = store.invoke(&invocation).await?;
    if flat.len() != buckets.len() * 5 {
        tracing::warn!(
            got = flat.len(),
            buckets = buckets.len(),
            "unexpected reply from the redis limit script"
        );
        return Err(StoreUnavailable);
    }
    let u = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(flat
        .chunks_exact(5)
        .map(|c| Outcome {
            allowed: c[0] == 1,
            retry_after_us: u(c[1]),
            remaining: u(c[2]),
            reset_us: u(c[3]),
            mark: c[4],
        })
        .collect())
}

/// Applies reconciliation deltas (`key`, kind, mark, delta) atomically.
pub(crate) async fn adjust(
    store: &RedisStore,
    corrections: &[(&str, BucketKind, i64, i64)],
) -> Result<(), StoreUnavailable> {
    let mut invocation = ADJUST.prepare_invoke();
    for &(key, kind, mark, delta) in corrections {
        let (typ, p1, p2) = encode(kind);
        invocation
            .key(full_key(store, key))
            .arg(typ)
            .arg(p1)
            .arg(p2)
            .arg(mark)
            .arg(delta);
    }
    let _: i64 = store.invoke(&invocation).await?;
    Ok(())
}
