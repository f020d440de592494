//! The CLI's one output convention (docs/cli.md): `--output table|json` on every command that
//! prints data, tables with headers and a line when a list is empty, JSON always in the API's
//! shape, times as RFC 3339, and exit codes that mean the same thing everywhere.

use std::{fmt, io::Write as _};

use anyhow::Result;
use serde_json::Value;

/// How a command prints what it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum Format {
    /// Aligned columns with a header, for people
    #[default]
    Table,
    /// The API's JSON, pretty-printed, for scripts (`jq`)
    Json,
}

/// `--output`, global: every command that prints data takes it.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct OutputArgs {
    /// Print data as a table (for people) or as the API's JSON (for scripts)
    #[arg(
        long,
        short = 'o',
        value_enum,
        env = "WARDEN_OUTPUT",
        default_value_t = Format::Table,
        global = true,
        help_heading = "Output"
    )]
    pub(crate) output: Format,
}

/// What a table cell shows of a JSON row.
#[derive(Clone, Copy)]
pub(crate) enum Cell {
    /// A string field (a number or boolean is printed as is; absent or null: `-`)
    Str(&'static str),
    /// A time field: Unix milliseconds or RFC 3339 text, shown as RFC 3339 (UTC)
    Time(&'static str),
    /// A list of strings, comma-separated
    List(&'static str),
    /// Any value as compact JSON
    Json(&'static str),
    /// Computed from the whole row
    With(fn(&Value) -> String),
}

/// One column: its header and what it shows.
pub(crate) type Col = (&'static str, Cell);

/// The exit statuses (docs/cli.md).
/// (0, done and the answer is yes, is `ExitCode::SUCCESS`.)
pub(crate) mod exit {
    /// The answer is no: denied, refused, not found, does not verify.
    pub(crate) const NO: u8 = 1;
    /// The command could not be carried out: usage, bad input, authentication, unreachable or
    /// failing server. (clap's own usage errors also exit 2.)
    pub(crate) const ERROR: u8 = 2;
    /// Not decided yet: a request still waits for a human (`agent request-grant`).
    pub(crate) const PENDING: u8 = 3;
}

/// A request that is not decided yet, already printed: exit 3, with no error line.
#[derive(Debug)]
pub(crate) struct Pending;

impl fmt::Display for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not decided yet")
    }
}

impl std::error::Error for Pending {}

/// A negative answer that the command has already printed: exit 1, with no error line.
#[derive(Debug)]
pub(crate) struct Negative;

impl fmt::Display for Negative {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the answer is no")
    }
}

impl std::error::Error for Negative {}

/// A refusal that the server answered: a negative answer with a reason to print (exit 1).
#[derive(Debug)]
pub(crate) struct Refused(pub(crate) String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// An error answer from the server: its HTTP status and Warden's stable error code.
#[derive(Debug)]
pub(crate) struct ApiFailure {
    pub(crate) status: u16,
    pub(crate) code: String,
    pub(crate) message: String,
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.message)
    }
}

impl std::error::Error for ApiFailure {}

/// The exit status for a failed command: 1 when the failure is a "no" (403 refused, 404 not
/// found, a [`Negative`] or [`Refused`] answer), 3 for [`Pending`], 2 otherwise.
pub(crate) fn exit_status(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.is::<Pending>() {
            return exit::PENDING;
        }
        if cause.is::<Negative>() || cause.is::<Refused>() {
            return exit::NO;
        }
        if let Some(f) = cause.downcast_ref::<ApiFailure>() {
            return if matches!(f.status, 403 | 404) {
                exit::NO
            } else {
                exit::ERROR
            };
        }
    }
    exit::ERROR
}

/// Prints in the format the user chose.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Out {
    pub(crate) format: Format,
}

impl Out {
    pub(crate) fn new(args: &OutputArgs) -> Self {
        Self {
            format: args.output,
        }
    }

    pub(crate) fn is_json(self) -> bool {
        self.format == Format::Json
    }

    /// A list: the API's JSON array, or a table (`empty` when there are no rows). `items` is
    /// the array itself, for answers that wrap it (`{"keys": [...]}`).
    pub(crate) fn list(
        self,
        answer: &Value,
        items: &Value,
        empty: &str,
        cols: &[Col],
    ) -> Result<()> {
        if self.is_json() {
            return json(answer);
        }
        let rows: Vec<&Value> = items.as_array().into_iter().flatten().collect();
        if rows.is_empty() {
            return line(empty);
        }
        table(cols, &rows)
    }

