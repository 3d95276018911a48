//! The text expositions of the registry: OpenMetrics as prometheus-client writes it, and the classic
//! Prometheus text format converted from it.

use prometheus_client::encoding::text::encode;

use super::Metrics;

impl Metrics {
    /// Renders the classic Prometheus text exposition (format 0.0.4), which `promtool check metrics`
    /// accepts without lint findings; serve it with [`Metrics::content_type`].
    pub fn render(&self) -> String {
        to_prometheus_text(&self.render_openmetrics())
    }

    /// The content type matching [`Metrics::render`].
    pub fn content_type() -> &'static str {
        "text/plain; version=0.0.4; charset=utf-8"
    }

    /// Renders the OpenMetrics text exposition (ends with `# EOF`), for scrapers that ask for it with
    /// `Accept: application/openmetrics-text`; serve it with [`Metrics::openmetrics_content_type`].
    pub(crate) fn render_openmetrics(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        if let Err(err) = encode(&mut out, &self.registry) {
            // Writing into a String cannot fail; an encoder error would be a bug in a label encoder.
            tracing::error!(error = %err, "metrics encoding failed");
        }
        out
    }

    /// The content type matching [`Metrics::render_openmetrics`].
    pub(crate) fn openmetrics_content_type() -> &'static str {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    }
}

/// Converts prometheus-client's OpenMetrics text into the classic Prometheus text format.
///
/// The two differ only where this touches: OpenMetrics names a counter family without `_total` in its
/// `# HELP`/`# TYPE` lines (classic parsers then see samples without help or type), and ends with
/// `# EOF`. Label and value syntax are the same. Runs per scrape, not per request.
fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let descriptor = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        if let Some((prefix, rest)) = descriptor
            && let Some((name, tail)) = rest.split_once(' ')
            && counters.contains(name)
        {
            out.push_str(prefix);
            out.push_str(name);
            out.push_str("_total ");
            out.push_str(tail);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}
