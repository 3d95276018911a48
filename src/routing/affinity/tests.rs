//! Tests of prefix and session affinity: keys, rendezvous homes, placement, session tables.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderMap;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::config::*;
use super::key::*;
use super::rendezvous::*;
use super::sessions::*;
use super::*;
use crate::protocol::{ApiRequest, ChatRequest, Message, Part, Role};

fn up(n: usize) -> Vec<InstanceView> {
    vec![
        InstanceView {
            usable: true,
            ..InstanceView::default()
        };
        n
    ]
}

fn affinity(n: usize) -> Affinity {
    let urls: Vec<String> = (0..n)
        .map(|i| format!("http://10.0.0.{i}:8000/v1"))
        .collect();
    let refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    Affinity::new(
        "vllm",
        &AffinityConfig::default(),
        &refs,
        &vec![1; n],
        Arc::new(SessionTable::new(1000)),
        &StateStore::memory(),
        "aigw",
    )
}

/// A key for a later turn of session `i` (it has history).
fn key(i: u64) -> Option<AffinityKey> {
    Some(AffinityKey {
        hash: xxh3_64_with_seed(&i.to_le_bytes(), 1),
        source: KeySource::Header,
        fresh: false,
    })
}

/// A key for the first turn of session `i`.
fn fresh(i: u64) -> Option<AffinityKey> {
    key(i).map(|k| AffinityKey { fresh: true, ..k })
}

fn chat(system: &str, messages: &[(Role, &str)]) -> ApiRequest {
    ApiRequest::Chat(ChatRequest {
        system: if system.is_empty() {
            vec![]
        } else {
            vec![system.into()]
        },
        messages: messages
            .iter()
            .map(|(role, text)| Message {
                role: *role,
                parts: vec![Part::Text((*text).into())],
                name: None,
            })
            .collect(),
        ..ChatRequest::default()
    })
}

#[test]
fn keys_come_from_header_then_user_then_prompt() {
    let rules = AffinityRules::new(&AffinityConfig::default());
    let request = chat("sys", &[(Role::User, "hello")]);
    let mut headers = HeaderMap::new();
    let prompt = rules.key(&headers, &request).unwrap();
    assert_eq!(prompt.source, KeySource::Prompt);
    headers.insert("x-claude-code-session-id", "abc".parse().unwrap());
    let header = rules.key(&headers, &request).unwrap();
    assert_eq!(header.source, KeySource::Header);
    // The first configured header present wins; an over-long value is no key.
    headers.insert("x-session-id", "s-1".parse().unwrap());
    assert_ne!(rules.key(&headers, &request).unwrap(), header);
    headers.insert("x-session-id", "x".repeat(300).parse().unwrap());
    assert_eq!(rules.key(&headers, &request).unwrap(), header);

    let ApiRequest::Chat(mut with_user) = request.clone() else {
        unreachable!()
    };
    with_user.user = Some("user_1_account_2_session_3".into());
    let user = rules
        .key(&HeaderMap::new(), &ApiRequest::Chat(with_user))
        .unwrap();
    assert_eq!(user.source, KeySource::User);

    let off = AffinityRules::new(&AffinityConfig {
        prompt: PromptKey::Off,
        user_field: false,
        ..AffinityConfig::default()
    });
    assert_eq!(off.key(&HeaderMap::new(), &request), None);
    let custom = AffinityRules::new(&AffinityConfig {
        headers: vec!["X-Conversation".into()],
        ..AffinityConfig::default()
    });
    let mut h = HeaderMap::new();
    h.insert("x-session-id", "ignored".parse().unwrap());
    assert_eq!(custom.key(&h, &request), Some(prompt));
    h.insert("x-conversation", "c".parse().unwrap());
    assert_eq!(custom.key(&h, &request).unwrap().source, KeySource::Header);
}

#[test]
fn the_prompt_key_stays_the_same_as_the_conversation_grows() {
    let rules = AffinityRules::new(&AffinityConfig::default());
    let system = "You are a coding agent. ".repeat(400);
    let first = chat(&system, &[(Role::User, "fix the bug in main.rs")]);
    let later = chat(
        &system,
        &[
            (Role::User, "fix the bug in main.rs"),
            (Role::Assistant, "done"),
            (Role::User, "now add a test"),
        ],
    );
    let other = chat(&system, &[(Role::User, "write a README")]);
    let h = HeaderMap::new();
    let hash = |request: &ApiRequest| rules.key(&h, request).unwrap().hash;
    assert_eq!(hash(&first), hash(&later));
    assert_ne!(hash(&first), hash(&other));
    // The first turn has nothing beyond its leading content; the later one has history.
    assert!(rules.key(&h, &first).unwrap().fresh);
    assert!(!rules.key(&h, &later).unwrap().fresh);
    // A change anywhere in a long system prompt's middle is not read (bounded), at its end it is.
    let mut tail = system.clone();
    tail.push_str("cwd: /tmp");
    assert_ne!(
        rules.key(&h, &chat(&tail, &[(Role::User, "fix the bug in main.rs")])),
        rules.key(&h, &first)
    );
}

