//! The text the CLI prints: `get` tables and `describe` pages, laid out as kubectl lays them out.
//!
//! Every function here is pure: it takes objects and the current time and returns the text, each
//! line ending in a newline, ready to be printed as is.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use rayservice_api::{RayCluster, RayService};
use rayservice_local::views::{EventView, PodView, ServiceView};
use serde_json::{Map, Value};

/// Spaces between table columns (kubectl's `get` printer).
const TABLE_PADDING: usize = 3;
/// Narrowest table column, padding included (kubectl's `get` printer).
const TABLE_MIN_WIDTH: usize = 6;
/// Spaces between a `describe` key and its value (kubectl's describer).
const DESCRIBE_PADDING: usize = 2;
/// One nesting level of a `describe` page.
const INDENT: &str = "  ";
/// Words kubectl writes in capitals when it turns a field name into a label.
const ACRONYMS: [&str; 5] = ["API", "URL", "UID", "OSB", "GUID"];
/// Fields whose value is a map keyed by names (of apps, deployments, labels, resources...): those
/// keys are data, so they are printed as they are instead of being turned into labels.
const NAME_KEYED_FIELDS: [&str; 12] = [
    "annotations",
    "applicationStatuses",
    "endpoints",
    "headServiceAnnotations",
    "labels",
    "limits",
    "matchLabels",
    "nodeSelector",
    "rayStartParams",
    "requests",
    "serveDeploymentStatuses",
    "data",
];
/// Paths `describe` leaves out of the generic rendering: printed above it, or noise.
const DESCRIBE_SKIPPED: [&str; 5] = [
    ".metadata.name",
    ".metadata.namespace",
    ".metadata.labels",
    ".metadata.annotations",
    ".metadata.managedFields",
];
/// Longest annotation kubectl prints on one line.
const MAX_ANNOTATION_LEN: usize = 140;

/// How long ago `created` (RFC 3339) was, in kubectl's `AGE` format (`45s`, `2m42s`, `142m`,
/// `5h3m`, `3d4h`, ...); `<unknown>` when `created` is not a timestamp.
pub fn age(created: &str, now: Timestamp) -> String {
    match created.trim().parse::<Timestamp>() {
        Ok(created) => human_duration(now.duration_since(created)),
        Err(_) => "<unknown>".to_string(),
    }
}

/// kubectl's `HumanDuration`: coarser the older, two units at most.
fn human_duration(elapsed: SignedDuration) -> String {
    let seconds = elapsed.as_secs();
    // Up to a second in the future is clock skew, not an error.
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 2 * 60 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            rest => format!("{minutes}m{rest}s"),
        };
    }
    if minutes < 3 * 60 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            rest => format!("{hours}h{rest}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{days}d"),
            rest => format!("{days}d{rest}h"),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        return match days % 365 {
            0 => format!("{years}y"),
            rest => format!("{years}y{rest}d"),
        };
    }
    format!("{years}y")
}

/// Age of an object from its creation timestamp.
fn object_age(meta: &ObjectMeta, now: Timestamp) -> String {
    match &meta.creation_timestamp {
        Some(Time(created)) => human_duration(now.duration_since(*created)),
        None => "<unknown>".to_string(),
    }
}

/// `kubectl get rayservices`: `NAME  SERVICE STATUS  NUM SERVE ENDPOINTS  AGE`; `wide` adds
/// `ACTIVE CLUSTER  PENDING CLUSTER  READY`. Empty when there are no items (the caller says
/// "No resources found").
pub fn rayservice_table(items: &[RayService], wide: bool, now: Timestamp) -> String {
    let mut header = vec!["NAME", "SERVICE STATUS", "NUM SERVE ENDPOINTS", "AGE"];
    if wide {
        header.extend(["ACTIVE CLUSTER", "PENDING CLUSTER", "READY"]);
    }
    let rows = items
        .iter()
        .map(|service| {
            let status = service.status.as_ref();
            let mut row = vec![
                service.metadata.name.clone().unwrap_or_default(),
                status
                    .and_then(|status| status.service_status.clone())
                    .unwrap_or_default(),
                status
                    .map(|status| status.num_serve_endpoints.to_string())
                    .unwrap_or_default(),
                object_age(&service.metadata, now),
            ];
            if wide {
                let cluster_name = |pending: bool| {
                    status
                        .and_then(|status| {
                            let cluster = if pending {
                                &status.pending_service_status
                            } else {
                                &status.active_service_status
                            };
                            cluster.ray_cluster_name.clone()
                        })
                        .unwrap_or_default()
                };
                let ready = status
                    .and_then(|status| status.conditions.iter().find(|c| c.type_ == "Ready"))
                    .map(|ready| match ready.reason.as_str() {
                        "" => ready.status.clone(),
                        reason => format!("{} ({reason})", ready.status),
                    })
                    .unwrap_or_default();
                row.extend([cluster_name(false), cluster_name(true), ready]);
            }
            row
        })
        .collect();
    table(&header, rows)
}

