//! Batch files for `enqueue --file` and `plan --file`: JSON Lines (one job object per
//! line) or CSV with a header row naming contract fields. Every line is validated with
//! the same rules the worker applies; missing request ids are generated (UUIDv7: unique,
//! and sortable by creation time); a request id used twice is an error.

use std::collections::HashMap;
use std::path::Path;

use crate::job::{self, InvalidJob, Job, FIELDS};

/// The format of a batch file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    JsonLines,
    Csv,
}

impl Format {
    /// `.csv` is CSV; anything else is JSON Lines.
    pub fn of(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("csv") => Format::Csv,
            _ => Format::JsonLines,
        }
    }
}

/// One line of a batch file, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// 1-based line number in the file.
    pub number: usize,
    pub job: Result<Job, InvalidJob>,
}

/// A fresh request id.
pub fn new_request_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Reads and validates a batch file (`-`: standard input).
pub fn read(path: &Path, format: Format) -> std::io::Result<Vec<Line>> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(path)?
    };
    Ok(parse(&text, format))
}

/// Validates the text of a batch file.
pub fn parse(text: &str, format: Format) -> Vec<Line> {
    let objects = match format {
        Format::JsonLines => json_lines(text),
        Format::Csv => csv_rows(text),
    };
    let mut lines: Vec<Line> = objects
        .into_iter()
        .map(|(number, object)| Line {
            number,
            job: object.and_then(validate_object),
        })
        .collect();
    mark_repeated_request_ids(&mut lines);
    lines
}

/// Validates one job given as a JSON object, generating its request id if missing.
pub fn validate_object(
    mut object: serde_json::Map<String, serde_json::Value>,
) -> Result<Job, InvalidJob> {
    if !object.contains_key("request_id") {
        object.insert("request_id".to_owned(), new_request_id().into());
    }
    let job = job::parse(&serde_json::Value::Object(object).to_string())?;
    // A staged job's time must be ahead: caught here, before anything is sent.
    if let Some(after) = &job.delete_after {
        let now = i64::try_from(crate::metrics::now_ms() / 1000).unwrap_or(0);
        after.check_future(now)?;
    }
    Ok(job)
}

type Parsed = (
    usize,
    Result<serde_json::Map<String, serde_json::Value>, InvalidJob>,
);

fn json_lines(text: &str) -> Vec<Parsed> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            let object = match serde_json::from_str::<serde_json::Value>(line) {
                Ok(serde_json::Value::Object(object)) => {
                    // Strict checks (duplicate keys among them) on the line as written,
                    // whenever it carries its own request id.
                    match object.contains_key("request_id") {
                        true => job::parse(line).map(|_| object),
                        false => Ok(object),
                    }
                }
                Ok(_) => Err(InvalidJob("not a JSON object".to_owned())),
                Err(e) => Err(InvalidJob(format!("not JSON: {e}"))),
            };
            (i + 1, object)
        })
        .collect()
}

fn csv_rows(text: &str) -> Vec<Parsed> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => return vec![(1, Err(InvalidJob(format!("unreadable CSV header: {e}"))))],
    };
    let mut seen = Vec::new();
    for column in headers.iter() {
        if !FIELDS.contains(&column) {
            return vec![(
                1,
                Err(InvalidJob(format!(
                    "unknown column {column:?}; columns must be contract fields: {}",
                    FIELDS.join(", ")
                ))),
            )];
        }
        if seen.contains(&column) {
            return vec![(
                1,
                Err(InvalidJob(format!("column {column:?} appears twice"))),
            )];
        }
        seen.push(column);
    }
    reader
        .records()
        .map(|record| match record {
            Err(e) => {
                let number = e.position().map_or(0, |p| p.line() as usize);
                (number, Err(InvalidJob(format!("unreadable CSV row: {e}"))))
            }
            Ok(record) => {
                let number = record.position().map_or(0, |p| p.line() as usize);
                (number, csv_object(&headers, &record))
            }
        })
        .collect()
}

/// A CSV row as a job object: empty cells are absent; `all_keys`, `revoke_sessions`,
/// `quarantine_user` and `report_activity` are `true` or `false`.
fn csv_object(
    headers: &csv::StringRecord,
    record: &csv::StringRecord,
) -> Result<serde_json::Map<String, serde_json::Value>, InvalidJob> {
    let mut object = serde_json::Map::new();
    for (column, cell) in headers.iter().zip(record.iter()) {
        if cell.is_empty() {
            continue;
        }
        let value = if [
            "all_keys",
            "revoke_sessions",
            "quarantine_user",
            "report_activity",
        ]
        .contains(&column)
        {
            match cell.to_ascii_lowercase().as_str() {
                "true" => true.into(),
                "false" => false.into(),
                _ => {
                    return Err(InvalidJob(format!(
                        "{column} must be true or false, not {cell:?}"
                    )))
                }
            }
        } else {
            cell.into()
        };
        object.insert(column.to_owned(), value);
    }
    Ok(object)
}

