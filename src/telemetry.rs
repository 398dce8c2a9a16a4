//! Tracing subscriber and OpenTelemetry export: [`get_subscriber`] builds it, [`init_subscriber`]
//! installs it, and the [`TelemetryGuard`] must live until exit so buffered spans are exported.

use anyhow::Context as _;
use opentelemetry::{KeyValue, trace::TracerProvider as _};
use opentelemetry_otlp::{SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing::Subscriber;
use tracing_subscriber::fmt::{self, MakeWriter};
use tracing_subscriber::{EnvFilter, Registry, prelude::*};

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Multi-line, human-readable output for a developer's terminal.
    Pretty,
    /// One JSON object per line, with the fields of the current span and its parents.
    Json,
}

/// Everything [`get_subscriber`] needs to know; filled in from the configuration.
#[derive(Clone, Debug)]
pub struct TelemetrySettings {
    /// How log lines are written.
    pub log_format: LogFormat,
    /// `RUST_LOG`-style directives, e.g. `info,mfa_reset=debug`; `RUST_LOG`, when set, wins.
    pub log_filter: String,
    /// Whether traces may be exported at all (the server's; not the one-shot subcommands').
    pub export_traces: bool,
    /// OTLP/gRPC collector to export traces to, e.g. `http://127.0.0.1:4317`; `None`: the
    /// standard `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, if set,
    /// else no export.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` resource attribute the exported traces carry, unless
    /// `OTEL_SERVICE_NAME` names another.
    pub service_name: String,
    /// Colours in pretty logs (only when writing to a terminal).
    pub ansi: bool,
    /// Whether to record metrics at all (the server does; one-shot subcommands do not). They
    /// are exported where traces are, and served to Prometheus when `prometheus` is set.
    pub metrics: bool,
    /// Serve metrics in Prometheus' format (`--metrics-listen`).
    pub prometheus: bool,
}

/// Where spans go: the configured endpoint, the standard environment's, or nowhere.
#[derive(Debug, PartialEq, Eq)]
enum Export {
    Off,
    To(String),
    FromEnvironment,
}

impl Export {
    /// Where `signal` (`TRACES`, `METRICS`) goes: the flag, else the standard
    /// `OTEL_EXPORTER_OTLP_<signal>_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`.
    /// `OTEL_SDK_DISABLED=true` turns export off whatever else is set.
    fn choose(
        signal: &str,
        configured: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Export {
        let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Export::Off;
        }
        match configured {
            Some(endpoint) => Export::To(endpoint.to_string()),
            None if set(&format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")).is_some()
                || set("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() =>
            {
                Export::FromEnvironment
            }
            None => Export::Off,
        }
    }
}

/// Shuts the OpenTelemetry tracer provider down, flushing buffered spans, on
/// [`TelemetryGuard::shutdown`] or on drop; a no-op when OTLP export is off. Shutting down blocks
/// the thread (at most 5 s, the SDK default) while the exporter, which runs on the Tokio runtime,
/// sends the last batch: do it on a multi-threaded runtime or in `spawn_blocking`.
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    _metrics: crate::metrics::MetricsGuard,
}

impl TelemetryGuard {
    /// Flushes buffered spans and shuts the tracer provider down, reporting any failure.
    pub fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop().context("shutting down trace export")
    }

    fn stop(&mut self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.provider.take().map_or(Ok(()), |p| p.shutdown())
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            eprintln!("failed to shut down OpenTelemetry trace export: {error}");
        }
    }
}