/// `kubectl get rayclusters`: `NAME  DESIRED WORKERS  AVAILABLE WORKERS  STATUS  AGE` (the
/// guide's columns); `wide` adds KubeRay 1.x's `CPUS  MEMORY  GPUS` before `STATUS` and
/// `HEAD POD IP  HEAD SERVICE IP` after `AGE`. Empty when there are no items.
pub fn raycluster_table(items: &[RayCluster], wide: bool, now: Timestamp) -> String {
    let header: Vec<&str> = if wide {
        vec![
            "NAME",
            "DESIRED WORKERS",
            "AVAILABLE WORKERS",
            "CPUS",
            "MEMORY",
            "GPUS",
            "STATUS",
            "AGE",
            "HEAD POD IP",
            "HEAD SERVICE IP",
        ]
    } else {
        vec![
            "NAME",
            "DESIRED WORKERS",
            "AVAILABLE WORKERS",
            "STATUS",
            "AGE",
        ]
    };
    let rows = items
        .iter()
        .map(|cluster| {
            let status = cluster.status.as_ref();
            let text = |pick: &dyn Fn(&rayservice_api::RayClusterStatus) -> Option<String>| {
                status.and_then(pick).unwrap_or_default()
            };
            let mut row = vec![
                cluster.metadata.name.clone().unwrap_or_default(),
                text(&|s| Some(s.desired_worker_replicas.to_string())),
                text(&|s| Some(s.available_worker_replicas.to_string())),
            ];
            if wide {
                row.extend([
                    text(&|s| s.desired_cpu.clone()),
                    text(&|s| s.desired_memory.clone()),
                    text(&|s| s.desired_gpu.clone()),
                ]);
            }
            row.extend([
                text(&|s| s.state.clone()),
                object_age(&cluster.metadata, now),
            ]);
            if wide {
                row.extend([
                    text(&|s| s.head.as_ref().and_then(|head| head.pod_ip.clone())),
                    text(&|s| s.head.as_ref().and_then(|head| head.service_ip.clone())),
                ]);
            }
            row
        })
        .collect();
    table(&header, rows)
}

/// `kubectl get pods`: `NAME  READY  STATUS  RESTARTS  AGE`; `wide` adds `PID  NODE TYPE  LOG`.
/// Empty when there are no items.
pub fn pods_table(items: &[PodView], wide: bool, now: Timestamp) -> String {
    let mut header = vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"];
    if wide {
        header.extend(["PID", "NODE TYPE", "LOG"]);
    }
    let rows = items
        .iter()
        .map(|pod| {
            let mut row = vec![
                pod.name.clone(),
                pod.ready.clone(),
                pod.phase.clone(),
                pod.restarts.to_string(),
                age(&pod.started_at, now),
            ];
            if wide {
                row.extend([
                    pod.pid
                        .map_or_else(|| "<none>".to_string(), |pid| pid.to_string()),
                    pod.node_type.clone(),
                    pod.log_path.clone(),
                ]);
            }
            row
        })
        .collect();
    table(&header, rows)
}

/// `kubectl get services`: `NAME  TYPE  CLUSTER-IP  EXTERNAL-IP  PORT(S)  AGE`, ports joined
/// with commas. Empty when there are no items.
pub fn services_table(items: &[ServiceView], now: Timestamp) -> String {
    let header = [
        "NAME",
        "TYPE",
        "CLUSTER-IP",
        "EXTERNAL-IP",
        "PORT(S)",
        "AGE",
    ];
    let rows = items
        .iter()
        .map(|service| {
            let ports = match service.ports.join(",") {
                ports if ports.is_empty() => "<none>".to_string(),
                ports => ports,
            };
            vec![
                service.name.clone(),
                service.service_type.clone(),
                service.cluster_ip.clone(),
                "<none>".to_string(),
                ports,
                age(&service.created_at, now),
            ]
        })
        .collect();
    table(&header, rows)
}

/// A `get` table: the header, then one row per item; nothing at all without items.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut all = vec![header.iter().map(|cell| cell.to_string()).collect()];
    all.extend(rows);
    tabwrite(&all, TABLE_MIN_WIDTH, TABLE_PADDING)
}

