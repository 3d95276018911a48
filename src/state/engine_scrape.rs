//! The background task that scrapes each instance's engine metrics (`engine_load:`) at its interval
//! and stores the reading beside the instance; what a reading says is `routing::engine_load`'s.

use std::time::{Duration, Instant};

use crate::routing::engine_load::{
    MAX_SCRAPE_BYTES, combine, parse_metrics, parse_slots, server_root,
};

/// Releases an instance's scrape claim however its task ends.
struct Scraping(std::sync::Arc<crate::routing::instances::InstanceState>);

impl Drop for Scraping {
    fn drop(&mut self) {
        self.0.engine.end_scrape();
    }
}

/// Scrapes every instance of every backend with `engine_load:` at its interval, for as long as the state
/// lives. Reads the current snapshot each round, so reloads take effect; one scrape per instance at a time.
pub async fn scrape(state: super::WeakAppState) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: std::collections::HashMap<(String, String), Instant> =
        std::collections::HashMap::new();
    loop {
        tick.tick().await;
        let Some(app) = state.upgrade() else { return };
        let snapshot = app.snapshot();
        for (backend, runtime) in snapshot.config.backends.iter().zip(&snapshot.backends) {
            let Some(cfg) = &backend.engine_load else {
                continue;
            };
            for (instance, live) in backend.instances.iter().zip(&runtime.instances) {
                let now = Instant::now();
                let key = (backend.name.clone(), instance.base_url.clone());
                if last
                    .get(&key)
                    .is_some_and(|at| now.duration_since(*at) < cfg.interval())
                {
                    continue;
                }
                if !live.engine.begin_scrape() {
                    continue;
                }
                last.insert(key, now);
                let root = server_root(&instance.base_url);
                let metrics = (!cfg.metrics_path.is_empty())
                    .then(|| {
                        super::instance_get(
                            backend,
                            instance,
                            &format!("{root}{}", cfg.metrics_path),
                        )
                    })
                    .flatten();
                let slots = cfg
                    .slots
                    .then(|| super::instance_get(backend, instance, &format!("{root}/slots")))
                    .flatten();
                let (app, cfg) = (app.clone(), cfg.clone());
                let scraping = Scraping(std::sync::Arc::clone(live));
                let (backend_name, shown) = (backend.name.clone(), instance.display.clone());
                tokio::spawn(async move {
                    // Our in-flight count around the scrape: the engine counted at some moment between.
                    let before = scraping.0.in_flight();
                    let client = app.client();
                    let get = |request: Option<http::Request<bytes::Bytes>>| async {
                        let response = client.send_within(request?, cfg.timeout()).await.ok()?;
                        if !response.status().is_success() {
                            return None;
                        }
                        let body = tokio::time::timeout(
                            cfg.timeout(),
                            crate::upstream::client::read_body(
                                response.into_body(),
                                MAX_SCRAPE_BYTES,
                            ),
                        )
                        .await
                        .ok()?
                        .ok()?;
                        Some(body)
                    };
                    let metrics = get(metrics).await;
                    let slots = get(slots).await;
                    let scraped = metrics
                        .as_deref()
                        .and_then(|body| std::str::from_utf8(body).ok())
                        .map(parse_metrics);
                    let view = combine(scraped, slots.as_deref().and_then(parse_slots));
                    if let Some(view) = view {
                        // The larger one: requests of ours that ended while the answer travelled must not
                        // be taken for others' load.
                        let in_flight = scraping.0.in_flight().max(before);
                        scraping
                            .0
                            .engine
                            .store(view, in_flight, Instant::now(), cfg.interval());
                        app.metrics().engine_load(&backend_name, &shown, &view);
                    }
                    drop(scraping);
                });
            }
        }
    }
}
