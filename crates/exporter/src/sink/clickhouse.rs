//! ClickHouse's HTTP interface: where rows go, exactly once.
//!
//! `clickhouse+http(s)://HOST:PORT/?table=T[&database=D]` inserts each
//! record as a `JSONEachRow` row of `T`; `?format=otel` maps each OTLP
//! record to a row of the OpenTelemetry Collector ClickHouse exporter's
//! tables ([`super::otel_rows`]), inserting a lease table by table.
//!
//! ## Exactly once
//! Every insert carries `insert_deduplication_token`: the batch's downstream
//! id (`protocol::downstream_id`), and for `otel` the id and the table. A
//! lease given back is offered again with exactly the same records, so a
//! redelivery after a crash repeats its token and its bytes, and ClickHouse
//! drops the repeat; a range split by bisection gets its halves' ids. A
//! lease inserted into three tables whose third insert failed repeats the
//! first two with their tokens: dropped again. A lease whose rows go to
//! several tables is delivered, and bisected, table by table
//! ([`ClickHouse::parts`]): a refused row of one table sends no other
//! table's rows again under a half's token.
//!
//! ClickHouse deduplicates a non-replicated `MergeTree` only when the table
//! sets `non_replicated_deduplication_window > 0` (replicated tables do by
//! default). Before the first insert ([`ClickHouse::probe`]) the exporter
//! asks the server whether it knows `insert_deduplication_token` and reads
//! the tables' engines and settings, and warns — once, naming the setting —
//! when deduplication is off. A server that does not know the setting (18.16
//! answers Code 115) gets no token and one warning: never a retry loop.

use super::{otel_rows, OpenError, Record, SinkError};
use crate::secret::redact_url;
use tokio::sync::OnceCell;

/// Where rows go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `?table=T`: each record is a row of `T` as it is.
    Table(String),
    /// `?format=otel`: each OTLP record a row of its item's table.
    Otel,
}

/// A ClickHouse sink's address, target and what its server supports.
#[derive(Debug)]
pub struct ClickHouse {
    /// The server's URL with the spec's other query parameters (`database`,
    /// settings), without `table`, `format` or `query`.
    base: reqwest::Url,
    pub target: Target,
    /// Whether the server knows `insert_deduplication_token`; asked once.
    tokens: OnceCell<bool>,
}

/// One insert: its table and its `JSONEachRow` body.
pub struct Insert {
    pub table: String,
    pub body: Vec<u8>,
}

