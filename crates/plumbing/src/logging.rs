//! Log output on stderr: human-readable text (the default), or one JSON
//! object per line for log collectors (`--log-format json` on the broker,
//! or `WEIR_LOG_FORMAT=json` for every binary). A small formatter of our
//! own, because tracing-subscriber's JSON output needs a crate the
//! workspace does not otherwise carry.

use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{span, Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::FormattedFields;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// For people (the default); colours on a terminal.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// A log format that is neither `text` nor `json` (the value as given).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("log format {0:?}: use text or json")]
pub struct UnknownLogFormat(pub String);

/// Why the log format could not be chosen: bad usage, exit 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LogFormatError {
    /// `WEIR_LOG_FORMAT` names no format: set it to `text` or `json`.
    #[error("WEIR_LOG_FORMAT: {0}")]
    Env(#[source] UnknownLogFormat),
}

impl std::str::FromStr for LogFormat {
    type Err = UnknownLogFormat;
    fn from_str(name: &str) -> Result<LogFormat, UnknownLogFormat> {
        match name {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(UnknownLogFormat(other.to_string())),
        }
    }
}

/// The flag if given, else `WEIR_LOG_FORMAT`, else text.
pub(crate) fn choose(flag: Option<LogFormat>) -> Result<LogFormat, LogFormatError> {
    match (flag, std::env::var("WEIR_LOG_FORMAT")) {
        (Some(f), _) => Ok(f),
        (None, Ok(v)) if !v.is_empty() => v.parse().map_err(LogFormatError::Env),
        _ => Ok(LogFormat::Text),
    }
}

/// Install the stderr subscriber (filter: `RUST_LOG`, default `info`).
pub(crate) fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A log that cannot be written (a full disk, a closed pipe) must not stop
    // the process: by default tracing-subscriber reports a failed write with
    // `eprintln!`, which panics on the same failed stderr, in whichever task
    // logged — an exporter's delivery task died that way under RLIMIT_FSIZE.
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).log_internal_errors(false);
    let _ = match format {
        LogFormat::Json => builder.fmt_fields(JsonSpanFields).event_format(JsonLines).try_init(),
        LogFormat::Text => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            builder.with_ansi(ansi).with_target(false).try_init()
        }
    };
}

/// `{"ts":"…","level":"INFO","target":"broker::server","message":"…",<fields>}`
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut out: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut ts = String::new();
        tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(&mut ts))?;
        let meta = event.metadata();
        // The fields of the spans the event is in (a lease's destination
        // and id, …), outermost first; the event's own fields win.
        let mut fields = span_fields(ctx);
        event.record(&mut Fields(&mut fields));
        // Time, level and target first (a person reads these), then the
        // event's own fields; serde_json escapes every string.
        let head = |v: &str| serde_json::Value::from(v).to_string();
        write!(
            out,
            "{{\"ts\":{},\"level\":{},\"target\":{}",
            head(&ts),
            head(meta.level().as_str()),
            head(meta.target())
        )?;
        for (k, v) in &fields {
            write!(out, ",{}:{v}", head(k))?;
        }
        writeln!(out, "}}")
    }
}

/// The fields of the spans around the current event, from the JSON the
/// [`JsonSpanFields`] formatter stored with each span.
fn span_fields<S, N>(ctx: &FmtContext<'_, S, N>) -> serde_json::Map<String, serde_json::Value>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    let mut fields = serde_json::Map::new();
    for span in ctx.event_scope().into_iter().flat_map(|scope| scope.from_root()) {
        let extensions = span.extensions();
        let Some(stored) = extensions.get::<FormattedFields<N>>() else { continue };
        if let Ok(serde_json::Value::Object(map)) = serde_json::from_str(stored.as_str()) {
            fields.extend(map);
        }
    }
    fields
}

/// Span fields stored as one JSON object (merged when a span records more),
/// so [`JsonLines`] can put them beside an event's own.
struct JsonSpanFields;

impl<'writer> FormatFields<'writer> for JsonSpanFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut map = serde_json::Map::new();
        fields.record(&mut Fields(&mut map));
        write!(writer, "{}", serde_json::Value::Object(map))
    }

    fn add_fields(&self, current: &'writer mut FormattedFields<Self>, fields: &span::Record<'_>) -> fmt::Result {
        let mut map = match serde_json::from_str(current.as_str()) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        fields.record(&mut Fields(&mut map));
        current.fields = serde_json::Value::Object(map).to_string();
        Ok(())
    }
}

struct Fields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
}

/// Install the stderr log subscriber (`RUST_LOG`, default `info`; text,
/// or JSON lines with `WEIR_LOG_FORMAT=json`). A bad `WEIR_LOG_FORMAT` is
/// bad usage: exit 2 with one line.
pub fn init_tracing() {
    init_tracing_as(None);
}

/// [`init_tracing`] with a `--log-format` flag, which wins over the environment.
pub fn init_tracing_as(flag: Option<LogFormat>) {
    match choose(flag) {
        Ok(format) => init(format),
        Err(e) => {
            eprintln!("weir: {e}");
            std::process::exit(2);
        }
    }
}