#[test]
fn homes_are_spread_evenly() {
    let a = affinity(4);
    let views = up(4);
    let now = Instant::now();
    let mut counts = [0usize; 4];
    for k in 0..8000 {
        let (order, decision) = a.order(&views, now, key(k), None);
        assert_eq!(decision, Decision::Home);
        counts[order[0]] += 1;
    }
    for c in counts {
        assert!((1700..2300).contains(&c), "{counts:?}");
    }
}

#[test]
fn weights_shift_the_share_of_keys() {
    let mut a = affinity(2);
    a.weights = vec![3, 1].into();
    let views = up(2);
    let now = Instant::now();
    let first = (0..4000)
        .filter(|&k| a.order(&views, now, key(k), None).0[0] == 0)
        .count();
    assert!((2800..3200).contains(&first), "{first}");
    // `home` is the first of `rank`, weighted or not.
    for k in 0..200 {
        let hash = key(k).unwrap().hash;
        for weights in [&[3u32, 1][..], &[1, 1]] {
            assert_eq!(
                home(hash, &a.ids, weights),
                Some(rank(hash, &a.ids, weights)[0])
            );
        }
    }
}

#[test]
fn removing_an_instance_moves_only_its_keys_and_adding_one_moves_a_fair_share() {
    let urls: Vec<u64> = (0..5)
        .map(|i| instance_id(&format!("http://h{i}:8000/v1")))
        .collect();
    let keys: Vec<u64> = (0..5000).map(|k| key(k).unwrap().hash).collect();
    let home = |ids: &[u64], k: u64| ids[rank(k, ids, &[])[0]];
    let four = &urls[..4];
    let mut moved = 0;
    for &k in &keys {
        let before = home(&urls, k);
        let after = home(four, k);
        if before != urls[4] {
            assert_eq!(before, after, "a key whose home stayed was moved");
        } else {
            moved += 1;
        }
    }
    assert!((800..1200).contains(&moved), "{moved}");
    // The keys the fifth instance takes when it joins come evenly from the other four.
    let mut taken = [0usize; 4];
    for &k in &keys {
        if home(&urls, k) == urls[4] {
            let was = four.iter().position(|&id| id == home(four, k)).unwrap();
            taken[was] += 1;
        }
    }
    assert!(taken.iter().all(|&t| (150..350).contains(&t)), "{taken:?}");
}

#[test]
fn bounded_load_moves_a_busy_home_to_the_least_loaded() {
    let a = affinity(4);
    let now = Instant::now();
    let home = a.order(&up(4), now, key(42), None).0[0];
    let [second, third, fourth] = [1, 2, 3].map(|d| (home + d) % 4);
    let mut views = up(4);
    views[home].in_flight = 3;
    views[second].in_flight = 2;
    views[third].in_flight = 1;
    // A first turn: the bound is ⌈1 × (6 + 1) / 4⌉ = 2 and the home has 3 — the least loaded takes it.
    let (order, decision) = a.order(&views, now, fresh(42), None);
    assert_eq!((order[0], decision), (fourth, Decision::Placed));
    assert!(order.contains(&home));
    // A later turn stays: its bound is ⌈2 × 7 / 4⌉ = 4.
    let (order, decision) = a.order(&views, now, key(42), None);
    assert_eq!((order[0], decision), (home, Decision::Home));
    // Beyond that it moves too.
    views[home].in_flight = 6;
    views[second].in_flight = 1;
    let (order, decision) = a.order(&views, now, key(42), None);
    assert_eq!((order[0], decision), (fourth, Decision::Overflow));
    // A home that reports a free slot is not busy: a later turn stays however loaded it is.
    views[home].cap = Some(8);
    views[home].in_flight = 7;
    assert_eq!(a.order(&views, now, key(42), None).1, Decision::Home);
    views[home].in_flight = 8;
    assert_eq!(a.order(&views, now, key(42), None).1, Decision::Overflow);
    // A fresh request is placed by load whatever the slots say…
    views[home].in_flight = 7;
    assert_eq!(a.order(&views, now, fresh(42), None).1, Decision::Placed);
    // …and within the bound it still avoids a full home while another instance has a free slot.
    let mut views = up(4);
    for v in &mut views {
        v.cap = Some(2);
        v.in_flight = 1;
    }
    views[home].in_flight = 2;
    assert_eq!(a.order(&views, now, fresh(42), None).1, Decision::Placed);
    views[home].in_flight = 1;
    assert_eq!(
        a.order(&views, now, fresh(42), None),
        (a.order(&views, now, fresh(42), None).0, Decision::Home)
    );
}