impl ClickHouse {
    /// Parse `http(s)://HOST:PORT/?table=T` or `?format=otel` (after the
    /// `clickhouse+` prefix).
    pub fn parse(spec: &str) -> Result<ClickHouse, OpenError> {
        let shown = redact_url(spec);
        let mut url =
            reqwest::Url::parse(spec).map_err(|e| OpenError::Spec(format!("clickhouse sink {shown:?}: {e}")))?;
        let param = |name: &str| url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.to_string());
        let target = match (param("format").as_deref(), param("table")) {
            (Some("otel"), None) => Target::Otel,
            (Some(other), _) if other != "otel" => {
                return Err(OpenError::Spec(format!(
                    "clickhouse sink {shown:?}: format={other:?}; the one format is otel"
                )))
            }
            (Some(_), Some(_)) => {
                return Err(OpenError::Spec(format!(
                    "clickhouse sink {shown:?}: format=otel writes the OpenTelemetry tables; drop table="
                )))
            }
            (Some(other), _) => {
                return Err(OpenError::Spec(format!(
                    "clickhouse sink {shown:?}: format={other:?}; the one format is otel"
                )))
            }
            (None, Some(table)) => Target::Table(table),
            (None, None) => {
                return Err(OpenError::Spec(format!("clickhouse sink {shown:?} needs ?table=NAME or ?format=otel")))
            }
        };
        if let Target::Table(table) = &target {
            if !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
                return Err(OpenError::Spec(format!(
                    "clickhouse table name {table:?} may hold only letters, digits, _ and ."
                )));
            }
        }
        let keep = |k: &str| !matches!(k, "table" | "format" | "query" | "insert_deduplication_token");
        let others: Vec<(String, String)> =
            url.query_pairs().filter(|(k, _)| keep(k)).map(|(k, v)| (k.to_string(), v.to_string())).collect();
        url.query_pairs_mut().clear().extend_pairs(others);
        Ok(ClickHouse { base: url, target, tokens: OnceCell::new() })
    }

    /// The tables this sink writes.
    pub fn tables(&self) -> Vec<&str> {
        match &self.target {
            Target::Table(t) => vec![t.as_str()],
            Target::Otel => otel_rows::TABLES.to_vec(),
        }
    }

    /// The URL of an insert into `table`, with `token` when given.
    pub fn insert_url(&self, table: &str, token: Option<&str>) -> String {
        let mut url = self.base.clone();
        url.query_pairs_mut().append_pair("query", &format!("INSERT INTO {table} FORMAT JSONEachRow"));
        if self.target == Target::Otel {
            // The rows' times are RFC 3339 in UTC (`otel_rows::time`).
            url.query_pairs_mut().append_pair("date_time_input_format", "best_effort");
        }
        if let Some(token) = token {
            url.query_pairs_mut().append_pair("insert_deduplication_token", token);
        }
        url.to_string()
    }

    /// The deduplication token of `key`'s insert into `table`.
    pub fn token(&self, key: &str, table: &str) -> String {
        match self.target {
            Target::Table(_) => key.to_string(),
            Target::Otel => format!("{key}.{table}"),
        }
    }

    /// Why `record` can never be a row, if it cannot.
    pub fn refuse(&self, record: &Record) -> Option<String> {
        match &self.target {
            Target::Table(_) => super::framing::Shape::of(&record.payload)
                .as_row()
                .err()
                .map(|why| format!("not sent: ClickHouse JSONEachRow takes one JSON object per record, and {why}")),
            Target::Otel => otel_rows::row(&record.payload, &record.tenant).err().map(|why| format!("not sent: {why}")),
        }
    }

    /// The inserts of `records`: one per table, tables in the order their
    /// first record comes, rows in record order.
    pub fn inserts(&self, records: &[Record]) -> Result<Vec<Insert>, SinkError> {
        let mut out: Vec<Insert> = Vec::new();
        for r in records {
            if let Some(why) = self.refuse(r) {
                // `refuse` screens these out before delivery; never send one
                // that slipped through.
                return Err(SinkError::poison(why));
            }
            let (table, line) = match &self.target {
                Target::Table(t) => (t.as_str(), r.payload.to_vec()),
                Target::Otel => {
                    let row = otel_rows::row(&r.payload, &r.tenant).map_err(SinkError::poison)?;
                    (row.table, row.json.to_string().into_bytes())
                }
            };
            let at = match out.iter().position(|i| i.table == table) {
                Some(at) => at,
                None => {
                    out.push(Insert { table: table.to_string(), body: Vec::new() });
                    out.len() - 1
                }
            };
            out[at].body.extend_from_slice(&line);
            out[at].body.push(b'\n');
        }
        Ok(out)
    }

    /// `format=otel`: the records by the table their rows go to (in the
    /// order the tables first appear; a record that maps to none is a part
    /// of its own, refused when sent), when there are several tables.
    /// Bisected apart, a refused row of one table never sends another
    /// table's rows again under a half's token, which ClickHouse would not
    /// recognise as the same insert.
    pub fn parts(&self, records: &[Record]) -> Option<Vec<Vec<Record>>> {
        if self.target != Target::Otel {
            return None;
        }
        let mut parts: Vec<(Option<&'static str>, Vec<Record>)> = Vec::new();
        for r in records {
            let table = otel_rows::table_of(&r.payload);
            match parts.iter_mut().find(|(t, _)| table.is_some() && *t == table) {
                Some((_, part)) => part.push(r.clone()),
                None => parts.push((table, vec![r.clone()])),
            }
        }
        (parts.len() > 1).then(|| parts.into_iter().map(|(_, part)| part).collect())
    }

    /// Whether inserts carry a token: asked of the server once (a failure
    /// to ask is retryable and asked again); warns once when deduplication
    /// is off for a table, or the server does not know the setting.
    pub async fn probe(&self, client: &reqwest::Client) -> Result<bool, SinkError> {
        self.tokens
            .get_or_try_init(|| async {
                let known = self.select(client, TOKEN_KNOWN).await?;
                let tokens = known.trim() == "1";
                if !tokens {
                    tracing::warn!(
                        server = %redact_url(self.base.as_str()),
                        "ClickHouse does not know the setting insert_deduplication_token: inserts go without it, so a redelivery after an exporter crash can insert rows twice (upgrade ClickHouse for exactly-once rows)"
                    );
                } else {
                    self.warn_undeduplicated(client).await;
                }
                Ok(tokens)
            })
            .await
            .copied()
    }

    /// Warn for each table that will not deduplicate a repeated insert.
    async fn warn_undeduplicated(&self, client: &reqwest::Client) {
        let names: Vec<String> =
            self.tables().iter().map(|t| format!("'{}'", t.rsplit('.').next().unwrap_or(t))).collect();
        let sql = format!(
            "SELECT name, engine, create_table_query FROM system.tables WHERE database = currentDatabase() AND name IN ({}) FORMAT TabSeparated",
            names.join(", ")
        );
        match self.select(client, &sql).await {
            Ok(text) => {
                for line in text.lines() {
                    let mut cols = line.splitn(3, '\t');
                    let (name, engine, create) = (cols.next(), cols.next(), cols.next().unwrap_or(""));
                    if let (Some(name), Some(engine)) = (name, engine) {
                        if !deduplicates(engine, create) {
                            tracing::warn!(table = name, engine, "ClickHouse table does not deduplicate repeated inserts: set non_replicated_deduplication_window (for example ALTER TABLE {name} MODIFY SETTING non_replicated_deduplication_window = 1000), or a redelivery after an exporter crash inserts rows twice");
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the ClickHouse tables' settings to check non_replicated_deduplication_window")
            }
        }
    }

    /// Run a `SELECT` (in the body, as ClickHouse's HTTP interface takes it);
    /// its answer's text.
    async fn select(&self, client: &reqwest::Client, sql: &str) -> Result<String, SinkError> {
        let failed =
            |message: String| SinkError::Retryable { message, retry_after: None, timed_out: false, overload: false };
        let resp = client
            .post(self.base.clone())
            .body(sql.to_string())
            .send()
            .await
            .map_err(|e| failed(format!("asking ClickHouse: {}", e.without_url())))?;
        let status = resp.status();
        let text =
            resp.text().await.map_err(|e| failed(format!("reading ClickHouse's answer: {}", e.without_url())))?;
        if !status.is_success() {
            return Err(failed(format!(
                "ClickHouse answered HTTP {status}: {}",
                text.chars().take(300).collect::<String>()
            )));
        }
        Ok(text)
    }
}

/// Whether the server knows `insert_deduplication_token`.
const TOKEN_KNOWN: &str = "SELECT count() FROM system.settings WHERE name = 'insert_deduplication_token'";

/// Whether a table with this engine and `CREATE` statement drops a repeated
/// insert: replicated tables do; a plain MergeTree only with a
/// `non_replicated_deduplication_window` above 0.
fn deduplicates(engine: &str, create: &str) -> bool {
    if engine.starts_with("Replicated") || engine.starts_with("Shared") {
        return true;
    }
    let Some(at) = create.find("non_replicated_deduplication_window") else { return false };
    let rest = create[at + "non_replicated_deduplication_window".len()..].trim_start();
    let value = rest.strip_prefix('=').unwrap_or(rest).trim_start();
    value.split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_names_a_table_or_the_otel_format_and_nothing_else() {
        let ch = ClickHouse::parse("http://h:8123/?table=events&database=weir").unwrap();
        assert_eq!(ch.target, Target::Table("events".into()));
        let url = ch.insert_url("events", Some("abc"));
        assert!(url.contains("database=weir") && url.contains("query=INSERT+INTO+events+FORMAT+JSONEachRow"), "{url}");
        assert!(url.ends_with("insert_deduplication_token=abc"), "{url}");
        let otel = ClickHouse::parse("http://h:8123/?format=otel").unwrap();
        assert_eq!((otel.target.clone(), otel.tables().len()), (Target::Otel, 7));
        assert_eq!(otel.token("k", "otel_logs"), "k.otel_logs");
        for bad in
            ["http://h:1/?table=x;drop", "http://h:1/", "http://h:1/?format=csv", "http://h:1/?format=otel&table=t"]
        {
            assert!(ClickHouse::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn deduplication_is_read_from_the_engine_and_the_tables_settings() {
        assert!(deduplicates("ReplicatedMergeTree", ""));
        assert!(deduplicates(
            "MergeTree",
            "... SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 1000"
        ));
        assert!(!deduplicates("MergeTree", "... SETTINGS non_replicated_deduplication_window = 0"));
        assert!(!deduplicates("MergeTree", "... SETTINGS index_granularity = 8192"));
        assert!(!deduplicates("Log", ""));
    }
}
