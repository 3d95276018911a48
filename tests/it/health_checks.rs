//! Optional active health checks: `GET <url>/models` every `check_interval_s` feeds each instance's
//! breaker, so a dead instance is ejected (and a live one kept) without any client traffic.

use std::time::Duration;

use crate::support::Gateway;
use crate::support::mock::{Mock, refused_base};

#[tokio::test]
async fn a_dead_instance_is_ejected_by_active_checks_without_traffic() {
    let mock = Mock::start().await;
    let dead = refused_base().await;
    let gateway = Gateway::start(&format!(
        "backends:\n  pool:\n    type: openai\n    instances: [{{ url: '{}' }}, {{ url: '{dead}' }}]\n    health: {{ error_threshold: 2, error_window_s: 30, cooldown_s: 60, check_interval_s: 0.1 }}\n",
        mock.base()
    ))
    .await;
    let mut states = (String::new(), String::new());
    for _ in 0..100 {
        let body = gateway.get_json("/health").await;
        let instances = &body["backends"]["pool"]["instances"];
        states = (
            instances[0]["state"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            instances[1]["state"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
        if states.1 == "open" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        states,
        ("closed".to_owned(), "open".to_owned()),
        "the dead instance was not ejected"
    );
    assert!(
        mock.requests().is_empty(),
        "health checks are GETs, not API requests"
    );
}
