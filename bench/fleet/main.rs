//! The fleet benchmark: simulated inference replicas (prefix caches, slots, queues; `sim.rs`), agent
//! sessions and single-turn traffic (`workload.rs`), sent through the release gateway once per balancing
//! strategy, or straight to the replicas by a client that pins each session to one replica by hash.
//!
//! Per cell (workload × strategy × round) the replicas start with empty caches, a fresh gateway starts
//! with a config written for the strategy, the workload runs, and the cell reports time to first token
//! (p50/p90/p99 over the requests that got one), the prefix-cache hit rate (cached prompt tokens ÷ prompt
//! tokens, over every replica), the makespan (first request sent to last one finished), failed requests
//! (no first token) and cut streams (a first token, then no `[DONE]`). The summary gives per workload and
//! strategy the median over rounds, the spread of p50 across rounds, and p50 against round robin's and
//! the fixed-replica client's.
//!
//! Workloads: `sessions` (agent sessions carrying `X-Session-ID`), `anonymous` (the same sessions with no
//! header and no `user`: affinity can only come from the prompt), `single` (independent single-turn
//! requests at a Poisson rate), `kill` (`sessions` with the last replica killed at `--kill-at-s` and
//! restarted, cold, at `--restart-at-s`).
//!
//! `bench/fleet.sh` builds and runs it; the model and its knobs are described in BENCHMARKS.md ("Fleet").

mod sim;
mod workload;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};

use sim::{Replica, SimConfig};
use workload::{Identity, Outcome, Plan, Target, WorkloadConfig};

#[derive(Parser, Debug)]
#[command(
    name = "fleet",
    about = "Balancing strategies against simulated inference replicas"
)]
struct Cli {
    /// The gateway binary to test.
    #[arg(long, default_value = "target/release/ai-gateway")]
    gateway: PathBuf,
    /// Where configs, gateway logs and results go.
    #[arg(long, default_value = "bench/out/fleet")]
    out: PathBuf,
    /// Replica i listens on port_base + 1 + i, the gateway on port_base.
    #[arg(long, default_value_t = 18300)]
    port_base: u16,
    #[arg(long, default_value_t = 4)]
    replicas: usize,
    /// Requests each replica runs at once; the rest queue.
    #[arg(long, default_value_t = 8)]
    slots: usize,
    #[arg(long, default_value_t = 16)]
    block_tokens: usize,
    /// Prefix-cache capacity of each replica, in tokens.
    #[arg(long, default_value_t = 120_000)]
    cache_tokens: usize,
    #[arg(long, default_value_t = 100.0)]
    prefill_us_per_token: f64,
    #[arg(long, default_value_t = 1000.0)]
    decode_us_per_token: f64,
    #[arg(long, default_value_t = 4)]
    chunk_tokens: usize,
    #[arg(long, default_value_t = 2000)]
    overhead_us: u64,
    #[arg(long, default_value_t = 64)]
    sessions: usize,
    #[arg(long, default_value_t = 6)]
    turns: usize,
    #[arg(long, default_value_t = 2000)]
    system_tokens: usize,
    /// Tokens of each user turn (tool output, instructions), uniform in MIN-MAX.
    #[arg(long, default_value = "100-600", value_parser = parse_range)]
    user_tokens: (u64, u64),
    #[arg(long, default_value = "50-200", value_parser = parse_range)]
    output_tokens: (u64, u64),
    /// Mean think time between a reply and the next turn (exponential).
    #[arg(long, default_value_t = 300.0)]
    think_ms: f64,
    /// Sessions start at uniform random offsets within this many seconds.
    #[arg(long, default_value_t = 2.0)]
    arrival_s: f64,
    #[arg(long, default_value_t = 600)]
    single_requests: usize,
    /// Single-turn requests per second (Poisson).
    #[arg(long, default_value_t = 130.0)]
    single_rate: f64,
    #[arg(long, default_value = "100-1500", value_parser = parse_range)]
    single_user_tokens: (u64, u64),
    /// Workloads to run, in order: sessions, anonymous, single, kill.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "sessions,anonymous,single,kill"
    )]
    workloads: Vec<String>,
    /// Strategies: `fixed` (no gateway), a `load_balancing` value, or `LABEL=YAML` where the YAML flow map
    /// is merged into the backend's config (e.g. `pa-prompt={load_balancing: prefix_affinity}`). Repeat
    /// the flag for each; the default is every built-in strategy.
    #[arg(long = "strategy")]
    strategies: Vec<String>,
    /// Rounds of the whole matrix; the summary takes the median per cell.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// `kill`: when the last replica dies and when it comes back (seconds after the start).
    #[arg(long, default_value_t = 2.5)]
    kill_at_s: f64,
    #[arg(long, default_value_t = 5.0)]
    restart_at_s: f64,
}

