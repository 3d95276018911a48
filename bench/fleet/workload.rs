//! The fleet benchmark's traffic: multi-turn agent sessions and independent single-turn requests,
//! generated from a seed (every strategy gets the same requests at the same offsets), and the driver that
//! sends them and times each one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::{Value, json};

use crate::sim::BYTES_PER_TOKEN;

/// splitmix64: small, fast, and the same sequence on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Exponentially distributed with mean `mean`.
    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }

    /// `bytes` bytes of lowercase pseudo-words separated by spaces.
    pub fn text(&mut self, bytes: usize) -> String {
        let mut out = String::with_capacity(bytes);
        while out.len() < bytes {
            if !out.is_empty() {
                out.push(' ');
            }
            let word = self.range(2, 9) as usize;
            for _ in 0..word {
                out.push(char::from(b'a' + (self.next_u64() % 26) as u8));
            }
        }
        out.truncate(bytes);
        out
    }
}

/// The knobs of the generated traffic.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    pub sessions: usize,
    pub turns: usize,
    /// The system prompt every session and single-turn request shares.
    pub system_tokens: usize,
    pub user_tokens: (u64, u64),
    pub output_tokens: (u64, u64),
    /// Mean think time between a reply and the next turn (exponential).
    pub think_ms: f64,
    /// Sessions start at random offsets within this window.
    pub arrival_s: f64,
    pub single_requests: usize,
    /// Mean arrival rate of single-turn requests (Poisson).
    pub single_rate: f64,
    pub single_user_tokens: (u64, u64),
    pub seed: u64,
}

/// One turn as planned: the user's message, the reply length asked for, the pause after the reply.
#[derive(Debug, Clone)]
pub struct Turn {
    pub user: String,
    pub max_tokens: u64,
    pub think: Duration,
}

#[derive(Debug, Clone)]
pub struct SessionPlan {
    pub id: String,
    pub start: Duration,
    pub turns: Vec<Turn>,
}

#[derive(Debug, Clone)]
pub struct SinglePlan {
    pub start: Duration,
    pub user: String,
    pub max_tokens: u64,
}

/// Everything one cell sends.
#[derive(Debug, Clone)]
pub struct Plan {
    pub system: Arc<str>,
    pub sessions: Vec<SessionPlan>,
    pub singles: Vec<SinglePlan>,
}

impl Plan {
    pub fn sessions(cfg: &WorkloadConfig) -> Plan {
        let system = system_prompt(cfg);
        let sessions = (0..cfg.sessions)
            .map(|i| {
                let mut rng = Rng::new(cfg.seed.wrapping_mul(1_000_003).wrapping_add(i as u64));
                let start = Duration::from_secs_f64(rng.unit() * cfg.arrival_s);
                let turns = (0..cfg.turns)
                    .map(|_| {
                        let tokens = rng.range(cfg.user_tokens.0, cfg.user_tokens.1) as usize;
                        Turn {
                            user: rng.text(tokens * BYTES_PER_TOKEN),
                            max_tokens: rng.range(cfg.output_tokens.0, cfg.output_tokens.1),
                            think: Duration::from_secs_f64(rng.exp(cfg.think_ms) / 1000.0),
                        }
                    })
                    .collect();
                SessionPlan {
                    id: format!("sess-{}-{i:04}", cfg.seed),
                    start,
                    turns,
                }
            })
            .collect();
        Plan {
            system,
            sessions,
            singles: Vec::new(),
        }
    }

    pub fn singles(cfg: &WorkloadConfig) -> Plan {
        let system = system_prompt(cfg);
        let mut rng = Rng::new(cfg.seed ^ 0x5151);
        let mut at = 0.0;
        let singles = (0..cfg.single_requests)
            .map(|_| {
                at += rng.exp(1.0 / cfg.single_rate.max(1e-9));
                let tokens = rng.range(cfg.single_user_tokens.0, cfg.single_user_tokens.1) as usize;
                SinglePlan {
                    start: Duration::from_secs_f64(at),
                    user: rng.text(tokens * BYTES_PER_TOKEN),
                    max_tokens: rng.range(cfg.output_tokens.0, cfg.output_tokens.1),
                }
            })
            .collect();
        Plan {
            system,
            sessions: Vec::new(),
            singles,
        }
    }

    pub fn requests(&self) -> usize {
        self.sessions.iter().map(|s| s.turns.len()).sum::<usize>() + self.singles.len()
    }
}

fn system_prompt(cfg: &WorkloadConfig) -> Arc<str> {
    Rng::new(cfg.seed ^ 0xC0DE)
        .text(cfg.system_tokens * BYTES_PER_TOKEN)
        .into()
}

/// Where requests go: through the gateway, or straight to the replica a session hashes to (the
/// fixed-replica client).
#[derive(Debug, Clone)]
pub enum Target {
    Gateway(String),
    Fixed(Vec<String>),
}

impl Target {
    fn url_for(&self, key: &str) -> &str {
        match self {
            Target::Gateway(url) => url,
            Target::Fixed(urls) => {
                let hash = xxhash_rust::xxh3::xxh3_64(key.as_bytes());
                &urls[(hash % urls.len().max(1) as u64) as usize]
            }
        }
    }
}

/// How a session identifies itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// `X-Session-ID: <id>` on every turn.
    Header,
    /// Nothing: affinity must come from the prompt.
    Anonymous,
}

/// What happened to one request.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Time to the first content chunk.
    pub ttft: Option<Duration>,
    /// Ended with `[DONE]`.
    pub ok: bool,
    /// The status when it was not 200 (0: no response).
    pub status: u16,
    pub finished: Instant,
}

impl Outcome {
    /// A request that got a first token but no `[DONE]`: cut mid-stream.
    pub fn cut(&self) -> bool {
        !self.ok && self.ttft.is_some()
    }