#[test]
fn least_loaded_placement_fills_the_emptiest_and_prefers_home_on_ties() {
    let urls = ["http://a/v1", "http://b/v1", "http://c/v1"];
    let a = Affinity::new(
        "vllm",
        &AffinityConfig {
            placement: Placement::LeastLoaded,
            ..AffinityConfig::default()
        },
        &urls,
        &[1, 1, 1],
        Arc::new(SessionTable::new(100)),
        &StateStore::memory(),
        "aigw",
    );
    let now = Instant::now();
    for k in 0..50 {
        let home = a.order(&up(3), now, key(k), None).0[0];
        // All idle: home.
        assert_eq!(
            a.order(&up(3), now, fresh(k), None),
            (a.order(&up(3), now, fresh(k), None).0, Decision::Home)
        );
        assert_eq!(a.order(&up(3), now, fresh(k), None).0[0], home);
        let mut views = up(3);
        views[home].in_flight = 1;
        let (order, decision) = a.order(&views, now, fresh(k), None);
        assert_ne!(order[0], home);
        assert_eq!(decision, Decision::Placed);
        // A later turn is not placed by load.
        assert_eq!(a.order(&views, now, key(k), None).0[0], home);
    }
}

#[test]
fn bounded_load_keeps_every_instance_within_the_factor_of_the_mean() {
    // Many keys whose homes pile up: hand out 400 long requests one by one, none finishing.
    let a = affinity(4);
    let now = Instant::now();
    for (factor, make) in [(1.0, fresh as fn(u64) -> Option<AffinityKey>), (2.0, key)] {
        let mut views = up(4);
        for k in 0..400u64 {
            // Only 10 distinct sessions: their homes are uneven by construction.
            let (order, _) = a.order(&views, now, make(k % 10), None);
            views[order[0]].in_flight += 1;
            let total: u64 = views.iter().map(|v| v.in_flight).sum();
            let max = views.iter().map(|v| v.in_flight).max().unwrap();
            let bound = (factor * total as f64 / 4.0).ceil() as u64;
            assert!(
                max <= bound,
                "max {max} above {factor} × the mean at total {total}: {views:?}"
            );
        }
    }
}

#[test]
fn an_ejected_home_moves_its_sessions_and_few_move_back() {
    let a = affinity(4);
    let t0 = Instant::now();
    let keys: Vec<_> = (0..400).map(key).collect();
    let homes: Vec<usize> = keys
        .iter()
        .map(|&k| a.order(&up(4), t0, k, None).0[0])
        .collect();
    let mut views = up(4);
    views[2].usable = false;
    views[2].retry_at = Some(t0 + Duration::from_secs(30));
    let mut moved = 0;
    for (i, &k) in keys.iter().enumerate() {
        let sticky = block_on(a.lookup(k, None, t0));
        let (order, decision) = a.order(&views, t0, k, sticky);
        assert_ne!(order[0], 2);
        assert_eq!(
            *order.last().unwrap(),
            2,
            "the ejected instance is tried last"
        );
        if homes[i] == 2 {
            assert_eq!(decision, Decision::Failover);
            moved += 1;
        } else {
            assert_eq!(
                (order[0], decision),
                (homes[i], Decision::Home),
                "only the ejected instance's keys move"
            );
        }
        a.served_(k, sticky, order[0], t0);
    }
    assert!(moved > 50, "{moved}");
    assert_eq!(a.remembered(), keys.len());
    // Instance 2 is back: the moved sessions stay where their cache now is; the others never moved.
    let t1 = t0 + Duration::from_secs(60);
    let mut back = 0;
    for (i, &k) in keys.iter().enumerate() {
        let sticky = block_on(a.lookup(k, None, t1));
        let (order, decision) = a.order(&up(4), t1, k, sticky);
        if order[0] == 2 {
            back += 1;
        }
        if homes[i] == 2 {
            assert_eq!(decision, Decision::Sticky);
        }
    }
    assert_eq!(back, 0);
    // New sessions do go to it.
    let new_home = (1000..1100)
        .filter(|&k| a.order(&up(4), t1, key(k), None).0[0] == 2)
        .count();
    assert!(new_home > 10, "{new_home}");
    // Entries expire after the TTL: then the key goes home again.
    let late = t1 + Duration::from_secs(7200);
    let k = keys[homes.iter().position(|&h| h == 2).unwrap()];
    assert_eq!(block_on(a.lookup(k, None, late)), None);
}