    /// One object: the API's JSON, or one `FIELD  value` line per field the answer has.
    pub(crate) fn object(self, answer: &Value, fields: &[Col]) -> Result<()> {
        if self.is_json() {
            return json(answer);
        }
        let shown: Vec<&Col> = fields
            .iter()
            .filter(|(_, cell)| match cell {
                Cell::Str(key) | Cell::Time(key) | Cell::List(key) | Cell::Json(key) => {
                    answer.get(key).is_some()
                }
                Cell::With(_) => true,
            })
            .collect();
        let width = shown.iter().map(|(h, _)| h.len()).max().unwrap_or(0);
        let mut text = String::new();
        for (header, cell) in shown {
            text.push_str(&format!("{header:<width$}  {}\n", render(answer, *cell)));
        }
        write_stdout(&text)
    }

    /// The outcome of an action: the API's JSON answer, or a sentence for people.
    pub(crate) fn done(self, answer: &Value, sentence: impl fmt::Display) -> Result<()> {
        if self.is_json() {
            return json(answer);
        }
        line(&sentence.to_string())
    }
}

/// Pretty JSON on stdout.
pub(crate) fn json(v: &Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(v)?;
    text.push('\n');
    write_stdout(&text)
}

/// One line on stdout.
pub(crate) fn line(text: &str) -> Result<()> {
    write_stdout(&format!("{text}\n"))
}

/// Writes to stdout without panicking when its reader has gone (`warden … | head`).
fn write_stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Aligned columns under an upper-case header; the last column is not padded.
pub(crate) fn table(cols: &[Col], rows: &[&Value]) -> Result<()> {
    write_table(cols, rows, true)
}

/// More rows of a table already headed (`audit tail --follow`).
pub(crate) fn table_rows(cols: &[Col], rows: &[&Value]) -> Result<()> {
    write_table(cols, rows, false)
}

fn write_table(cols: &[Col], rows: &[&Value], header: bool) -> Result<()> {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| cols.iter().map(|(_, c)| render(row, *c)).collect())
        .collect();
    let mut widths: Vec<usize> = cols.iter().map(|(h, _)| h.chars().count()).collect();
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let mut push_row = |cells: &mut dyn Iterator<Item = &str>| {
        let mut parts = Vec::with_capacity(cols.len());
        for (i, cell) in cells.enumerate() {
            if i + 1 == cols.len() {
                parts.push(cell.to_owned());
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                parts.push(format!("{cell}{}", " ".repeat(pad)));
            }
        }
        text.push_str(parts.join("  ").trim_end());
        text.push('\n');
    };
    if header {
        push_row(&mut cols.iter().map(|(h, _)| *h));
    }
    for row in &cells {
        push_row(&mut row.iter().map(String::as_str));
    }
    write_stdout(&text)
}

fn render(row: &Value, cell: Cell) -> String {
    match cell {
        Cell::Str(key) => scalar(&row[key]),
        Cell::Time(key) => time(&row[key]),
        Cell::List(key) => match row[key].as_array() {
            Some(items) if !items.is_empty() => {
                items.iter().map(scalar).collect::<Vec<_>>().join(",")
            }
            _ => "-".into(),
        },
        Cell::Json(key) => match &row[key] {
            Value::Null => "-".into(),
            v => v.to_string(),
        },
        Cell::With(f) => f(row),
    }
}

/// A JSON scalar as text; null or absent: `-`.
pub(crate) fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A time as RFC 3339 (UTC, to the second): from Unix milliseconds, or RFC 3339 text as is.
pub(crate) fn time(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(_) => v
            .as_i64()
            .and_then(|ms| time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).ok())
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| v.to_string()),
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn times_render_as_rfc3339() {
        assert_eq!(time(&json!(0)), "1970-01-01T00:00:00Z");
        assert_eq!(time(&json!(1_700_000_000_999_i64)), "2023-11-14T22:13:20Z");
        assert_eq!(time(&json!("2026-01-01T00:00:00Z")), "2026-01-01T00:00:00Z");
        assert_eq!(time(&Value::Null), "-");
    }

    #[test]
    fn exit_statuses_follow_the_convention() {
        let api = |status| {
            anyhow::Error::new(ApiFailure {
                status,
                code: "x".into(),
                message: "y".into(),
            })
        };
        for (status, want) in [(403, 1), (404, 1), (400, 2), (401, 2), (409, 2), (500, 2)] {
            assert_eq!(exit_status(&api(status)), want, "{status}");
            assert_eq!(
                exit_status(&api(status).context("while doing something")),
                want,
                "{status} with context"
            );
        }
        assert_eq!(exit_status(&anyhow::Error::new(Negative)), 1);
        assert_eq!(exit_status(&anyhow::Error::new(Refused("held".into()))), 1);
        assert_eq!(exit_status(&anyhow::Error::new(Pending)), 3);
        assert_eq!(exit_status(&anyhow::anyhow!("cannot reach warden")), 2);
    }
}