fn parse_range(text: &str) -> Result<(u64, u64), String> {
    let (lo, hi) = text.split_once('-').unwrap_or((text, text));
    let lo = lo
        .trim()
        .parse::<u64>()
        .map_err(|e| format!("'{text}': {e}"))?;
    let hi = hi
        .trim()
        .parse::<u64>()
        .map_err(|e| format!("'{text}': {e}"))?;
    if hi < lo {
        return Err(format!("'{text}': the range is empty"));
    }
    Ok((lo, hi))
}

/// One strategy of the matrix.
#[derive(Debug, Clone)]
struct Strategy {
    label: String,
    /// Merged into the backend's config; `None` for the fixed-replica client.
    backend: Option<Value>,
}

fn strategies(cli: &Cli) -> Result<Vec<Strategy>, String> {
    let specs: Vec<String> = if cli.strategies.is_empty() {
        [
            "fixed",
            "round_robin",
            "least_connections",
            "latency",
            "prefix_affinity",
        ]
        .map(str::to_owned)
        .to_vec()
    } else {
        cli.strategies.clone()
    };
    specs
        .iter()
        .map(|spec| {
            if spec == "fixed" {
                return Ok(Strategy {
                    label: spec.clone(),
                    backend: None,
                });
            }
            match spec.split_once('=') {
                None => Ok(Strategy {
                    label: spec.clone(),
                    backend: Some(json!({"load_balancing": spec})),
                }),
                Some((label, yaml)) => {
                    let value: Value = yaml_serde::from_str(yaml)
                        .map_err(|e| format!("strategy '{label}': {e}"))?;
                    if !value.is_object() {
                        return Err(format!(
                            "strategy '{label}': expected a YAML map, got {yaml}"
                        ));
                    }
                    Ok(Strategy {
                        label: label.to_owned(),
                        backend: Some(value),
                    })
                }
            }
        })
        .collect()
}

/// The measured result of one cell.
#[derive(Debug, Clone)]
struct Cell {
    workload: String,
    strategy: String,
    round: usize,
    requests: usize,
    failed: usize,
    cut: usize,
    p50: f64,
    p90: f64,
    p99: f64,
    hit: f64,
    makespan: f64,
    /// Requests each replica served.
    spread: Vec<u64>,
    /// Share of requests that waited for a replica slot.
    queued: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    percentile(values, 50.0)
}

struct Gateway {
    child: std::process::Child,
}