#[test]
fn a_side_request_of_a_session_does_not_move_it() {
    let a = affinity(3);
    let now = Instant::now();
    let home = a.order(&up(3), now, key(7), None).0[0];
    let elsewhere = (home + 1) % 3;
    // A later turn served away from home (moved by load): remembered.
    a.served_(key(7), None, elsewhere, now);
    assert_eq!(block_on(a.lookup(key(7), None, now)), Some(elsewhere));
    // A one-message request with the same session header (a title, a summary) served at home: the
    // session stays where its cache is.
    a.served_(fresh(7), Some(elsewhere), home, now);
    assert_eq!(block_on(a.lookup(key(7), None, now)), Some(elsewhere));
    // A later turn at home is remembered too, so a side request cannot move a session that never moved.
    a.served_(key(8), None, a.order(&up(3), now, key(8), None).0[0], now);
    assert!(block_on(a.lookup(key(8), None, now)).is_some());
    // A new conversation placed off its home is remembered; one served at home needs no entry.
    let before = a.remembered();
    let home9 = a.order(&up(3), now, key(9), None).0[0];
    a.served_(fresh(9), None, home9, now);
    assert_eq!(a.remembered(), before);
    a.served_(fresh(9), None, (home9 + 1) % 3, now);
    assert_eq!(block_on(a.lookup(key(9), None, now)), Some((home9 + 1) % 3));
}

#[test]
fn unkeyed_requests_go_to_the_least_loaded() {
    let a = affinity(3);
    let mut views = up(3);
    views[0].in_flight = 2;
    views[1].in_flight = 1;
    views[2].in_flight = 3;
    let (order, decision) = a.order(&views, Instant::now(), None, None);
    assert_eq!((order[0], decision), (1, Decision::Unkeyed));
}

impl Affinity {
    /// `served` without prefix blocks.
    fn served_(&self, key: Option<AffinityKey>, sticky: Option<usize>, index: usize, now: Instant) {
        self.served(key, None, sticky, index, now);
    }
}

#[test]
fn the_prefix_index_follows_a_conversation_but_not_a_shared_system_prompt() {
    let urls = ["http://a/v1", "http://b/v1", "http://c/v1"];
    let cfg = AffinityConfig {
        prompt: PromptKey::Index,
        ..AffinityConfig::default()
    };
    let a = Affinity::new(
        "vllm",
        &cfg,
        &urls,
        &[1, 1, 1],
        Arc::new(SessionTable::new(1000)),
        &StateStore::memory(),
        "aigw",
    );
    let now = Instant::now();
    let system = "shared agent instructions ".repeat(200);
    let question = "refactor the parser please ".repeat(80);
    let first = chat(&system, &[(Role::User, &question)]);
    let blocks = a.rules.blocks(&first).unwrap();
    assert!(
        blocks.hashes.len() >= 6 && blocks.conversation_from >= 4,
        "{blocks:?}"
    );
    assert_eq!(block_on(a.lookup(None, Some(&blocks), now)), None);
    a.served(
        a.rules.key(&HeaderMap::new(), &first),
        Some(&blocks),
        None,
        2,
        now,
    );
    // The next turn holds the first one's prompt as its prefix: instance 2.
    let later = chat(
        &system,
        &[
            (Role::User, &question),
            (Role::Assistant, "done"),
            (Role::User, "thanks"),
        ],
    );
    let later_blocks = a.rules.blocks(&later).unwrap();
    assert_eq!(
        &later_blocks.hashes[..blocks.hashes.len()],
        &blocks.hashes[..]
    );
    assert_eq!(block_on(a.lookup(None, Some(&later_blocks), now)), Some(2));
    // Another conversation shares only the system prompt: no preference.
    let other = chat(&system, &[(Role::User, &"write docs ".repeat(300))]);
    assert_eq!(
        block_on(a.lookup(None, a.rules.blocks(&other).as_ref(), now)),
        None
    );
    // Without `prompt: index` there are no blocks.
    assert_eq!(
        AffinityRules::new(&AffinityConfig::default()).blocks(&first),
        None
    );
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}