fn mark_repeated_request_ids(lines: &mut [Line]) {
    let mut first: HashMap<String, usize> = HashMap::new();
    for line in lines.iter_mut() {
        let Ok(job) = &line.job else { continue };
        if let Some(earlier) = first.get(&job.request_id) {
            line.job = Err(InvalidJob(format!(
                "request_id {} repeats line {earlier}",
                job.request_id
            )));
        } else {
            first.insert(job.request_id.clone(), line.number);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{Action, Target};

    const KEY: &str = "AKIAIOSFODNN7EXAMPLE";

    fn errors(lines: &[Line]) -> Vec<(usize, String)> {
        lines
            .iter()
            .filter_map(|l| l.job.as_ref().err().map(|e| (l.number, e.0.clone())))
            .collect()
    }

    #[test]
    fn json_lines_are_validated_line_by_line_with_numbers() {
        let text = [
            format!(r#"{{"request_id":"a","access_key_id":"{KEY}"}}"#),
            String::new(),
            format!(r#"{{"access_key_id":"{KEY}","user_name":"u"}}"#),
            "not json".to_owned(),
            r#"{"request_id":"b","user_name":"u"}"#.to_owned(),
            "[1]".to_owned(),
            r#"{"request_id":"a","user_name":"u","all_keys":true}"#.to_owned(),
        ]
        .join("\n");
        let lines = parse(&text, Format::JsonLines);
        assert_eq!(lines.len(), 6, "blank lines are skipped");
        assert_eq!(lines[0].job.as_ref().unwrap().request_id, "a");
        let generated = &lines[1].job.as_ref().unwrap().request_id;
        assert_eq!(generated.len(), 36, "a UUID: {generated}");
        let errors = errors(&lines);
        assert_eq!(
            errors.iter().map(|e| e.0).collect::<Vec<_>>(),
            vec![4, 5, 6, 7]
        );
        assert!(errors[0].1.contains("not JSON"));
        assert!(errors[1].1.contains("access_key_id is required"));
        assert!(errors[3].1.contains("repeats line 1"), "{:?}", errors[3]);
    }

    #[test]
    fn csv_with_a_header_of_contract_fields() {
        let text = format!(
            "request_id,user_name,access_key_id,all_keys,action,batch_id\nr1,alice,{KEY},,,hr-1\n,bob,,true,deactivate,hr-1\nr3,carol,,maybe,,\nr4,\"dave\",lower,,,\n"
        );
        let lines = parse(&text, Format::Csv);
        let first = lines[0].job.as_ref().unwrap();
        assert_eq!(first.access_key_id(), Some(KEY));
        assert_eq!(first.batch_id.as_deref(), Some("hr-1"));
        let second = lines[1].job.as_ref().unwrap();
        assert_eq!(
            second.target,
            Target::AllKeys {
                user_name: "bob".into()
            }
        );
        assert_eq!(second.action, Action::Deactivate);
        let errors = errors(&lines);
        assert_eq!(
            errors.iter().map(|e| e.0).collect::<Vec<_>>(),
            vec![4, 5],
            "{errors:?}"
        );
        assert!(errors[0].1.contains("all_keys must be true or false"));
    }

    #[test]
    fn csv_revoke_sessions_is_a_boolean_column() {
        let text = format!(
            "request_id,access_key_id,revoke_sessions\nr1,{KEY},TRUE\nr2,{KEY},\nr3,{KEY},yes\n"
        );
        let lines = parse(&text, Format::Csv);
        assert!(lines[0].job.as_ref().unwrap().revoke_sessions);
        assert!(!lines[1].job.as_ref().unwrap().revoke_sessions);
        let errors = errors(&lines);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0]
            .1
            .contains("revoke_sessions must be true or false"));
    }

    #[test]
    fn csv_header_must_name_contract_fields() {
        let lines = parse("request_id,colour\nr1,red\n", Format::Csv);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].number, 1);
        assert!(lines[0].job.as_ref().unwrap_err().0.contains("colour"));
    }

    #[test]
    fn generated_ids_are_unique_and_sortable() {
        let ids: Vec<String> = (0..1000).map(|_| new_request_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted, "later ids sort after earlier ones");
        sorted.dedup();
        assert_eq!(sorted.len(), 1000);
        assert!(job::parse(&format!(
            r#"{{"request_id":"{}","access_key_id":"{KEY}"}}"#,
            ids[0]
        ))
        .is_ok());
    }

    #[test]
    fn format_follows_the_extension() {
        assert_eq!(Format::of(Path::new("jobs.CSV")), Format::Csv);
        assert_eq!(Format::of(Path::new("jobs.jsonl")), Format::JsonLines);
        assert_eq!(Format::of(Path::new("jobs")), Format::JsonLines);
    }
}