impl Gateway {
    async fn start(
        cli: &Cli,
        strategy: &Strategy,
        backend: &Value,
        label: &str,
    ) -> Result<Gateway, String> {
        let mut backend = backend.clone();
        if let (Some(map), Some(Value::Object(extra))) =
            (backend.as_object_mut(), &strategy.backend)
        {
            for (key, value) in extra {
                map.insert(key.clone(), value.clone());
            }
        }
        let config = json!({
            "server": {"host": "127.0.0.1", "port": cli.port_base},
            "logging": {"level": "warn", "access_log": false},
            "default_backend": "fleet",
            "backends": {"fleet": backend},
        });
        let path = cli.out.join(format!("{label}.yaml"));
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&config).unwrap_or_default(),
        )
        .map_err(|e| format!("{}: {e}", path.display()))?;
        let log = std::fs::File::create(cli.out.join(format!("{label}.log")))
            .map_err(|e| e.to_string())?;
        let child = std::process::Command::new(&cli.gateway)
            .arg("--config")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", cli.gateway.display()))?;
        let mut gateway = Gateway { child };
        let ready = format!("http://127.0.0.1:{}/health/ready", cli.port_base);
        let client = reqwest::Client::new();
        for _ in 0..500 {
            if client
                .get(&ready)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(gateway);
            }
            if let Ok(Some(status)) = gateway.child.try_wait() {
                return Err(format!("the gateway exited ({status}); see {label}.log"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        gateway.stop();
        Err("the gateway did not become ready within 10 s".to_owned())
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn run_cell(
    cli: &Cli,
    replicas: &[Arc<Replica>],
    workload: &str,
    strategy: &Strategy,
    plan: &Plan,
    round: usize,
) -> Result<Cell, String> {
    // Every cell starts on fresh replicas: no request or connection left from the last cell.
    for replica in replicas {
        replica.kill();
        replica
            .restart()
            .await
            .map_err(|e| format!("replica {}: {e}", replica.index))?;
        replica.reset();
    }
    let urls: Vec<String> = replicas
        .iter()
        .map(|r| format!("http://127.0.0.1:{}", r.port))
        .collect();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(1024)
        .build()
        .map_err(|e| e.to_string())?;
    // A fleet that has served this agent for a while holds its system prompt everywhere: one request
    // per replica puts it there, then the counters start from zero.
    for url in &urls {
        let body = json!({"model": "sim", "max_tokens": 1, "messages": [
            {"role": "system", "content": &*plan.system}, {"role": "user", "content": "warm-up"}]});
        let warmed = async {
            client
                .post(format!("{url}/v1/chat/completions"))
                .json(&body)
                .send()
                .await?
                .error_for_status()?
                .text()
                .await
        };
        warmed.await.map_err(|e| format!("warming up {url}: {e}"))?;
    }
    for replica in replicas {
        replica.reset_stats();
    }
    let backend = json!({
        "type": "openai",
        "instances": urls.iter().map(|u| json!({"url": format!("{u}/v1")})).collect::<Vec<_>>(),
        "timeout_s": 60,
        "retries": replicas.len().saturating_sub(1),
        "health": {"error_threshold": 2, "error_window_s": 10, "cooldown_s": 2},
    });
    let label = format!("{workload}-{}-r{round}", strategy.label);
    let mut gateway = None;
    let target = match &strategy.backend {
        None => Target::Fixed(urls),
        Some(_) => {
            gateway = Some(Gateway::start(cli, strategy, &backend, &label).await?);
            Target::Gateway(format!("http://127.0.0.1:{}", cli.port_base))
        }
    };
    let identity = if workload == "anonymous" {
        Identity::Anonymous
    } else {
        Identity::Header
    };
    let chaos = (workload == "kill").then(|| {
        let victim = Arc::clone(&replicas[replicas.len() - 1]);
        let (kill_at, restart_at) = (cli.kill_at_s, cli.restart_at_s);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(kill_at)).await;
            victim.kill();
            tokio::time::sleep(Duration::from_secs_f64((restart_at - kill_at).max(0.0))).await;
            let _ = victim.restart().await;
        })
    });
    let (start, outcomes) = workload::drive(&client, &target, plan, identity).await;
    if let Some(chaos) = chaos {
        let _ = chaos.await;
    }
    drop(gateway.take());
    Ok(summarize(
        workload, strategy, round, replicas, start, &outcomes,
    ))
}

fn summarize(
    workload: &str,
    strategy: &Strategy,
    round: usize,
    replicas: &[Arc<Replica>],
    start: Instant,
    outcomes: &[Outcome],
) -> Cell {
    let mut ttfts: Vec<f64> = outcomes
        .iter()
        .filter_map(|o| o.ttft.map(|t| t.as_secs_f64() * 1000.0))
        .collect();
    ttfts.sort_by(f64::total_cmp);
    let stats: Vec<_> = replicas.iter().map(|r| r.stats()).collect();
    let prompt: u64 = stats.iter().map(|s| s.prompt_tokens).sum();
    let cached: u64 = stats.iter().map(|s| s.cached_tokens).sum();
    let served: u64 = stats.iter().map(|s| s.requests).sum();
    let queued: u64 = stats.iter().map(|s| s.queued).sum();
    let last = outcomes.iter().map(|o| o.finished).max().unwrap_or(start);
    Cell {
        workload: workload.to_owned(),
        strategy: strategy.label.clone(),
        round,
        requests: outcomes.len(),
        failed: outcomes.iter().filter(|o| o.failed()).count(),
        cut: outcomes.iter().filter(|o| o.cut()).count(),
        p50: percentile(&ttfts, 50.0),
        p90: percentile(&ttfts, 90.0),
        p99: percentile(&ttfts, 99.0),
        hit: if prompt == 0 {
            0.0
        } else {
            cached as f64 / prompt as f64
        },
        makespan: last.duration_since(start).as_secs_f64(),
        spread: stats.iter().map(|s| s.requests).collect(),
        queued: if served == 0 {
            0.0
        } else {
            queued as f64 / served as f64
        },
    }
}