/// Lays out rows as Go's `text/tabwriter` does (kubectl prints through it): every cell of a row
/// but the last belongs to a column, and consecutive rows that have a cell in a column share that
/// column's width (longest cell plus `padding`, at least `min_width`). Trailing spaces are cut.
fn tabwrite(rows: &[Vec<String>], min_width: usize, padding: usize) -> String {
    let mut widths: Vec<Vec<usize>> = rows
        .iter()
        .map(|row| vec![0; row.len().saturating_sub(1)])
        .collect();
    assign_widths(rows, 0, 0, rows.len(), (min_width, padding), &mut widths);
    let mut out = String::new();
    for (row, row_widths) in rows.iter().zip(&widths) {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if let Some(&width) = row_widths.get(column) {
                let used = cell.chars().count();
                line.extend(std::iter::repeat_n(' ', width.saturating_sub(used)));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Widths of `column` for rows `start..end`, block by block, then of the next column within
/// each block (tabwriter's recursive `format`).
fn assign_widths(
    rows: &[Vec<String>],
    column: usize,
    start: usize,
    end: usize,
    (min_width, padding): (usize, usize),
    widths: &mut [Vec<usize>],
) {
    let has_cell = |row: usize| rows[row].len() > column + 1;
    let mut row = start;
    while row < end {
        if !has_cell(row) {
            row += 1;
            continue;
        }
        let block_start = row;
        let mut width = min_width;
        while row < end && has_cell(row) {
            width = width.max(rows[row][column].chars().count() + padding);
            row += 1;
        }
        for row_widths in &mut widths[block_start..row] {
            row_widths[column] = width;
        }
        assign_widths(
            rows,
            column + 1,
            block_start,
            row,
            (min_width, padding),
            widths,
        );
    }
}

/// `kubectl describe rayservices NAME`: name, namespace, labels and annotations, then every
/// field of the object (keys sorted and turned into labels such as `Serve Config V2`, as
/// kubectl renders custom resources), then the events.
pub fn describe_rayservice(service: &RayService, events: &[EventView], now: Timestamp) -> String {
    let content = serde_json::to_value(service).unwrap_or(Value::Null);
    describe_object(&service.metadata, &content, events, now)
}

/// `kubectl describe rayclusters NAME`: laid out as [`describe_rayservice`].
pub fn describe_raycluster(cluster: &RayCluster, events: &[EventView], now: Timestamp) -> String {
    let content = serde_json::to_value(cluster).unwrap_or(Value::Null);
    describe_object(&cluster.metadata, &content, events, now)
}

/// The page of any object: kubectl's generic describer.
fn describe_object(
    meta: &ObjectMeta,
    content: &Value,
    events: &[EventView],
    now: Timestamp,
) -> String {
    let mut page = Page::default();
    page.field(0, "Name", meta.name.as_deref().unwrap_or_default());
    page.field(
        0,
        "Namespace",
        meta.namespace
            .as_deref()
            .unwrap_or(rayservice_api::DEFAULT_NAMESPACE),
    );
    page.labels(meta.labels.as_ref());
    page.annotations(meta.annotations.as_ref());
    if let Value::Object(fields) = content {
        page.map(0, fields, false, "");
    }
    page.events(events, now);
    page.render()
}

/// Rows of a `describe` page, each a list of cells to be laid out by [`tabwrite`].
#[derive(Default)]
struct Page {
    rows: Vec<Vec<String>>,
}

impl Page {
    /// `Label:  value`.
    fn field(&mut self, level: usize, label: &str, value: &str) {
        self.rows.push(vec![
            format!("{}{label}:", indent(level)),
            value.to_string(),
        ]);
    }

    /// `Label:` with what belongs to it on the following lines.
    fn heading(&mut self, level: usize, label: &str) {
        self.rows.push(vec![format!("{}{label}:", indent(level))]);
    }

    /// A line outside the key/value columns.
    fn text(&mut self, level: usize, text: &str) {
        self.rows.push(vec![format!("{}{text}", indent(level))]);
    }

    /// `Labels:` one `key=value` a line, sorted, or `<none>`.
    fn labels(&mut self, labels: Option<&BTreeMap<String, String>>) {
        let labels = labels.filter(|labels| !labels.is_empty());
        let Some(labels) = labels else {
            self.field(0, "Labels", "<none>");
            return;
        };
        for (index, (key, value)) in labels.iter().enumerate() {
            let cell = format!("{key}={value}");
            if index == 0 {
                self.field(0, "Labels", &cell);
            } else {
                self.rows.push(vec![String::new(), cell]);
            }
        }
    }

    /// `Annotations:` one `key: value` a line, sorted, long or multi-line values below their key.
    fn annotations(&mut self, annotations: Option<&BTreeMap<String, String>>) {
        let annotations = annotations.filter(|annotations| !annotations.is_empty());
        let Some(annotations) = annotations else {
            self.field(0, "Annotations", "<none>");
            return;
        };
        let mut first = true;
        let mut push = |rows: &mut Vec<Vec<String>>, cell: String| {
            let title = if first { "Annotations:" } else { "" };
            first = false;
            rows.push(vec![title.to_string(), cell]);
        };
        for (key, value) in annotations {
            let value = value.strip_suffix('\n').unwrap_or(value);
            let long = value.chars().count() + key.chars().count() + 2 > MAX_ANNOTATION_LEN;
            if long || value.contains('\n') {
                push(&mut self.rows, format!("{key}:"));
                for line in value.split('\n') {
                    push(
                        &mut self.rows,
                        format!("  {}", shorten(line, MAX_ANNOTATION_LEN - 2)),
                    );
                }
            } else {
                push(&mut self.rows, format!("{key}: {value}"));
            }
        }
    }

    /// The fields of a JSON object, keys sorted as kubectl sorts them; `verbatim` keeps the keys
    /// as they are (they are names, not field names). `path` is the object's `.a.b` path.
    fn map(&mut self, level: usize, fields: &Map<String, Value>, verbatim: bool, path: &str) {
        let mut keys: Vec<&String> = fields.keys().collect();
        keys.sort();
        for key in keys {
            let child_path = format!("{path}.{key}");
            if DESCRIBE_SKIPPED.contains(&child_path.as_str()) {
                continue;
            }
            let Some(value) = fields.get(key) else {
                continue;
            };
            let label = if verbatim {
                key.clone()
            } else {
                smart_label(key)
            };
            let name_keyed = NAME_KEYED_FIELDS.contains(&key.as_str());
            self.entry(level, &label, value, name_keyed, &child_path);
        }
    }

    /// One field: a scalar beside its label, anything else below it.
    fn entry(&mut self, level: usize, label: &str, value: &Value, name_keyed: bool, path: &str) {
        match value {
            Value::Null => {}
            Value::Object(fields) => {
                self.heading(level, label);
                self.map(level + 1, fields, name_keyed, path);
            }
            Value::Array(items) => {
                self.heading(level, label);
                self.list(level + 1, items, path);
            }
            Value::String(text) if text.trim_end().contains('\n') => {
                self.heading(level, label);
                for line in text.trim_end().lines() {
                    self.text(level + 1, line);
                }
            }
            scalar => self.field(level, label, &scalar_text(scalar)),
        }
    }

    /// The items of a JSON array, each marked with a leading `- `.
    fn list(&mut self, level: usize, items: &[Value], path: &str) {
        for item in items {
            match item {
                Value::Null => self.text(level, "- <nil>"),
                Value::Object(fields) => {
                    let first = self.rows.len();
                    self.map(level + 1, fields, false, path);
                    let inner = indent(level + 1);
                    match self.rows.get_mut(first).and_then(|row| row.first_mut()) {
                        Some(cell) => {
                            if let Some(rest) = cell.strip_prefix(inner.as_str()) {
                                *cell = format!("{}- {rest}", indent(level));
                            }
                        }
                        None => self.text(level, "- {}"),
                    }
                }
                Value::Array(inner) => {
                    self.text(level, "-");
                    self.list(level + 1, inner, path);
                }
                Value::String(text) if text.trim_end().contains('\n') => {
                    let mut lines = text.trim_end().lines();
                    self.text(level, &format!("- {}", lines.next().unwrap_or_default()));
                    for line in lines {
                        self.text(level + 1, line);
                    }
                }
                scalar => self.text(level, &format!("- {}", scalar_text(scalar))),
            }
        }
    }

    /// `Events:` as kubectl's events table, oldest last seen first, or `<none>`.
    fn events(&mut self, events: &[EventView], now: Timestamp) {
        if events.is_empty() {
            self.field(0, "Events", "<none>");
            return;
        }
        self.heading(0, "Events");
        let header = ["Type", "Reason", "Age", "From", "Message"];
        let underline = ["----", "------", "----", "----", "-------"];
        for cells in [header, underline] {
            let mut row: Vec<String> = cells.iter().map(|cell| cell.to_string()).collect();
            row[0] = format!("{}{}", indent(1), row[0]);
            self.rows.push(row);
        }
        let mut sorted: Vec<&EventView> = events.iter().collect();
        sorted.sort_by_key(|event| event.last_timestamp.parse::<Timestamp>().ok());
        for event in sorted {
            let first_seen = if event.first_timestamp.is_empty() {
                &event.last_timestamp
            } else {
                &event.first_timestamp
            };
            let interval = if event.count > 1 {
                format!(
                    "{} (x{} over {})",
                    age(&event.last_timestamp, now),
                    event.count,
                    age(first_seen, now)
                )
            } else {
                age(first_seen, now)
            };
            let message = event
                .message
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            self.rows.push(vec![
                format!("{}{}", indent(1), event.event_type),
                event.reason.clone(),
                interval,
                event.source.clone(),
                message,
            ]);
        }
    }

    /// The page as text.
    fn render(&self) -> String {
        tabwrite(&self.rows, 0, DESCRIBE_PADDING)
    }
}

/// Leading spaces of a nesting level.
fn indent(level: usize) -> String {
    INDENT.repeat(level)
}

/// A scalar as kubectl prints it (`%v`).
fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "<nil>".to_string(),
        other => other.to_string(),
    }
}

/// `text` cut to `max` characters, with `...` when cut.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() > max {
        format!("{}...", text.chars().take(max).collect::<String>())
    } else {
        text.to_string()
    }
}