    /// A request that never got a first token: refused, failed or timed out before the first byte.
    pub fn failed(&self) -> bool {
        !self.ok && self.ttft.is_none()
    }
}

/// Sends `plan` to `target`, starting now; every session and single request is its own task.
pub async fn drive(
    client: &reqwest::Client,
    target: &Target,
    plan: &Plan,
    identity: Identity,
) -> (Instant, Vec<Outcome>) {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for session in &plan.sessions {
        let client = client.clone();
        let url = format!("{}/v1/chat/completions", target.url_for(&session.id));
        let session = session.clone();
        let system = Arc::clone(&plan.system);
        tasks.spawn(async move {
            tokio::time::sleep_until((start + session.start).into()).await;
            let mut messages = vec![json!({"role": "system", "content": &*system})];
            let mut outcomes = Vec::with_capacity(session.turns.len());
            for turn in &session.turns {
                messages.push(json!({"role": "user", "content": turn.user}));
                let header = (identity == Identity::Header).then_some(session.id.as_str());
                let (outcome, reply) =
                    send(&client, &url, &messages, turn.max_tokens, header).await;
                let ok = outcome.ok;
                outcomes.push(outcome);
                // A failed turn is retried by the agent as the next one: the history keeps what it had.
                if ok {
                    messages.push(json!({"role": "assistant", "content": reply}));
                } else {
                    messages.pop();
                }
                tokio::time::sleep(turn.think).await;
            }
            outcomes
        });
    }
    for (i, single) in plan.singles.iter().enumerate() {
        let client = client.clone();
        let url = format!(
            "{}/v1/chat/completions",
            target.url_for(&format!("single-{i}"))
        );
        let single = single.clone();
        let system = Arc::clone(&plan.system);
        tasks.spawn(async move {
            tokio::time::sleep_until((start + single.start).into()).await;
            let messages = [
                json!({"role": "system", "content": &*system}),
                json!({"role": "user", "content": single.user}),
            ];
            vec![
                send(&client, &url, &messages, single.max_tokens, None)
                    .await
                    .0,
            ]
        });
    }
    let mut outcomes = Vec::new();
    while let Some(done) = tasks.join_next().await {
        if let Ok(mut list) = done {
            outcomes.append(&mut list);
        }
    }
    (start, outcomes)
}

/// One streamed chat request: the outcome and the reply's text.
async fn send(
    client: &reqwest::Client,
    url: &str,
    messages: &[Value],
    max_tokens: u64,
    session: Option<&str>,
) -> (Outcome, String) {
    let body =
        json!({"model": "sim", "messages": messages, "max_tokens": max_tokens, "stream": true});
    let sent = Instant::now();
    let mut request = client.post(url).json(&body);
    if let Some(id) = session {
        request = request.header("x-session-id", id);
    }
    let mut outcome = Outcome {
        ttft: None,
        ok: false,
        status: 0,
        finished: sent,
    };
    let mut reply = String::new();
    let response = match request.send().await {
        Ok(response) => response,
        Err(_) => {
            outcome.finished = Instant::now();
            return (outcome, reply);
        }
    };
    outcome.status = response.status().as_u16();
    if outcome.status != 200 {
        outcome.finished = Instant::now();
        return (outcome, reply);
    }
    let mut pending: Vec<u8> = Vec::new();
    let mut bytes = response.bytes_stream();
    'read: while let Some(piece) = bytes.next().await {
        let Ok(piece) = piece else { break };
        pending.extend_from_slice(&piece);
        while let Some(end) = find(&pending, b"\n\n") {
            let event: Vec<u8> = pending.drain(..end + 2).collect();
            let Some(data) = event.strip_prefix(b"data: ") else {
                continue;
            };
            let data = &data[..data.len() - 2];
            if data == b"[DONE]" {
                outcome.ok = true;
                break 'read;
            }
            let Ok(chunk) = serde_json::from_slice::<Value>(data) else {
                continue;
            };
            if chunk.get("error").is_some() {
                break 'read;
            }
            if let Some(text) = chunk["choices"][0]["delta"]["content"].as_str() {
                if outcome.ttft.is_none() {
                    outcome.ttft = Some(sent.elapsed());
                }
                reply.push_str(text);
            }
        }
    }
    outcome.finished = Instant::now();
    (outcome, reply)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> WorkloadConfig {
        WorkloadConfig {
            sessions: 3,
            turns: 4,
            system_tokens: 100,
            user_tokens: (10, 20),
            output_tokens: (5, 9),
            think_ms: 10.0,
            arrival_s: 1.0,
            single_requests: 5,
            single_rate: 10.0,
            single_user_tokens: (10, 30),
            seed: 7,
        }
    }

    #[test]
    fn plans_are_reproducible_and_sized_as_asked() {
        let a = Plan::sessions(&cfg());
        let b = Plan::sessions(&cfg());
        assert_eq!(a.sessions.len(), 3);
        assert_eq!(a.requests(), 12);
        assert_eq!(a.system.len(), 100 * BYTES_PER_TOKEN);
        for (x, y) in a.sessions.iter().zip(&b.sessions) {
            assert_eq!(x.start, y.start);
            assert_eq!(x.turns[2].user, y.turns[2].user);
            let tokens = x.turns[0].user.len() / BYTES_PER_TOKEN;
            assert!((10..=20).contains(&tokens), "{tokens}");
        }
        assert_ne!(a.sessions[0].turns[0].user, a.sessions[1].turns[0].user);
        let singles = Plan::singles(&cfg());
        assert_eq!(singles.requests(), 5);
        assert!(singles.singles.windows(2).all(|w| w[0].start <= w[1].start));
    }
}