fn tsv_line(cell: &Cell) -> String {
    format!(
        "{}\t{}\t{}\t{}\t{}\t{}\t{:.1}\t{:.1}\t{:.1}\t{:.4}\t{:.3}\t{:.3}\t{}\n",
        cell.workload,
        cell.strategy,
        cell.round,
        cell.requests,
        cell.failed,
        cell.cut,
        cell.p50,
        cell.p90,
        cell.p99,
        cell.hit,
        cell.makespan,
        cell.queued,
        cell.spread
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join("/"),
    )
}

/// The summary table: per workload and strategy, medians over rounds.
fn summary(cells: &[Cell], workloads: &[String], strategies: &[Strategy], rounds: usize) -> String {
    let mut out = String::new();
    out.push_str(
        "| workload | strategy | requests | failed | cut | TTFT p50 ms | p90 ms | p99 ms | p50 range | p50 vs rr | p50 vs fixed | p99 vs fixed | cache hit | makespan s | queued | requests per replica |\n",
    );
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|\n");
    for workload in workloads {
        let of = |label: &str| -> Vec<&Cell> {
            cells
                .iter()
                .filter(|c| &c.workload == workload && c.strategy == label)
                .collect()
        };
        let med = |list: &[&Cell], f: fn(&Cell) -> f64| {
            median(&mut list.iter().map(|c| f(c)).collect::<Vec<_>>())
        };
        let rr = of("round_robin");
        let fixed = of("fixed");
        let rr_p50 = med(&rr, |c| c.p50);
        let fixed_p50 = med(&fixed, |c| c.p50);
        let fixed_p99 = med(&fixed, |c| c.p99);
        for strategy in strategies {
            let list = of(&strategy.label);
            if list.is_empty() {
                continue;
            }
            let p50 = med(&list, |c| c.p50);
            let p99 = med(&list, |c| c.p99);
            let (lo, hi) = list
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), c| {
                    (lo.min(c.p50), hi.max(c.p50))
                });
            let ratio = |a: f64, b: f64| {
                if b.is_finite() && b > 0.0 && a.is_finite() {
                    format!("{:.2}", a / b)
                } else {
                    "–".to_owned()
                }
            };
            let last = list[list.len() - 1];
            out.push_str(&format!(
                "| {workload} | {} | {} | {} | {} | {p50:.1} | {:.1} | {p99:.1} | {} | {} | {} | {} | {:.1}% | {:.2} | {:.1}% | {} |\n",
                strategy.label,
                last.requests,
                list.iter().map(|c| c.failed).sum::<usize>(),
                list.iter().map(|c| c.cut).sum::<usize>(),
                med(&list, |c| c.p90),
                if rounds > 1 { format!("{lo:.1}–{hi:.1}") } else { "–".to_owned() },
                ratio(p50, rr_p50),
                ratio(p50, fixed_p50),
                ratio(p99, fixed_p99),
                med(&list, |c| c.hit) * 100.0,
                med(&list, |c| c.makespan),
                med(&list, |c| c.queued) * 100.0,
                last.spread.iter().map(u64::to_string).collect::<Vec<_>>().join("/"),
            ));
        }
    }
    out
}

fn write(path: &Path, text: &str) {
    if let Err(e) = std::fs::write(path, text) {
        eprintln!("fleet: cannot write {}: {e}", path.display());
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // reqwest is built without a default TLS provider (the gateway brings ring); plain HTTP here.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    if let Err(message) = run(&cli).await {
        eprintln!("fleet: {message}");
        std::process::exit(1);
    }
}