/// Builds the subscriber: an [`EnvFilter`], a pretty or JSON formatter writing to `sink`, and,
/// when `settings.otlp_endpoint` is set, a layer exporting spans over OTLP/gRPC. Without OTLP
/// this needs no Tokio runtime; with OTLP it must be called inside the service's Tokio runtime
/// (the gRPC channel is bound to it) and fails outside one. The collector is dialled lazily.
pub fn get_subscriber<W>(
    settings: &TelemetrySettings,
    sink: W,
) -> anyhow::Result<(impl Subscriber + Send + Sync + use<W>, TelemetryGuard)>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = env_filter(rust_log.as_deref(), &settings.log_filter)?;
    let (pretty, json) = match settings.log_format {
        // Without source paths (of the dependencies' code, mostly), and in colour only on a
        // terminal.
        LogFormat::Pretty => {
            let pretty = fmt::layer().pretty().with_ansi(settings.ansi);
            let pretty = pretty.with_file(false).with_line_number(false);
            (Some(pretty.with_writer(sink)), None)
        }
        LogFormat::Json => {
            let json = fmt::layer().json().flatten_event(true);
            let json = json.with_current_span(true).with_span_list(true);
            (None, Some(json.with_writer(sink)))
        }
    };
    let export = |signal: &str| {
        if !settings.export_traces {
            return Export::Off;
        }
        Export::choose(signal, settings.otlp_endpoint.as_deref(), |name| {
            std::env::var(name).ok()
        })
    };
    let (traces, metrics) = (export("TRACES"), export("METRICS"));
    let endpoint = |export: &Export| match export {
        Export::Off => None,
        Export::To(endpoint) => Some(Some(endpoint.clone())),
        Export::FromEnvironment => Some(None),
    };
    let provider = endpoint(&traces)
        .map(|endpoint| otlp_tracer_provider(endpoint.as_deref(), settings))
        .transpose()?;
    let metrics = if settings.metrics {
        let otlp = endpoint(&metrics);
        let otlp = otlp.as_ref().map(|e| e.as_deref());
        crate::metrics::install(settings.prometheus, otlp, resource(settings))?
    } else {
        crate::metrics::MetricsGuard::default()
    };
    // Spans keep their code location; tracing's own busy/idle timings and thread ids are
    // not OpenTelemetry attributes anyone queries, so they stay out.
    let otel = (provider.as_ref()).map(|p| {
        tracing_opentelemetry::layer()
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_tracer(p.tracer(env!("CARGO_PKG_NAME")))
    });
    let registry = Registry::default().with(filter).with(otel);
    let guard = TelemetryGuard {
        provider,
        _metrics: metrics,
    };
    Ok((registry.with(pretty).with(json), guard))
}

/// Installs `subscriber` as the global default, forwards `log` records to it (tracing-log comes
/// with tracing-subscriber's default features) and sets the W3C trace-context propagator, so
/// incoming `traceparent` headers can continue a caller's trace. Fails if called twice.
pub fn init_subscriber(subscriber: impl Subscriber + Send + Sync + 'static) -> anyhow::Result<()> {
    subscriber.try_init().context("installing the subscriber")?;
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Ok(())
}

/// `RUST_LOG` (when set and not blank) wins over the configured directives; either must parse.
fn env_filter(rust_log: Option<&str>, configured: &str) -> anyhow::Result<EnvFilter> {
    let (source, directives) = match rust_log.filter(|d| !d.trim().is_empty()) {
        Some(directives) => ("RUST_LOG", directives),
        None => ("log filter", configured),
    };
    EnvFilter::try_new(directives).with_context(|| format!("invalid {source} {directives:?}"))
}

/// A tracer provider batching spans to an OTLP/gRPC collector (`endpoint`, or the one the
/// standard `OTEL_EXPORTER_OTLP_*` variables name); needs a current Tokio runtime. The
/// resource carries `service.name`, `service.version` and `OTEL_RESOURCE_ATTRIBUTES`; the
/// SDK reads the other standard variables (`OTEL_TRACES_SAMPLER`, `OTEL_BSP_*`, headers,
/// timeouts) itself.
fn otlp_tracer_provider(
    endpoint: Option<&str>,
    settings: &TelemetrySettings,
) -> anyhow::Result<SdkTracerProvider> {
    tokio::runtime::Handle::try_current().context("OTLP export needs a Tokio runtime")?;
    let exporter = SpanExporter::builder().with_tonic();
    let exporter = match endpoint {
        Some(endpoint) => exporter.with_endpoint(endpoint),
        None => exporter,
    };
    let exporter = exporter
        .build()
        .context("building the OTLP span exporter")?;
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter);
    Ok(provider.with_resource(resource(settings)).build())
}