/// A field name as a label, as kubectl's describer writes it: `serveDeploymentStatuses` ->
/// `Serve Deployment Statuses`, `apiVersion` -> `API Version`, `desiredCPU` -> `Desired CPU`,
/// `serveConfigV2` -> `Serve Config V2`. A key with anything but ASCII letters and digits (a
/// label key, `dashboard-host`, `fruit_app`) is left as it is.
fn smart_label(field: &str) -> String {
    let plain = field.chars().all(|c| c.is_ascii_alphanumeric());
    if field.is_empty() || !plain || field.starts_with(|c: char| c.is_ascii_digit()) {
        return field.to_string();
    }
    camel_case_words(field)
        .iter()
        .map(|word| {
            let upper = word.to_ascii_uppercase();
            if ACRONYMS.contains(&upper.as_str()) {
                upper
            } else {
                let mut chars = word.chars();
                chars.next().map_or_else(String::new, |first| {
                    first.to_ascii_uppercase().to_string() + chars.as_str()
                })
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Words of a camelCase name, split as kubectl's `camelcase.Split` splits them (runs of lower
/// case, upper case and digits; `PDFLoader` -> `PDF`, `Loader`), except that digits stay with
/// the word before them (`V2`, not `V`, `2`).
fn camel_case_words(name: &str) -> Vec<String> {
    #[derive(PartialEq, Clone, Copy)]
    enum Class {
        Lower,
        Upper,
        Digit,
    }
    let class = |c: char| {
        if c.is_ascii_uppercase() {
            Class::Upper
        } else if c.is_ascii_digit() {
            Class::Digit
        } else {
            Class::Lower
        }
    };
    let mut runs: Vec<(Class, Vec<char>)> = Vec::new();
    for c in name.chars() {
        match runs.last_mut() {
            Some((last, run)) if *last == class(c) => run.push(c),
            _ => runs.push((class(c), vec![c])),
        }
    }
    // An upper-case run followed by lower case gives its last letter to the next word.
    for index in 1..runs.len() {
        if runs[index - 1].0 == Class::Upper
            && runs[index].0 == Class::Lower
            && let Some(moved) = runs[index - 1].1.pop()
        {
            runs[index].1.insert(0, moved);
        }
    }
    let mut words: Vec<String> = Vec::new();
    for (class, run) in runs.into_iter().filter(|(_, run)| !run.is_empty()) {
        let run: String = run.into_iter().collect();
        match words.last_mut() {
            Some(previous) if class == Class::Digit => previous.push_str(&run),
            _ => words.push(run),
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(text: &str) -> Timestamp {
        text.parse().expect("test timestamp")
    }

    fn after(start: &str, seconds: i64) -> Timestamp {
        ts(start)
            .checked_add(SignedDuration::from_secs(seconds))
            .expect("in range")
    }

    const CREATED: &str = "2023-07-11T22:18:42Z";

    fn age_after(seconds: i64) -> String {
        age(CREATED, after(CREATED, seconds))
    }

    #[test]
    fn age_follows_kubectl_human_duration() {
        let minute = 60;
        let hour = 60 * minute;
        let day = 24 * hour;
        let year = 365 * day;
        let cases = [
            (-5, "<invalid>"),
            (-2, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (45, "45s"),
            (119, "119s"),
            (2 * minute, "2m"),
            (2 * minute + 42, "2m42s"),
            (2 * minute + 27, "2m27s"),
            (9 * minute + 59, "9m59s"),
            (10 * minute + 30, "10m"),
            (142 * minute, "142m"),
            (3 * hour - 1, "179m"),
            (3 * hour, "3h"),
            (5 * hour + 3 * minute, "5h3m"),
            (8 * hour + 30 * minute, "8h"),
            (47 * hour + 59 * minute, "47h"),
            (2 * day, "2d"),
            (3 * day + 4 * hour, "3d4h"),
            (8 * day + 5 * hour, "8d"),
            (400 * day, "400d"),
            (2 * year, "2y"),
            (3 * year + 10 * day, "3y10d"),
            (8 * year + 100 * day, "8y"),
        ];
        for (seconds, expected) in cases {
            assert_eq!(age_after(seconds), expected, "{seconds}s");
        }
    }

    #[test]
    fn age_of_garbage_is_unknown() {
        assert_eq!(age("", ts(CREATED)), "<unknown>");
        assert_eq!(age("yesterday", ts(CREATED)), "<unknown>");
    }

    #[test]
    fn sub_second_skew_is_not_invalid() {
        let now = ts("2023-07-11T22:18:41.5Z");
        assert_eq!(age(CREATED, now), "0s");
    }

    #[test]
    fn smart_labels_match_kubectl() {
        let cases = [
            ("serveDeploymentStatuses", "Serve Deployment Statuses"),
            ("healthLastUpdateTime", "Health Last Update Time"),
            ("numServeEndpoints", "Num Serve Endpoints"),
            ("rayVersion", "Ray Version"),
            ("serveConfigV2", "Serve Config V2"),
            ("apiVersion", "API Version"),
            ("uid", "UID"),
            ("desiredCPU", "Desired CPU"),
            ("podIP", "Pod IP"),
            ("PDFLoader", "PDF Loader"),
            ("kind", "Kind"),
            ("fruit_app", "fruit_app"),
            ("dashboard-host", "dashboard-host"),
            ("ray.io/cluster", "ray.io/cluster"),
        ];
        for (field, label) in cases {
            assert_eq!(smart_label(field), label, "{field}");
        }
    }

    #[test]
    fn tabwriter_pads_columns_like_kubectl() {
        let rows = vec![
            vec!["NAME".to_string(), "X".to_string(), "AGE".to_string()],
            vec!["a-long-name".to_string(), String::new(), "1s".to_string()],
        ];
        assert_eq!(
            tabwrite(&rows, TABLE_MIN_WIDTH, TABLE_PADDING),
            "NAME          X     AGE\na-long-name         1s\n"
        );
    }

    fn sample_service() -> RayService {
        serde_json::from_value(json!({
            "apiVersion": "ray.io/v1",
            "kind": "RayService",
            "metadata": {
                "name": "rayservice-sample",
                "namespace": "default",
                "creationTimestamp": CREATED,
                "generation": 2,
                "uid": "5c2d4b8e-7f1a-4c1e-9d0a-3b7e2f6a9c11"
            },
            "spec": {
                "serveConfigV2": "applications:\n  - name: fruit_app\n    import_path: fruit.deployment_graph\n    route_prefix: /fruit\n",
                "deploymentUnhealthySecondThreshold": 300,
                "rayClusterConfig": {
                    "rayVersion": "2.52.0",
                    "headGroupSpec": {
                        "rayStartParams": {"dashboard-host": "0.0.0.0"},
                        "template": {"spec": {"containers": [{
                            "name": "ray-head",
                            "image": "rayproject/ray:2.52.0",
                            "resources": {"limits": {"cpu": "2", "memory": "5Gi"}}
                        }]}}
                    },
                    "workerGroupSpecs": [{
                        "groupName": "small-group",
                        "replicas": 2,
                        "minReplicas": 1,
                        "maxReplicas": 5,
                        "rayStartParams": {},
                        "template": {"spec": {"containers": [{
                            "name": "ray-worker",
                            "image": "rayproject/ray:2.52.0"
                        }]}}
                    }]
                }
            },
            "status": {
                "activeServiceStatus": {
                    "rayClusterName": "rayservice-sample-raycluster-6mj28",
                    "rayClusterStatus": {
                        "state": "ready",
                        "desiredWorkerReplicas": 1,
                        "availableWorkerReplicas": 1,
                        "readyWorkerReplicas": 1
                    },
                    "applicationStatuses": {
                        "fruit_app": {
                            "status": "RUNNING",
                            "healthLastUpdateTime": "2023-07-11T22:21:24Z",
                            "lastUpdateTime": "2023-07-11T22:21:24Z",
                            "serveDeploymentStatuses": {
                                "MangoStand": {
                                    "status": "HEALTHY",
                                    "healthLastUpdateTime": "2023-07-11T22:21:24Z",
                                    "lastUpdateTime": "2023-07-11T22:21:24Z"
                                },
                                "FruitMarket": {
                                    "status": "UPDATING",
                                    "message": "Waiting for 1 replica",
                                    "healthLastUpdateTime": "2023-07-11T22:21:24Z",
                                    "lastUpdateTime": "2023-07-11T22:21:24Z"
                                }
                            }
                        }
                    }
                },
                "pendingServiceStatus": {},
                "conditions": [{
                    "type": "Ready",
                    "status": "True",
                    "reason": "NonZeroServeEndpoints",
                    "message": "",
                    "lastTransitionTime": "2023-07-11T22:21:24Z"
                }],
                "serviceStatus": "Running",
                "numServeEndpoints": 2,
                "observedGeneration": 2
            }
        }))
        .expect("sample RayService")
    }

    fn sample_cluster(name: &str, created: &str, workers: i32) -> RayCluster {
        let cluster = serde_json::from_value(json!({
            "apiVersion": "ray.io/v1",
            "kind": "RayCluster",
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
            "spec": {
                "rayVersion": "2.52.0",
                "headGroupSpec": {"rayStartParams": {}, "template": {"spec": {"containers": [{
                    "name": "ray-head", "image": "rayproject/ray:2.52.0"
                }]}}},
                "workerGroupSpecs": [{
                    "groupName": "small-group",
                    "replicas": workers,
                    "rayStartParams": {},
                    "template": {"spec": {"containers": [{
                        "name": "ray-worker",
                        "image": "rayproject/ray:2.52.0",
                        "resources": {"limits": {"cpu": "1", "nvidia.com/gpu": "1"}}
                    }]}}
                }]
            },
            "status": {
                "state": "ready",
                "desiredWorkerReplicas": workers,
                "availableWorkerReplicas": workers,
                "readyWorkerReplicas": workers,
                "desiredMemory": "6Gi"
            }
        }));
        let mut cluster: RayCluster = cluster.expect("sample RayCluster");
        // Set in Rust: these fields' JSON spelling is the api crate's business.
        if let Some(status) = cluster.status.as_mut() {
            status.desired_cpu = Some("3".to_string());
            status.desired_gpu = Some("2".to_string());
            status.head = Some(rayservice_api::HeadInfo {
                pod_ip: Some("127.0.0.1".to_string()),
                service_ip: Some("127.0.0.1".to_string()),
                pod_name: None,
                service_name: None,
            });
        }
        cluster
    }

    #[test]
    fn rayservice_table_shows_printer_columns() {
        let now = after(CREATED, 2 * 60 + 42);
        let text = rayservice_table(&[sample_service()], false, now);
        assert_eq!(
            text,
            "NAME                SERVICE STATUS   NUM SERVE ENDPOINTS   AGE\n\
             rayservice-sample   Running          2                     2m42s\n"
        );
    }

    #[test]
    fn rayservice_table_wide_and_without_status() {
        let mut fresh = sample_service();
        fresh.metadata.name = Some("fresh".to_string());
        fresh.status = None;
        let now = after(CREATED, 2 * 60 + 42);
        let text = rayservice_table(&[sample_service(), fresh], true, now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "NAME                SERVICE STATUS   NUM SERVE ENDPOINTS   AGE     \
             ACTIVE CLUSTER                       PENDING CLUSTER   READY"
        );
        assert_eq!(
            lines[1],
            "rayservice-sample   Running          2                     2m42s   \
             rayservice-sample-raycluster-6mj28                     True (NonZeroServeEndpoints)"
        );
        assert_eq!(
            lines[2],
            format!("{:<20}{:<17}{:<22}2m42s", "fresh", "", "")
        );
    }

    #[test]
    fn empty_tables_are_empty() {
        let now = ts(CREATED);
        assert_eq!(rayservice_table(&[], false, now), "");
        assert_eq!(raycluster_table(&[], true, now), "");
        assert_eq!(pods_table(&[], false, now), "");
        assert_eq!(services_table(&[], now), "");
    }

    #[test]
    fn raycluster_table_matches_the_guide() {
        let old_created = "2023-07-11T20:00:00Z";
        let now = after(old_created, 142 * 60);
        let new_created = now
            .checked_sub(SignedDuration::from_secs(44))
            .expect("in range")
            .to_string();
        let clusters = [
            sample_cluster("rayservice-sample-raycluster-6mj28", old_created, 1),
            sample_cluster("rayservice-sample-raycluster-sjj67", &new_created, 2),
        ];
        assert_eq!(
            raycluster_table(&clusters, false, now),
            "NAME                                 DESIRED WORKERS   AVAILABLE WORKERS   STATUS   AGE\n\
             rayservice-sample-raycluster-6mj28   1                 1                   ready    142m\n\
             rayservice-sample-raycluster-sjj67   2                 2                   ready    44s\n"
        );
        let wide = raycluster_table(&clusters, true, now);
        let lines: Vec<&str> = wide.lines().collect();
        assert_eq!(
            lines[0],
            "NAME                                 DESIRED WORKERS   AVAILABLE WORKERS   CPUS   \
             MEMORY   GPUS   STATUS   AGE    HEAD POD IP   HEAD SERVICE IP"
        );
        assert_eq!(
            lines[2],
            "rayservice-sample-raycluster-sjj67   2                 2                   3      \
             6Gi      2      ready    44s    127.0.0.1     127.0.0.1"
        );
    }

    fn pod(name: &str, node_type: &str, pid: Option<i32>) -> PodView {
        PodView {
            name: name.to_string(),
            cluster: "rayservice-sample-raycluster-6mj28".to_string(),
            service: "rayservice-sample".to_string(),
            node_type: node_type.to_string(),
            group: "small-group".to_string(),
            phase: "Running".to_string(),
            ready: "1/1".to_string(),
            restarts: 0,
            pid,
            started_at: CREATED.to_string(),
            log_path: format!("/tmp/{name}.log"),
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn pods_table_matches_the_guide() {
        let now = after(CREATED, 3 * 60 + 52);
        let pods = [
            pod(
                "rayservice-sample-raycluster-6mj28-worker-small-group-kg4v5",
                "worker",
                Some(4242),
            ),
            pod(
                "rayservice-sample-raycluster-6mj28-head-x77h4",
                "head",
                None,
            ),
        ];
        assert_eq!(
            pods_table(&pods, false, now),
            "NAME                                                          READY   STATUS    RESTARTS   AGE\n\
             rayservice-sample-raycluster-6mj28-worker-small-group-kg4v5   1/1     Running   0          3m52s\n\
             rayservice-sample-raycluster-6mj28-head-x77h4                 1/1     Running   0          3m52s\n"
        );
        let wide = pods_table(&pods, true, now);
        let lines: Vec<&str> = wide.lines().collect();
        assert!(
            lines[0].ends_with("AGE     PID      NODE TYPE   LOG"),
            "{wide}"
        );
        assert!(
            lines[2].ends_with(
                "3m52s   <none>   head        /tmp/rayservice-sample-raycluster-6mj28-head-x77h4.log"
            ),
            "{wide}"
        );
    }

    #[test]
    fn services_table_matches_the_guide() {
        let now = after(CREATED, 4 * 60 + 58);
        let services = [
            ServiceView {
                name: "rayservice-sample-head-svc".to_string(),
                service_type: "ClusterIP".to_string(),
                cluster_ip: "127.0.0.1".to_string(),
                ports: vec!["10001/TCP".to_string(), "8265/TCP".to_string()],
                target_cluster: Some("rayservice-sample-raycluster-6mj28".to_string()),
                created_at: CREATED.to_string(),
            },
            ServiceView {
                name: "rayservice-sample-serve-svc".to_string(),
                service_type: "ClusterIP".to_string(),
                cluster_ip: "127.0.0.1".to_string(),
                ports: vec!["8000/TCP".to_string()],
                target_cluster: None,
                created_at: CREATED.to_string(),
            },
        ];
        assert_eq!(
            services_table(&services, now),
            "NAME                          TYPE        CLUSTER-IP   EXTERNAL-IP   PORT(S)              AGE\n\
             rayservice-sample-head-svc    ClusterIP   127.0.0.1    <none>        10001/TCP,8265/TCP   4m58s\n\
             rayservice-sample-serve-svc   ClusterIP   127.0.0.1    <none>        8000/TCP             4m58s\n"
        );
    }

    fn event(reason: &str, count: i64, first: i64, last: i64, now: Timestamp) -> EventView {
        let at = |seconds_ago: i64| {
            now.checked_sub(SignedDuration::from_secs(seconds_ago))
                .expect("in range")
                .to_string()
        };
        EventView {
            event_type: "Normal".to_string(),
            reason: reason.to_string(),
            message: format!("{reason} happened\n"),
            count,
            first_timestamp: at(first),
            last_timestamp: at(last),
            source: "rayservice-controller".to_string(),
        }
    }

    #[test]
    fn describe_rayservice_renders_like_kubectl() {
        let now = after(CREATED, 10 * 60);
        let events = [
            event("SubmittedServeConfig", 3, 5 * 60, 2 * 60, now),
            event("CreatedRayCluster", 1, 9 * 60, 9 * 60, now),
        ];
        let text = describe_rayservice(&sample_service(), &events, now);
        let expected_head = "\
Name:         rayservice-sample
Namespace:    default
Labels:       <none>
Annotations:  <none>
API Version:  ray.io/v1
Kind:         RayService
Metadata:
  Creation Timestamp:  2023-07-11T22:18:42Z
  Generation:          2
  UID:                 5c2d4b8e-7f1a-4c1e-9d0a-3b7e2f6a9c11
Spec:
  Deployment Unhealthy Second Threshold:  300
  Ray Cluster Config:
    Head Group Spec:
      Ray Start Params:
        dashboard-host:  0.0.0.0
      Template:
        Spec:
          Containers:
            - Image:  rayproject/ray:2.52.0
              Name:   ray-head
              Resources:
                Limits:
                  cpu:     2
                  memory:  5Gi
    Ray Version:           2.52.0
    Worker Group Specs:
      - Group Name:    small-group
        Max Replicas:  5
        Min Replicas:  1
        Ray Start Params:
        Replicas:  2
        Template:
";
        assert!(text.starts_with(expected_head), "{text}");
        let serve_config = "
  Serve Config V2:
    applications:
      - name: fruit_app
        import_path: fruit.deployment_graph
        route_prefix: /fruit
Status:
  Active Service Status:
    Application Statuses:
      fruit_app:
        Health Last Update Time:  2023-07-11T22:21:24Z
        Last Update Time:         2023-07-11T22:21:24Z
        Serve Deployment Statuses:
          FruitMarket:
            Health Last Update Time:  2023-07-11T22:21:24Z
            Last Update Time:         2023-07-11T22:21:24Z
            Message:                  Waiting for 1 replica
            Status:                   UPDATING
          MangoStand:
            Health Last Update Time:  2023-07-11T22:21:24Z
            Last Update Time:         2023-07-11T22:21:24Z
            Status:                   HEALTHY
        Status:                       RUNNING
    Ray Cluster Name:                 rayservice-sample-raycluster-6mj28
    Ray Cluster Status:
      Available Worker Replicas:  1
      Desired Worker Replicas:    1
      Ready Worker Replicas:      1
      State:                      ready
  Conditions:
    - Last Transition Time:  2023-07-11T22:21:24Z
      Message:
      Reason:                NonZeroServeEndpoints
      Status:                True
      Type:                  Ready
  Num Serve Endpoints:       2
  Observed Generation:       2
  Pending Service Status:
  Service Status:  Running
Events:
  Type    Reason                Age              From                   Message
  ----    ------                ----             ----                   -------
  Normal  CreatedRayCluster     9m               rayservice-controller  CreatedRayCluster happened
  Normal  SubmittedServeConfig  2m (x3 over 5m)  rayservice-controller  SubmittedServeConfig happened
";
        assert!(text.ends_with(serve_config), "{text}");
    }

    #[test]
    fn describe_shows_labels_annotations_and_no_events() {
        let mut service = sample_service();
        service.metadata.labels = Some(BTreeMap::from([
            ("team".to_string(), "fruit".to_string()),
            ("app".to_string(), "shop".to_string()),
        ]));
        service.metadata.annotations = Some(BTreeMap::from([
            ("note".to_string(), "short".to_string()),
            ("long".to_string(), "x".repeat(200)),
        ]));
        let text = describe_rayservice(&service, &[], ts(CREATED));
        let expected = format!(
            "Name:         rayservice-sample\n\
             Namespace:    default\n\
             Labels:       app=shop\n\
             \x20             team=fruit\n\
             Annotations:  long:\n\
             \x20               {}...\n\
             \x20             note: short\n\
             API Version:  ray.io/v1\n",
            "x".repeat(138)
        );
        assert!(text.starts_with(&expected), "{text}");
        // Go's tabwriter aligns `Events:` with the status lines right above it, as kubectl does.
        assert!(
            text.ends_with("\n  Service Status:  Running\nEvents:            <none>\n"),
            "{text}"
        );
    }

    #[test]
    fn describe_raycluster_shows_spec_and_status() {
        let cluster = sample_cluster("rayservice-sample-raycluster-6mj28", CREATED, 1);
        let text = describe_raycluster(&cluster, &[], ts(CREATED));
        assert!(text.contains("\nKind:         RayCluster\n"), "{text}");
        assert!(text.contains("\n  Worker Group Specs:\n    - Group Name:  small-group\n      Ray Start Params:\n      Replicas:  1\n"), "{text}");
        assert!(
            text.contains("\n                  nvidia.com/gpu:  1\n"),
            "{text}"
        );
        assert!(
            text.contains("\n  Available Worker Replicas:  1\n"),
            "{text}"
        );
        assert!(text.contains("\n  Head:\n    Pod I"), "{text}");
        assert!(text.contains("  127.0.0.1\n"), "{text}");
    }
}