async fn run(cli: &Cli) -> Result<(), String> {
    std::fs::create_dir_all(&cli.out).map_err(|e| format!("{}: {e}", cli.out.display()))?;
    let strategies = strategies(cli)?;
    let sim = SimConfig {
        slots: cli.slots,
        block_tokens: cli.block_tokens,
        cache_blocks: cli.cache_tokens / cli.block_tokens.max(1),
        prefill_us_per_token: cli.prefill_us_per_token,
        decode_us_per_token: cli.decode_us_per_token,
        chunk_tokens: cli.chunk_tokens.max(1),
        overhead_us: cli.overhead_us,
    };
    let mut replicas = Vec::new();
    for i in 0..cli.replicas {
        let port = cli.port_base + 1 + i as u16;
        replicas.push(
            Replica::start(i, port, sim.clone())
                .await
                .map_err(|e| format!("replica {i} on port {port}: {e}"))?,
        );
    }
    let workload_cfg = WorkloadConfig {
        sessions: cli.sessions,
        turns: cli.turns,
        system_tokens: cli.system_tokens,
        user_tokens: cli.user_tokens,
        output_tokens: cli.output_tokens,
        think_ms: cli.think_ms,
        arrival_s: cli.arrival_s,
        single_requests: cli.single_requests,
        single_rate: cli.single_rate,
        single_user_tokens: cli.single_user_tokens,
        seed: cli.seed,
    };
    let sessions = Plan::sessions(&workload_cfg);
    let singles = Plan::singles(&workload_cfg);
    let mut header = format!(
        "fleet: {} replicas × {} slots, cache {} tokens each (blocks of {}), prefill {} µs/token, decode {} µs/token, overhead {} µs\n",
        cli.replicas,
        cli.slots,
        cli.cache_tokens,
        cli.block_tokens,
        cli.prefill_us_per_token,
        cli.decode_us_per_token,
        cli.overhead_us
    );
    header.push_str(&format!(
        "sessions: {} × {} turns, system prompt {} tokens, user turns {}-{} tokens, replies {}-{} tokens, think {} ms (mean), arrivals over {} s; single: {} requests at {}/s, user {}-{} tokens\n",
        cli.sessions, cli.turns, cli.system_tokens, cli.user_tokens.0, cli.user_tokens.1, cli.output_tokens.0,
        cli.output_tokens.1, cli.think_ms, cli.arrival_s, cli.single_requests, cli.single_rate,
        cli.single_user_tokens.0, cli.single_user_tokens.1
    ));
    header.push_str(&format!(
        "requests per cell: sessions {}, single {}\n",
        sessions.requests(),
        singles.requests()
    ));
    eprint!("{header}");
    let mut cells = Vec::new();
    let mut tsv = String::from(
        "workload\tstrategy\tround\trequests\tfailed\tcut\tp50_ms\tp90_ms\tp99_ms\thit\tmakespan_s\tqueued\tper_replica\n",
    );
    let started = Instant::now();
    for round in 1..=cli.rounds.max(1) {
        for workload in &cli.workloads {
            let plan = match workload.as_str() {
                "sessions" | "anonymous" | "kill" => &sessions,
                "single" => &singles,
                other => {
                    return Err(format!(
                        "unknown workload '{other}'; expected sessions, anonymous, single or kill"
                    ));
                }
            };
            for strategy in &strategies {
                if workload == "kill" && strategy.backend.is_none() {
                    continue; // the fixed-replica client has no fail-over to measure
                }
                let cell = run_cell(cli, &replicas, workload, strategy, plan, round).await?;
                eprint!("round {round} {}", tsv_line(&cell));
                tsv.push_str(&tsv_line(&cell));
                cells.push(cell);
                write(&cli.out.join("results.tsv"), &tsv);
            }
        }
    }
    let table = summary(&cells, &cli.workloads, &strategies, cli.rounds.max(1));
    let text = format!(
        "{header}rounds: {}, wall time {:.0} s\n\n{table}",
        cli.rounds.max(1),
        started.elapsed().as_secs_f64()
    );
    write(&cli.out.join("results.md"), &text);
    let _ = std::io::stdout().write_all(text.as_bytes());
    Ok(())
}