/// The resource traces and metrics carry: `service.name` (unless `OTEL_SERVICE_NAME` names
/// another), `service.version`, and `OTEL_RESOURCE_ATTRIBUTES`.
fn resource(settings: &TelemetrySettings) -> Resource {
    let mut resource = Resource::builder()
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(settings.service_name.clone());
    }
    resource.build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// An in-memory log sink shared between the subscriber and the test.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn settings(log_format: LogFormat, otlp_endpoint: Option<&str>) -> TelemetrySettings {
        TelemetrySettings {
            log_format,
            log_filter: "info".into(),
            export_traces: true,
            otlp_endpoint: otlp_endpoint.map(Into::into),
            service_name: "mfa-reset-test".into(),
            ansi: false,
            metrics: false,
            prometheus: false,
        }
    }

    #[test]
    fn json_lines_carry_the_fields_of_the_enclosing_span() {
        let sink = Sink::default();
        let writer = sink.clone();
        let json = settings(LogFormat::Json, None);
        let (subscriber, guard) = get_subscriber(&json, move || writer.clone()).unwrap();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::error_span!("rpc", request_id = "req-42", principal = "alice");
            span.in_scope(|| tracing::error!(customers = 3, "summary computed"));
        });
        guard.shutdown().unwrap();
        let output = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let line = output.lines().find(|l| l.contains("summary computed"));
        let line: serde_json::Value = serde_json::from_str(line.unwrap()).unwrap();
        assert_eq!(line["customers"], 3, "event fields are flattened: {line}");
        assert_eq!(line["span"]["request_id"], "req-42", "{line}");
        assert_eq!(line["spans"][0]["principal"], "alice", "{line}");
    }

    #[test]
    fn without_a_runtime_pretty_builds_and_otlp_fails_without_panicking() {
        let pretty = settings(LogFormat::Pretty, None);
        assert!(get_subscriber(&pretty, std::io::sink).is_ok());
        let otlp = settings(LogFormat::Json, Some("http://127.0.0.1:4317"));
        assert!(get_subscriber(&otlp, std::io::sink).is_err());
    }

    #[test]
    fn export_follows_the_flag_then_the_standard_environment() {
        fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        }
        assert_eq!(Export::choose("TRACES", None, env(&[])), Export::Off);
        assert_eq!(
            Export::choose("TRACES", Some("http://c:4317"), env(&[])),
            Export::To("http://c:4317".into())
        );
        let standard = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")];
        assert_eq!(
            Export::choose("TRACES", None, env(&standard)),
            Export::FromEnvironment
        );
        let traces_only = [("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4317")];
        assert_eq!(
            Export::choose("TRACES", None, env(&traces_only)),
            Export::FromEnvironment
        );
        assert_eq!(
            Export::choose("METRICS", None, env(&traces_only)),
            Export::Off
        );
        let disabled = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ];
        assert_eq!(
            Export::choose("TRACES", Some("http://c:4317"), env(&disabled)),
            Export::Off
        );
    }

    #[test]
    fn pretty_logs_carry_no_colour_and_no_source_paths() {
        let sink = Sink::default();
        let writer = sink.clone();
        let pretty = settings(LogFormat::Pretty, None);
        let (subscriber, guard) = get_subscriber(&pretty, move || writer.clone()).unwrap();
        tracing::subscriber::with_default(subscriber, || tracing::error!("plain words"));
        guard.shutdown().unwrap();
        let output = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(output.contains("plain words"), "{output}");
        assert!(!output.contains('\u{1b}'), "no ANSI escapes: {output:?}");
        assert!(!output.contains(".rs:"), "no source paths: {output}");
    }

    #[test]
    fn bad_filter_is_an_error_not_a_panic() {
        assert!(env_filter(None, "info,mfa_reset=loudest").is_err());
        assert!(env_filter(Some("mfa_reset=[{"), "info").is_err());
        assert!(env_filter(Some(" "), "info,mfa_reset=debug").is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn otlp_subscriber_builds_lazily_and_shuts_down_promptly() {
        let settings = settings(LogFormat::Json, Some("http://127.0.0.1:4317"));
        let (subscriber, guard) = get_subscriber(&settings, std::io::sink).unwrap();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::error_span!("rpc", request_id = "req-43");
            span.in_scope(|| tracing::error!("exported to a collector that is not there"));
        });
        let shutdown = tokio::task::spawn_blocking(move || guard.shutdown());
        let result = tokio::time::timeout(std::time::Duration::from_secs(15), shutdown).await;
        // No collector listens: the last export fails, which shutdown logs but does not report.
        assert!(result.expect("guard shutdown hung").unwrap().is_ok());
    }
}
