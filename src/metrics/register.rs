//! The one way a metric comes to exist: built from its name, help and label names, and
//! registered, in one call. Every series of the proxy goes through `register`.

use prometheus::core::Collector;
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// Sub-millisecond (the proxy's own overhead) up to the 60 s upstream timeout; every proxy
/// histogram measures a latency in this range.
pub(super) const LATENCY_BUCKETS: &[f64] = &[
    0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0,
];

/// A metric type `register` can build: single series take no label names, vectors take them.
pub(super) trait Metric: Collector + Clone + Sized + 'static {
    fn build(opts: Opts, labels: &[&str]) -> prometheus::Result<Self>;
}

/// A single series: label names would be silently lost, so they are an error.
fn unlabelled(opts: &Opts, labels: &[&str]) -> prometheus::Result<()> {
    if labels.is_empty() {
        Ok(())
    } else {
        Err(prometheus::Error::Msg(format!(
            "{} is a single series but was given labels {labels:?}",
            opts.name
        )))
    }
}

fn latency(opts: Opts) -> HistogramOpts {
    HistogramOpts {
        common_opts: opts,
        buckets: LATENCY_BUCKETS.to_vec(),
    }
}

impl Metric for IntCounter {
    fn build(opts: Opts, labels: &[&str]) -> prometheus::Result<Self> {
        unlabelled(&opts, labels)?;
        IntCounter::with_opts(opts)
    }
}

impl Metric for IntGauge {
    fn build(opts: Opts, labels: &[&str]) -> prometheus::Result<Self> {
        unlabelled(&opts, labels)?;
        IntGauge::with_opts(opts)
    }
}

impl Metric for Gauge {
    fn build(opts: Opts, labels: &[&str]) -> prometheus::Result<Self> {
        unlabelled(&opts, labels)?;
        Gauge::with_opts(opts)
    }
}

impl Metric for Histogram {
    fn build(opts: Opts, labels: &[&str]) -> prometheus::Result<Self> {
        unlabelled(&opts, labels)?;
        Histogram::with_opts(latency(opts))
    }
}

impl Metric for IntCounterVec {
    fn build(opts: Opts, labels: &[&str]) -> prometheus::Result<Self> {
        IntCounterVec::new(opts, labels)
    }
}

impl Metric for IntGaugeVec {
    fn build(opts: Opts, labels: &[&str]) -> prometheus::Result<Self> {
        IntGaugeVec::new(opts, labels)
    }
}

impl Metric for GaugeVec {
    fn build(opts: Opts, labels: &[&str]) -> prometheus::Result<Self> {
        GaugeVec::new(opts, labels)
    }
}

impl Metric for HistogramVec {
    fn build(opts: Opts, labels: &[&str]) -> prometheus::Result<Self> {
        HistogramVec::new(latency(opts), labels)
    }
}

/// Builds the metric and registers it. A failure here is a fault in the proxy's own metric
/// definitions (an invalid name, labels on a single series, a name used twice), found the
/// first time the process starts, so it panics naming the metric rather than run without it.
pub(super) fn register<M: Metric>(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> M {
    M::build(Opts::new(name, help), labels)
        .and_then(|metric| {
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        })
        .unwrap_or_else(|e| panic!("metric {name}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(registry: &Registry) -> String {
        let mut out = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &registry.gather(),
            &mut out,
        )
        .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_registered_vector_is_scraped_with_its_help_and_labels() {
        let registry = Registry::new();
        let vec: IntCounterVec = register(&registry, "t_total", "Things.", &["account", "kind"]);
        vec.with_label_values(&["main", "a"]).inc();
        let text = render(&registry);
        assert!(text.contains("# HELP t_total Things.\n"), "{text}");
        assert!(text.contains("# TYPE t_total counter\n"), "{text}");
        assert!(
            text.contains("t_total{account=\"main\",kind=\"a\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn histograms_get_the_latency_buckets() {
        let registry = Registry::new();
        let single: Histogram = register(&registry, "t_seconds", "Time.", &[]);
        let vec: HistogramVec = register(&registry, "t_vec_seconds", "Time.", &["account"]);
        single.observe(0.001);
        vec.with_label_values(&["main"]).observe(0.001);
        let text = render(&registry);
        for name in ["t_seconds", "t_vec_seconds"] {
            let buckets = text
                .lines()
                .filter(|l| l.starts_with(&format!("{name}_bucket")))
                .count();
            // Every bound, plus +Inf.
            assert_eq!(buckets, LATENCY_BUCKETS.len() + 1, "{name}: {text}");
        }
        assert!(
            text.contains(r#"t_seconds_bucket{le="0.0002"} 0"#),
            "{text}"
        );
        assert!(text.contains(r#"t_seconds_bucket{le="60"} 1"#), "{text}");
    }

    #[test]
    #[should_panic(expected = "metric t_total")]
    fn a_single_series_refuses_label_names() {
        let _: IntCounter = register(&Registry::new(), "t_total", "Things.", &["account"]);
    }

    #[test]
    #[should_panic(expected = "metric t_total")]
    fn a_name_registers_once() {
        let registry = Registry::new();
        let _: IntGauge = register(&registry, "t_total", "Things.", &[]);
        let _: IntGauge = register(&registry, "t_total", "Things.", &[]);
    }
}
